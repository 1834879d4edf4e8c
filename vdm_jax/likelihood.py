"""The continuous-time variational bound of Kingma et al. 2021 (VDM), in nats and bits per dimension.

For data x with D dimensions and a schedule lambda(t) from lambda_0 = lambda(0) down to
lambda_1 = lambda(1) (alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda)):

    -log p(x) <= L(x) = L_prior + L_diffusion + L_reconstruction,

    L_prior          = KL(q(z_1 | x) || N(0, I))
                     = 1/2 sum_i (alpha_1^2 x_i^2 + sigma_1^2 - 1 - log sigma_1^2)          (VDM eq. 10),
    L_diffusion      = -1/2 E_{t ~ U[0, 1], eps} [dlambda/dt exp(lambda) ||x - x_hat(z_t, lambda)||^2]
                                                                                     (VDM eq. 17),
    L_reconstruction = -E_{z_0 ~ q(z_0 | x)} log p(x | z_0).

The decoder p(x | z_0) is VDM's, per element:
  - discrete (8-bit data, x_k = 2k / 255 - 1, k = 0..255): a categorical over the 256 values with
    logits -1/2 (z_0 / alpha_0 - x_k)^2 / (sigma_0 / alpha_0)^2 (VDM, appendix: the exact
    posterior of a uniform prior over the values, factorised over elements);
  - continuous (for tests against densities): N(x; z_0 / alpha_0, sigma_0^2 / alpha_0^2).

Bits per dimension: L / (D log 2). L_diffusion is estimated by Monte Carlo: per example, num_t
times t_j = mod(u + j / num_t, 1) (antithetic / stratified, u ~ U[0, 1)) with fresh noise each;
the others use one z_0 sample (the decoder term) or are closed form (the prior).

Which schedule the t samples go through does not change L: with a network that sees lambda (not
t), L_diffusion = 1/2 int_{lambda_1}^{lambda_0} exp(lambda) E||x - x_hat(z_lambda, lambda)||^2 dlambda
by a change of variables (VDM, sec. 5: the bound depends on the schedule only through its
endpoints). By default (`uniform_logsnr`) lambda is sampled uniformly between the endpoints of
`logsnr_fn`: for a network whose eps error stays O(1) at high log-SNR the integrand is then
nearly flat, where the cosine schedule's dlambda/dt puts huge weights on rare samples near t = 0.

Under a noise prior correlated across frames (noise_prior.py: q(z_t | x) = N(alpha_t x, sigma_t^2
Sigma), p(z_1) = N(0, Sigma)) every KL above is taken in the whitened coordinates x' = L^{-1} x,
z' = L^{-1} z (KL divergences do not change under an invertible linear map of both arguments), where
the noise is i.i.d. again: the prior and diffusion terms are those of x' with the network read
through L (its eps, x and v targets are linear in x and eps, so L^{-1} maps them to x''s), and
the decoder term is: discrete, the factorised categorical on the real z_0 = alpha_0 x + sigma_0 L eps
(still a bound; at lambda_0 = 20, sigma_0 / alpha_0 ~ 5e-5 against a grid spacing of 2 / 255, both it
and the exact posterior are point masses); gaussian, N(x; z_0 / alpha_0, (sigma_0 / alpha_0)^2 Sigma),
the exact posterior as lambda_0 -> inf, i.e. the whitened decoder plus 1/2 log det Sigma per pixel.

Pure functions; the network is a callable `model_fn(z [B, ...], logsnr [B]) -> out [B, ...]` read
through `parameterization` (diffusion.predict_x_eps).
"""

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax import diffusion
from vdm_jax.noise_prior import INDEPENDENT, NoisePrior
from vdm_jax.schedules import alpha_sigma

DECODERS = ('discrete', 'gaussian')
NUM_PIXEL_VALUES = 256


def _sum_per_example(a: jax.Array) -> jax.Array:
  return jnp.sum(a, axis=tuple(range(1, a.ndim)))


def prior_kl(x: jax.Array, *, logsnr_1: jax.Array) -> jax.Array:
  """KL(N(alpha_1 x, sigma_1^2 I) || N(0, I)) = 1/2 sum_i (alpha_1^2 x_i^2 + sigma_1^2 - 1 - log sigma_1^2).

  x: [B, ...]; logsnr_1: scalar. Returns nats [B]. log sigma_1^2 = log_sigmoid(-lambda_1) and
  sigma_1^2 - 1 = -alpha_1^2 keep it exact when the KL is tiny (lambda_1 << 0).
  """
  alpha2 = jax.nn.sigmoid(logsnr_1)
  per_element = 0.5 * (alpha2 * jnp.square(x) - alpha2 - jax.nn.log_sigmoid(-logsnr_1))
  return _sum_per_example(per_element)


def diffusion_term(
    model_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    *,
    rng: jax.Array,
    logsnr_fn: Callable[[jax.Array], jax.Array],
    parameterization: str,
    num_t: int,
) -> jax.Array:
  """L_diffusion (VDM eq. 17) of each example, in nats [B]: the mean over num_t antithetic
  times t_j = mod(u + j / num_t, 1) of D * diffusion.vlb_diffusion_term (one noise draw each).
  The num_t network passes run in a lax.scan (one compiled network call)."""
  x = jnp.asarray(x)
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  B = x.shape[0]
  D = math.prod(x.shape[1:])
  rng_u, rng_noise = jax.random.split(rng)
  u = jax.random.uniform(rng_u, (B,), dtype=dtype)

  def one_time(total, j):
    t = jnp.mod(u + j.astype(dtype) / num_t, 1.0)
    noise = jax.random.normal(jax.random.fold_in(rng_noise, j), x.shape, dtype)
    terms = diffusion.denoising_terms(model_fn, x, t=t, noise=noise, logsnr_fn=logsnr_fn,
                                      parameterization=parameterization)
    return total + D * diffusion.vlb_diffusion_term(
        mse_x=terms['mse_x'], logsnr=terms['logsnr'], dlogsnr_dt=terms['dlogsnr_dt']), None

  total, _ = jax.lax.scan(one_time, jnp.zeros((B,), dtype), jnp.arange(num_t))
  return total / num_t


def pixel_values(dtype=jnp.float32) -> jax.Array:
  """x_k = 2k / 255 - 1, k = 0..255: the data values of 8-bit pixels (as the input pipeline scales them)."""
  return (2.0 * jnp.arange(NUM_PIXEL_VALUES, dtype=dtype) - 255.0) / 255.0


def reconstruction_discrete(x: jax.Array, *, logsnr_0: jax.Array, noise: jax.Array) -> jax.Array:
  """-log p(x | z_0), z_0 = alpha_0 x + sigma_0 noise, with VDM's categorical decoder over the 256
  pixel values: p(x_i = x_k | z_0) = softmax_k(-1/2 (z_0,i / alpha_0 - x_k)^2 alpha_0^2 / sigma_0^2).

  x: [B, ...] with values on the grid pixel_values(); noise like x; logsnr_0: scalar. Returns nats
  [B]. The 256 logits of one example at a time (lax.map), to bound memory.
  """
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  values = pixel_values(dtype)
  alpha_0, sigma_0 = alpha_sigma(jnp.asarray(logsnr_0, dtype))
  inv_scale = jnp.exp(0.5 * jnp.asarray(logsnr_0, dtype))  # alpha_0 / sigma_0
  index = jnp.clip(jnp.round((x + 1.0) * 127.5), 0, NUM_PIXEL_VALUES - 1).astype(jnp.int32)

  def one_example(args):
    x_b, noise_b, index_b = args
    z_rescaled = x_b + (sigma_0 / alpha_0) * noise_b  # z_0 / alpha_0
    logits = -0.5 * jnp.square((z_rescaled[..., None] - values) * inv_scale)  # [..., 256]
    log_probs = jnp.take_along_axis(logits, index_b[..., None], axis=-1)[..., 0]
    return -jnp.sum(log_probs - jax.nn.logsumexp(logits, axis=-1))

  return jax.lax.map(one_example, (x.astype(dtype), noise.astype(dtype), index))


def reconstruction_gaussian(x: jax.Array, *, logsnr_0: jax.Array, noise: jax.Array) -> jax.Array:
  """-log N(x; z_0 / alpha_0, (sigma_0 / alpha_0)^2 I), z_0 = alpha_0 x + sigma_0 noise: the
  continuous-data decoder. Equals 1/2 sum_i (log(2 pi) - lambda_0 + noise_i^2), since
  x - z_0 / alpha_0 = -(sigma_0 / alpha_0) noise. Returns nats [B]."""
  return _sum_per_example(0.5 * (math.log(2.0 * math.pi) - logsnr_0 + jnp.square(noise)))


def endpoint_terms(x: jax.Array, *, logsnr_0: jax.Array, logsnr_1: jax.Array, noise: jax.Array,
                   decoder: str = 'discrete', frame_weights: jax.Array | None = None) -> jax.Array:
  """(L_prior + L_reconstruction) / D of each example, nats per dimension [B]: the terms of the VLB
  that depend on the schedule through lambda_0 = lambda(0) and lambda_1 = lambda(1) alone (prior_kl,
  and the decoder's reconstruction term with z_0 = alpha_0 x + sigma_0 noise). Added to the
  diffusion term (per dimension, as the 'vlb' training loss) they give the VLB whose gradient
  trains learned endpoints (diffusion.grads_with_learned_schedule).

  x, noise: [B, ...]; logsnr_0, logsnr_1: scalars. frame_weights: None, or [B, T] for videos
  x [B, T, ...]: per example sum_t w_t (terms of frame t) / (sum_t w_t * elements per frame), the
  weighting diffusion.denoising_terms gives the diffusion term.
  """
  if decoder not in DECODERS:
    raise ValueError(f'Unknown decoder {decoder!r}; allowed values: {DECODERS}.')
  x = jnp.asarray(x)
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  x, noise = x.astype(dtype), jnp.asarray(noise, dtype)
  reconstruction = {'discrete': reconstruction_discrete,
                    'gaussian': reconstruction_gaussian}[decoder]
  terms = lambda x, noise: (prior_kl(x, logsnr_1=logsnr_1)
                            + reconstruction(x, logsnr_0=logsnr_0, noise=noise))
  if frame_weights is None:
    return terms(x, noise) / math.prod(x.shape[1:])
  B, T = x.shape[:2]
  w = jnp.asarray(frame_weights, dtype)
  assert w.shape == (B, T), (w.shape, x.shape)
  frames = lambda a: jnp.reshape(a, (B * T,) + a.shape[2:])
  per_frame = jnp.reshape(terms(frames(x), frames(noise)), (B, T))
  return (jnp.sum(w * per_frame, 1)
          / (jnp.maximum(jnp.sum(w, 1), 1e-12) * math.prod(x.shape[2:])))


def _reconstruction_under(noise_prior: NoisePrior, decoder: str, x: jax.Array, *,
                          logsnr_0: jax.Array, white_noise: jax.Array) -> jax.Array:
  """The decoder term (nats [B]) with z_0 = alpha_0 x + sigma_0 L white_noise (module docstring)."""
  if decoder == 'discrete':
    return reconstruction_discrete(x, logsnr_0=logsnr_0, noise=noise_prior.color(white_noise))
  # N(x; z_0 / alpha_0, (sigma_0 / alpha_0)^2 Sigma): the density of the whitened x' = L^{-1} x
  # times |det L^{-1}| for each of the D / F (pixel, channel) columns.
  log_det = 0.0 if noise_prior.independent else np.linalg.slogdet(
      noise_prior.covariance(x.shape[1]))[1]
  pixels_per_frame = math.prod(x.shape[2:])
  return (reconstruction_gaussian(noise_prior.whiten(x), logsnr_0=logsnr_0, noise=white_noise)
          + 0.5 * pixels_per_frame * log_det)


def vlb(
    model_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    *,
    rng: jax.Array,
    logsnr_fn: Callable[[jax.Array], jax.Array],
    parameterization: str,
    num_t: int,
    decoder: str = 'discrete',
    uniform_logsnr: bool = True,
    noise_prior: NoisePrior = INDEPENDENT,
    decoder_logsnr: float | None = None,
) -> dict[str, jax.Array]:
  """The VLB of each example: {'prior', 'diffusion', 'reconstruction', 'total'} in nats [B], and
  'bpd' [B] = total / (D log 2) (bits per dimension). See the module docstring.

  x: [B, ...] in [-1, 1] (for decoder 'discrete', on the 8-bit grid pixel_values()).
  uniform_logsnr: sample the diffusion term's lambda uniformly between logsnr_fn(0) and
    logsnr_fn(1) (the same bound, lower variance); False: through logsnr_fn itself.
  noise_prior: the noise's correlation across frames that the model was trained with (see the
    module docstring); the bound is then of the process with that noise.
  decoder_logsnr: where the decoder reads z_0, if not at lambda(0): the bound of the model whose
    chain stops there (its diffusion term spans [lambda(1), decoder_logsnr]; needs
    uniform_logsnr). Any value gives a bound. On 8-bit data a lower one is often tighter: an x
    error e at log-SNR lambda costs ~exp(lambda) e^2 / 2, so a network that is not exact to far
    below the grid spacing pays more between ~13 and lambda(0) = 20 than the decoder costs at
    ~13, where sigma / alpha = 0.0015 is below the grid's half spacing 1 / 255 (VDM's endpoints
    are near there, and can be learned: Kingma et al. 2021).
  """
  if decoder not in DECODERS:
    raise ValueError(f'Unknown decoder {decoder!r}; allowed values: {DECODERS}.')
  x = jnp.asarray(x)
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  x = x.astype(dtype)
  rng_diffusion, rng_0 = jax.random.split(rng)
  ends = jnp.asarray(logsnr_fn(jnp.asarray([0.0, 1.0], dtype)), dtype)
  logsnr_0, logsnr_1 = ends[0], ends[1]
  if decoder_logsnr is not None:
    if not uniform_logsnr:
      raise ValueError('decoder_logsnr needs uniform_logsnr=True (lambda sampled between the ends).')
    logsnr_0 = jnp.asarray(decoder_logsnr, dtype)
  noise_0 = jax.random.normal(rng_0, x.shape, dtype)
  if uniform_logsnr:
    logsnr_fn = lambda t: logsnr_0 + (logsnr_1 - logsnr_0) * t
  # Whitened coordinates (identities for independent noise): x' = L^{-1} x, z = L z'.
  x_white = noise_prior.whiten(x)
  model_fn_white = lambda z, logsnr: noise_prior.whiten(model_fn(noise_prior.color(z), logsnr))
  terms = {
      'prior': prior_kl(x_white, logsnr_1=logsnr_1),
      'diffusion': diffusion_term(model_fn_white, x_white, rng=rng_diffusion, logsnr_fn=logsnr_fn,
                                  parameterization=parameterization, num_t=num_t),
      'reconstruction': _reconstruction_under(noise_prior, decoder, x, logsnr_0=logsnr_0,
                                              white_noise=noise_0),
  }
  terms['total'] = terms['prior'] + terms['diffusion'] + terms['reconstruction']
  terms['bpd'] = terms['total'] / (math.prod(x.shape[1:]) * math.log(2.0))
  return terms

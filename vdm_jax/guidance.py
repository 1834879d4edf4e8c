"""Conditional sampling with an unconditional denoiser: reconstruction guidance (Ho et al. 2022,
"Video Diffusion Models", sec. 3.1) and the replacement method (Song et al. 2021, score SDE,
appendix I; the paper's baseline).

Observation. Part of a clean video x [B, T, H, W, C] is known through a linear operator

    y = A(x) = M * pool_f(x),   y [B, T, H/f, W/f, C],

pool_f the average over f x f pixel blocks (f = 1: the identity) and M a 0/1 mask broadcast
against y (1 = observed). Frame masks give prediction, extension and frame interpolation, pixel
masks inpainting, f > 1 spatial super-resolution. A has orthogonal rows up to scale
(A A^T = M / f^2), so its pseudo-inverse is A^+ = upsample_f(M * .) (nearest-neighbour
upsampling, the f x f copy) and the projection onto {x : A(x) = y} is

    project(x) = x + A^+ (y - A(x)),

for f = 1 simply where(M, y, x).

Reconstruction guidance (Ho et al. 2022, eq. 7 and its super-resolution variant):

    x_tilde = x_hat - (w_r alpha_t / 2) grad_{z_t} || y - A(x_hat(z_t)) ||^2,

the gradient taken through the denoiser (one `jax.vjp`: a forward and a backward pass per
evaluation), then projected onto the observation: project(x_tilde). For a mask this is eq. 7
exactly: the unknown part x_tilde^b = x_hat^b - (w_r alpha_t / 2) grad_{z_t^b} ||x^a - x_hat^a||^2,
the known part x_tilde^a = x^a. Why alpha_t / 2: with q(x^a | z_t) ~ N(x_hat^a, (sigma_t^2 /
alpha_t^2) I), E[x^b | z_t, x^a] = x_hat^b + (sigma_t^2 / alpha_t) grad_{z_t^b} log q(x^a | z_t)
is x_tilde^b with w_r = 1; w_r > 1 strengthens it, as the paper does.

Why project: every sampler step in samplers.py is elementwise in (z, x_hat, eps_hat), and a step
given the true x maps q(z_t | x) to q(z_s | x). With x_tilde^a = x^a at every evaluation the known
part of z therefore stays an exact sample of q(z^a | x^a) along the whole trajectory (the noise
carried by the sampler), the network sees inputs of its training distribution, and the result
meets the observation exactly. With w_r = 0 this is a replacement method whose z^a noise is the
sampler's own; w_r > 0 adds the correction of eq. 7 that replacement lacks.

Replacement (Song et al. 2021): before every network call the observed component of z_t is
replaced by a fresh sample of q(A z_t | y) = N(alpha_t y, sigma_t^2 A A^T),

    z <- z + A^+ (alpha_t y + (sigma_t / f) noise - A(z)),   noise ~ N(0, I) [shape of y],

and x_hat is projected as above (so the known part comes out equal to the observation; the
unknown part of the step is unchanged, since steps are elementwise). It needs one fresh key per
network evaluation: `replacement` returns a denoiser called as denoise_fn(z, logsnr, rng), for
`samplers.sample(..., denoiser_takes_rng=True)`, which folds the evaluation index into a key of
the sampling rng, so the scan stays one jitted call and the noise is reproducible from the seed.

Classifier-free guidance: wrap the CFG-guided denoiser, i.e.
reconstruction_guidance(classifier_free_guidance(cond_uncond_fn, ..., clip_x=False), ...). The
reconstruction gradient then corrects the prediction that the sampler actually uses (CFG outside
would amplify the difference between two corrections that pull towards the same observation by
(1 + w)); the cost is one backward pass through the doubled batch. The inner denoiser must not
clip: clipped pixels pass no gradient. These wrappers clip (or dynamically threshold) after the
guidance and before the projection.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from vdm_jax import samplers
from vdm_jax.diffusion import eps_from_x
from vdm_jax.schedules import alpha_sigma

CONDITIONING_METHODS = ('reconstruction', 'replacement')
StochasticDenoiseFn = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def check_conditioning_method(method: str) -> None:
  """Raises ValueError unless method is one of CONDITIONING_METHODS."""
  if method not in CONDITIONING_METHODS:
    raise ValueError(f'Unknown conditioning method {method!r}; allowed values: '
                     f'{CONDITIONING_METHODS}.')


# ============================================================================ the observation


def downsample(x: jax.Array, *, factor: int) -> jax.Array:
  """pool_f: the mean over f x f pixel blocks. x [B, T, H, W, C] -> [B, T, H/f, W/f, C]."""
  if factor == 1:
    return x
  B, T, H, W, C = x.shape
  assert H % factor == 0 and W % factor == 0, (x.shape, factor)
  return x.reshape(B, T, H // factor, factor, W // factor, factor, C).mean(axis=(3, 5))


def upsample(y: jax.Array, *, factor: int) -> jax.Array:
  """Nearest-neighbour upsampling, the pseudo-inverse of `downsample` (downsample(upsample(y)) = y).
  y [B, T, h, w, C] -> [B, T, h f, w f, C]."""
  if factor == 1:
    return y
  return jnp.repeat(jnp.repeat(y, factor, axis=2), factor, axis=3)


def observe(x: jax.Array, *, mask: jax.Array, factor: int = 1) -> jax.Array:
  """A(x) = M * pool_f(x). x [B, T, H, W, C]; mask broadcastable to [B, T, H/f, W/f, C]."""
  return mask * downsample(x, factor=factor)


def project(x: jax.Array, *, observation: jax.Array, mask: jax.Array, factor: int = 1) -> jax.Array:
  """The projection onto {x : A(x) = y}: x + A^+ (y - A(x)), A^+ = upsample_f(M * .).

  For f = 1, where(M, y, x). x [B, T, H, W, C]; observation y [B, T, H/f, W/f, C] (its values
  where M = 0 are ignored); mask broadcastable to y's shape.
  """
  residual = mask * (observation - downsample(x, factor=factor))
  return x + upsample(residual, factor=factor)


def _alpha_sigma_like(logsnr: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
  """alpha, sigma of logsnr [B] as [B, 1, ..., 1], to broadcast against z [B, ...]."""
  return alpha_sigma(jnp.reshape(logsnr, logsnr.shape + (1,) * (z.ndim - logsnr.ndim)))


def _clip(x_hat: jax.Array, clip_x: bool, dynamic_threshold_percentile: float) -> jax.Array:
  if not clip_x:
    return x_hat
  if dynamic_threshold_percentile:
    return samplers.dynamic_threshold(x_hat, percentile=dynamic_threshold_percentile)
  return jnp.clip(x_hat, -1.0, 1.0)


# ============================================================================ the two methods


def reconstruction_gradient(
    denoise_fn: samplers.DenoiseFn, z: jax.Array, logsnr: jax.Array, *, observation: jax.Array,
    mask: jax.Array, factor: int = 1,
) -> tuple[jax.Array, jax.Array]:
  """(x_hat(z), grad_z || y - A(x_hat(z)) ||^2), by one forward and one backward pass.

  The squared norm is per example (examples do not interact in the denoiser, so the gradient of
  the sum over the batch is each example's own). z [B, ...]; logsnr [B]. Returns both [B, ...].
  """
  (x_hat, _), pullback = jax.vjp(lambda z_: denoise_fn(z_, logsnr), z)
  # d/dx_hat ||y - A x_hat||^2 = -2 A^T (y - A x_hat).
  d_x = jax.grad(lambda x: jnp.sum(jnp.square(
      observation - observe(x, mask=mask, factor=factor))))(x_hat)
  (grad_z,) = pullback((d_x, jnp.zeros_like(x_hat)))
  return x_hat, grad_z


def reconstruction_guidance(
    denoise_fn: samplers.DenoiseFn, *, observation: jax.Array, mask: jax.Array, factor: int = 1,
    weight: float | jax.Array, project_output: bool = True, clip_x: bool = True,
    dynamic_threshold_percentile: float = 0.0,
) -> samplers.DenoiseFn:
  """Ho et al. 2022, eq. 7 (and its super-resolution variant through pool_f):

    x_tilde = project(clip(x_hat - (w_r alpha_t / 2) grad_{z_t} || y - A(x_hat(z_t)) ||^2)),
    eps_tilde = (z_t - alpha_t x_tilde) / sigma_t.

  Args:
    denoise_fn: an UNCLIPPED denoise_fn(z [B, ...], logsnr [B]) -> (x_hat, eps_hat), e.g.
      model_denoiser(..., clip_x=False) or classifier_free_guidance(..., clip_x=False).
    observation: y [B, T, H/f, W/f, C] (values where mask = 0 are ignored).
    mask: M broadcastable to y's shape, 1 = observed (e.g. [1, T, 1, 1, 1] for known frames).
    factor: f of pool_f (1: masks only; f > 1: spatial super-resolution).
    weight: w_r >= 0 (python float or traced scalar); 0 leaves only the projection.
    project_output: project x_tilde onto {A(x) = y} (see the module docstring); False gives the
      paper's super-resolution formula as written (the observation then met only approximately).
    clip_x, dynamic_threshold_percentile: clip x_tilde to [-1, 1] (or dynamic thresholding), after
      the guidance and before the projection.

  Returns:
    denoise_fn(z [B, ...], logsnr [B]) -> (x_tilde, eps_tilde), consistent with z.
  """

  def guided(z, logsnr):
    logsnr = jnp.broadcast_to(logsnr, z.shape[:1])
    x_hat, grad_z = reconstruction_gradient(denoise_fn, z, logsnr, observation=observation,
                                            mask=mask, factor=factor)
    alpha, _ = _alpha_sigma_like(logsnr, z)
    # Ho et al. 2022, eq. 7: reconstruction guidance.
    x_tilde = _clip(x_hat - 0.5 * weight * alpha * grad_z, clip_x, dynamic_threshold_percentile)
    if project_output:
      x_tilde = project(x_tilde, observation=observation, mask=mask, factor=factor)
    return x_tilde, eps_from_x(z=z, x=x_tilde, logsnr=logsnr)

  return guided


def replace_observed(z: jax.Array, *, logsnr: jax.Array, observation: jax.Array, mask: jax.Array,
                     factor: int = 1, noise: jax.Array) -> jax.Array:
  """z with its observed component replaced by a sample of q(A z_t | y) = N(alpha y, sigma^2 A A^T):

    z + A^+ (alpha y + (sigma / f) noise - A(z)),

  (A A^T = M / f^2 on the observed entries), for f = 1 where(M, alpha y + sigma noise, z).
  z [B, T, H, W, C]; logsnr [B]; observation, noise [B, T, H/f, W/f, C].
  """
  alpha, sigma = _alpha_sigma_like(logsnr, z)
  target = alpha * observation + (sigma / factor) * noise
  return project(z, observation=target, mask=mask, factor=factor)


def replacement(
    denoise_fn: samplers.DenoiseFn, *, observation: jax.Array, mask: jax.Array, factor: int = 1,
    clip_x: bool = True, dynamic_threshold_percentile: float = 0.0,
) -> StochasticDenoiseFn:
  """The replacement method (Song et al. 2021; Ho et al. 2022, sec. 3.1): the network sees z_t with
  its observed part replaced by a fresh sample of q(z_t^a | x^a) (`replace_observed`); its x_hat
  is clipped, then projected onto {A(x) = y}; eps_hat is recomputed from the sampler's own z_t.

  Args: as `reconstruction_guidance` (denoise_fn may clip; then clip_x changes nothing).

  Returns:
    denoise_fn(z [B, ...], logsnr [B], rng) -> (x_hat, eps_hat); use it with
    samplers.sample(..., denoiser_takes_rng=True).
  """

  def replaced(z, logsnr, rng):
    logsnr = jnp.broadcast_to(logsnr, z.shape[:1])
    noise = jax.random.normal(rng, observation.shape, z.dtype)
    z_in = replace_observed(z, logsnr=logsnr, observation=observation, mask=mask, factor=factor,
                            noise=noise)
    x_hat, _ = denoise_fn(z_in, logsnr)
    x_hat = _clip(x_hat, clip_x, dynamic_threshold_percentile)
    x_hat = project(x_hat, observation=observation, mask=mask, factor=factor)
    # The unknown part of z_in is z's, so there eps_hat is the network's own.
    return x_hat, eps_from_x(z=z, x=x_hat, logsnr=logsnr)

  return replaced


def conditional_denoiser(
    method: str, denoise_fn: samplers.DenoiseFn, *, observation: jax.Array, mask: jax.Array,
    factor: int = 1, weight: float | jax.Array = 1.0, clip_x: bool = True,
    dynamic_threshold_percentile: float = 0.0,
) -> StochasticDenoiseFn:
  """Either method as denoise_fn(z, logsnr, rng) (the rng unused by 'reconstruction'), so one
  call site serves both; use with samplers.sample(..., denoiser_takes_rng=True)."""
  check_conditioning_method(method)
  kwargs = dict(observation=observation, mask=mask, factor=factor, clip_x=clip_x,
                dynamic_threshold_percentile=dynamic_threshold_percentile)
  if method == 'replacement':
    return replacement(denoise_fn, **kwargs)
  guided = reconstruction_guidance(denoise_fn, weight=weight, **kwargs)
  return lambda z, logsnr, rng: guided(z, logsnr)

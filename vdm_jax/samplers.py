"""Samplers: ancestral (DDPM) and DDIM in log-SNR form, classifier-free guidance.

Samplers take a `denoise_fn(z [B, ...], logsnr [B]) -> (x_hat, eps_hat)`, the estimate of the
clean data and of the noise at z. Wrap a network with `model_denoiser` (and
`classifier_free_guidance` for text conditioning).

Notation (Kingma et al. 2021, VDM), for times s < t (lambda_s > lambda_t):

    alpha_{t|s} = alpha_t / alpha_s,   sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2,
    q(z_s | z_t, x) = N(mu, sigma_tilde^2 I),
    mu = (alpha_{t|s} sigma_s^2 / sigma_t^2) z_t + (alpha_s sigma_{t|s}^2 / sigma_t^2) x,
    sigma_tilde^2 = sigma_{t|s}^2 sigma_s^2 / sigma_t^2.

With r = exp(lambda_t - lambda_s) = alpha_{t|s}^2 sigma_s^2 / sigma_t^2 in (0, 1] these are

    sigma_{t|s}^2 = (1 - r) sigma_t^2,   sigma_tilde^2 = (1 - r) sigma_s^2,
    mu = r (alpha_s / alpha_t) z_t + (1 - r) alpha_s x,

the form computed here: 1 - r = -expm1(lambda_t - lambda_s) has no cancellation when the steps
are small, which sigma_t^2 - alpha_{t|s}^2 sigma_s^2 has.
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from vdm_jax.diffusion import check_parameterization, eps_from_x, predict_x_eps
from vdm_jax.schedules import alpha_sigma

DenoiseFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

SAMPLERS = ('ancestral', 'ddim')


def _bcast(a: jax.Array, x: jax.Array) -> jax.Array:
  """a [B] -> [B, 1, ..., 1] to broadcast against x [B, ...]."""
  a = jnp.asarray(a)
  return jnp.reshape(a, a.shape + (1,) * (jnp.ndim(x) - a.ndim))


def _clip_x(x_hat: jax.Array, z: jax.Array, logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Clip x_hat to the data range [-1, 1] and recompute eps_hat = (z - alpha x_hat) / sigma."""
  x_hat = jnp.clip(x_hat, -1.0, 1.0)
  return x_hat, eps_from_x(z=z, x=x_hat, logsnr=logsnr)


def model_denoiser(
    model_fn: Callable[[jax.Array, jax.Array], jax.Array], *, parameterization: str,
    clip_x: bool = True,
) -> DenoiseFn:
  """denoise_fn from a network `model_fn(z, logsnr) -> out` (see diffusion.predict_x_eps).

  When clip_x, x_hat is clipped to [-1, 1] and eps_hat recomputed from the clipped x_hat, so
  (x_hat, eps_hat) stay consistent: z = alpha x_hat + sigma eps_hat. Use clip_x=False for the
  `cond_uncond_fn` of classifier_free_guidance (which clips after guidance).
  """
  check_parameterization(parameterization)

  def denoise_fn(z, logsnr):
    x_hat, eps_hat = predict_x_eps(
        model_fn(z, logsnr), z=z, logsnr=logsnr, parameterization=parameterization)
    if clip_x:
      x_hat, eps_hat = _clip_x(x_hat, z, logsnr)
    return x_hat, eps_hat

  return denoise_fn


def classifier_free_guidance(
    cond_uncond_fn: DenoiseFn, *, guidance_weight: float | jax.Array, clip_x: bool = True,
) -> DenoiseFn:
  """Classifier-free guidance (Ho & Salimans 2022; Ho et al. 2022, eq. 6):

    eps = (1 + w) eps_cond - w eps_uncond,   x = (1 + w) x_cond - w x_uncond.

  The x rule is the eps rule seen through x = (z - sigma eps) / alpha, which is affine in eps
  with z fixed and weights (1 + w) - w = 1. w = 0 is the conditional model.

  Args:
    cond_uncond_fn: an UNCLIPPED denoise_fn on the doubled batch: called ONCE with
      z2 = [z; z] [2B, ...] and logsnr2 = [logsnr; logsnr] [2B]; the caller arranges the
      conditioning so that rows :B are conditional and rows B: unconditional (e.g.
      drop_text = [False]*B + [True]*B), e.g. model_denoiser(net, ..., clip_x=False).
    guidance_weight: w >= 0 (python float or traced scalar).
    clip_x: clip the guided x_hat to [-1, 1] (after guidance) and recompute eps_hat.

  Returns:
    denoise_fn(z [B, ...], logsnr [B]) -> (x_hat, eps_hat).
  """

  def denoise_fn(z, logsnr):
    B = z.shape[0]
    logsnr = jnp.broadcast_to(logsnr, (B,))
    x2, eps2 = cond_uncond_fn(jnp.concatenate([z, z], axis=0),
                              jnp.concatenate([logsnr, logsnr], axis=0))
    assert x2.shape[0] == 2 * B and eps2.shape[0] == 2 * B, (x2.shape, eps2.shape, B)
    w = guidance_weight
    x_hat = (1.0 + w) * x2[:B] - w * x2[B:]
    eps_hat = (1.0 + w) * eps2[:B] - w * eps2[B:]
    if clip_x:
      x_hat, eps_hat = _clip_x(x_hat, z, logsnr)
    return x_hat, eps_hat

  return denoise_fn


def ancestral_step(
    z_t: jax.Array, *, x_hat: jax.Array, logsnr_t: jax.Array, logsnr_s: jax.Array,
    noise: jax.Array, gamma: float | jax.Array = 0.0,
) -> jax.Array:
  """One ancestral (DDPM) step z_t -> z_s, s < t (Ho et al. 2020; Kingma et al. 2021):

    z_s = mu + sqrt((sigma_tilde^2)^(1 - gamma) (sigma_{t|s}^2)^gamma) noise,

  mu and sigma_tilde^2 of q(z_s | z_t, x = x_hat) as in the module docstring; the variance is
  interpolated in log space between the posterior variance (gamma = 0) and the forward-step
  variance sigma_{t|s}^2 (gamma = 1) as in Ho et al. 2022 (Video Diffusion Models), after Nichol
  & Dhariwal 2021. z_t, x_hat, noise: [B, ...]; logsnr_t, logsnr_s: [B].
  """
  lt, ls = _bcast(logsnr_t, z_t), _bcast(logsnr_s, z_t)
  alpha_t, _ = alpha_sigma(lt)
  alpha_s, _ = alpha_sigma(ls)
  r = jnp.exp(lt - ls)
  one_minus_r = -jnp.expm1(lt - ls)
  mu = r * (alpha_s / alpha_t) * z_t + one_minus_r * alpha_s * x_hat
  # log sigma^2 = log_sigmoid(-lambda): stable at both ends of the schedule.
  log_var = (jnp.log(one_minus_r) + (1.0 - gamma) * jax.nn.log_sigmoid(-ls)
             + gamma * jax.nn.log_sigmoid(-lt))
  return mu + jnp.exp(0.5 * log_var) * noise


def ddim_step(
    z_t: jax.Array, *, x_hat: jax.Array, eps_hat: jax.Array, logsnr_t: jax.Array,
    logsnr_s: jax.Array, noise: jax.Array, eta: float | jax.Array = 0.0,
) -> jax.Array:
  """One DDIM step z_t -> z_s, s < t (Song et al. 2021, eq. 12, in VDM notation):

    z_s = alpha_s x_hat + sqrt(sigma_s^2 - c^2) eps_hat + c noise,   c^2 = eta^2 sigma_tilde^2,

  with sigma_tilde^2 = (1 - r) sigma_s^2. eta = 0: deterministic DDIM; eta = 1: the ancestral
  step with posterior variance (equal to ancestral_step with gamma = 0 when eps_hat is
  consistent with x_hat). z_t, x_hat, eps_hat, noise: [B, ...]; logsnr_t, logsnr_s: [B].
  """
  lt, ls = _bcast(logsnr_t, z_t), _bcast(logsnr_s, z_t)
  alpha_s, sigma_s = alpha_sigma(ls)
  c2_over_sigma_s2 = jnp.square(eta) * -jnp.expm1(lt - ls)
  eps_scale = sigma_s * jnp.sqrt(jnp.maximum(1.0 - c2_over_sigma_s2, 0.0))
  return alpha_s * x_hat + eps_scale * eps_hat + sigma_s * jnp.sqrt(c2_over_sigma_s2) * noise


def sample(
    denoise_fn: DenoiseFn,
    *,
    rng: jax.Array,
    shape: Sequence[int],
    logsnr_fn: Callable[[jax.Array], jax.Array],
    num_steps: int,
    sampler: str = 'ddim',
    eta: float | jax.Array = 0.0,
    gamma: float | jax.Array = 0.0,
    dtype=jnp.float32,
) -> jax.Array:
  """Generate x [shape] by running z from t = 1 to t = 0 in num_steps uniform steps in t.

  z_1 ~ N(0, I); for i = N..1 with t = i / N, s = (i - 1) / N:
    (x_hat, eps_hat) = denoise_fn(z_t, logsnr_fn(t)); z_s = step(z_t, ...).
  The last step (t = 1/N) returns its x_hat (no noise added). 'ancestral' uses ancestral_step
  (gamma), 'ddim' ddim_step (eta). The loop is one `jax.lax.scan`, so the function is
  jit-able with shape, num_steps, sampler (and dtype) static; eta and gamma may be traced.

  Args:
    denoise_fn: (z [B, ...], logsnr [B]) -> (x_hat, eps_hat), e.g. model_denoiser(...).
    rng: PRNG key; step i draws its noise from fold_in(rng_steps, i).
    shape: [B, ...] e.g. [batch, frames, height, width, channels].
    logsnr_fn: t [B] -> logsnr [B].
    num_steps: N >= 1.
    sampler: one of SAMPLERS.
    eta: DDIM stochasticity in [0, 1].
    gamma: ancestral variance interpolation in [0, 1] (0: posterior variance).
    dtype: dtype of z and of the result (float32; float64 for closed-form tests).

  Returns:
    x [shape] in dtype: in [-1, 1] when denoise_fn clips x_hat.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f'Unknown sampler {sampler!r}; allowed values: {SAMPLERS}.')
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}.')
  shape = tuple(shape)
  B = shape[0]
  rng_init, rng_steps = jax.random.split(rng)

  def logsnr_at(i):
    return logsnr_fn(jnp.full((B,), i, dtype) / num_steps)

  def body(carry, i):
    z_t, _ = carry
    logsnr_t, logsnr_s = logsnr_at(i), logsnr_at(i - 1)
    x_hat, eps_hat = denoise_fn(z_t, logsnr_t)
    noise = jax.random.normal(jax.random.fold_in(rng_steps, i), shape, dtype)
    if sampler == 'ancestral':
      z_s = ancestral_step(z_t, x_hat=x_hat, logsnr_t=logsnr_t, logsnr_s=logsnr_s,
                           noise=noise, gamma=gamma)
    else:
      z_s = ddim_step(z_t, x_hat=x_hat, eps_hat=eps_hat, logsnr_t=logsnr_t,
                      logsnr_s=logsnr_s, noise=noise, eta=eta)
    # After the last step (i = 1) z_s is unused: the result is that step's x_hat.
    return (z_s.astype(dtype), x_hat.astype(dtype)), None

  z_1 = jax.random.normal(rng_init, shape, dtype)
  (_, x_hat), _ = jax.lax.scan(
      body, (z_1, jnp.zeros(shape, dtype)), jnp.arange(num_steps, 0, -1))
  return x_hat

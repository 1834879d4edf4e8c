"""Samplers in log-SNR form: ancestral (DDPM), DDIM, predictor-corrector, DPM-Solver++(2M) and
Heun (EDM); time spacings; classifier-free guidance; static and dynamic thresholding.

Samplers take a `denoise_fn(z [B, ...], logsnr [B]) -> (x_hat, eps_hat)`, the estimate of the
clean data and of the noise at z, consistent: z = alpha x_hat + sigma eps_hat. Wrap a network
with `model_denoiser` (and `classifier_free_guidance` for text conditioning).

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

Every sampler visits a grid of N log-SNRs lambda_1 < ... < lambda_N (noisiest first, see
`logsnr_grid`), starts from z ~ N(0, I) at lambda_1, and returns the x_hat of its last network
evaluation at lambda_N: its last step goes to sigma = 0, where every sampler's step is z_0 = x_hat.
Each run is one `jax.lax.scan` over the network evaluations, with the denoiser traced once.
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax.diffusion import check_parameterization, eps_from_x, predict_x_eps
from vdm_jax.noise_prior import INDEPENDENT, NoisePrior
from vdm_jax.schedules import alpha_sigma

DenoiseFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

SAMPLERS = ('ancestral', 'ddim', 'pc', 'dpmpp_2m', 'heun')
# 'default': 'karras' for heun (its own discretisation), 'uniform_t' for the others.
TIME_SPACINGS = ('default', 'uniform_t', 'trailing', 'uniform_logsnr', 'karras')
# Karras et al. 2022 (EDM), Algorithm 1 and Table 1: sigma_min, sigma_max, rho of their sigma grid.
KARRAS_SIGMA_MIN, KARRAS_SIGMA_MAX, KARRAS_RHO = 0.002, 80.0, 7.0
# Ho et al. 2022 (Video Diffusion Models): step size of the Langevin corrector of 'pc'.
PC_DELTA = 0.1


def check_sampler(sampler: str, time_spacing: str = 'default') -> None:
  """Raises ValueError unless sampler is one of SAMPLERS and time_spacing one of TIME_SPACINGS."""
  if sampler not in SAMPLERS:
    raise ValueError(f'Unknown sampler {sampler!r}; allowed values: {SAMPLERS}.')
  if time_spacing not in TIME_SPACINGS:
    raise ValueError(f'Unknown time_spacing {time_spacing!r}; allowed values: {TIME_SPACINGS}.')


def resolve_time_spacing(sampler: str, time_spacing: str) -> str:
  """'default' -> 'karras' for heun (its own discretisation), 'uniform_t' for the others."""
  check_sampler(sampler, time_spacing)
  if time_spacing == 'default':
    return 'karras' if sampler == 'heun' else 'uniform_t'
  return time_spacing


def nfe(sampler: str, num_steps: int) -> int:
  """Network evaluations of a run of num_steps = N grid points (each a batched CFG call).

  ancestral, ddim, dpmpp_2m: N (one per step). pc: 2N - 1 (a predictor evaluation per step and a
  corrector evaluation after every step but the last, which returns x_hat). heun: 2N - 1 (two
  per step, one for the final step to sigma = 0, as in Karras et al. 2022, Algorithm 1).
  """
  check_sampler(sampler)
  return 2 * num_steps - 1 if sampler in ('pc', 'heun') else num_steps


def steps_for_nfe(sampler: str, max_nfe: int) -> int:
  """The largest num_steps whose nfe(sampler, num_steps) <= max_nfe (at least 1)."""
  check_sampler(sampler)
  return max(1, (max_nfe + 1) // 2 if sampler in ('pc', 'heun') else max_nfe)


def _bcast(a: jax.Array, x: jax.Array) -> jax.Array:
  """a [B] -> [B, 1, ..., 1] to broadcast against x [B, ...]."""
  a = jnp.asarray(a)
  return jnp.reshape(a, a.shape + (1,) * (jnp.ndim(x) - a.ndim))


# ============================================================================ denoisers


def dynamic_threshold(x_hat: jax.Array, *, percentile: float) -> jax.Array:
  """Dynamic thresholding (Saharia et al. 2022, Imagen, sec. 2.3), per example b:

    s_b = max(1, quantile_p(|x_hat_b|)),   x_hat_b -> clip(x_hat_b, -s_b, s_b) / s_b,

  quantile_p over all elements of the example (linear interpolation, as numpy's default), p =
  percentile in (0, 1]. The result lies in [-1, 1]; an example already within [-1, 1] is left
  unchanged. x_hat: [B, ...].
  """
  B = x_hat.shape[0]
  s = jnp.quantile(jnp.abs(x_hat).reshape(B, -1), percentile, axis=1)
  s = _bcast(jnp.maximum(s, 1.0), x_hat)
  return jnp.clip(x_hat, -s, s) / s


def _clip_x(x_hat: jax.Array, z: jax.Array, logsnr: jax.Array,
            threshold: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Clip x_hat to [-1, 1] (threshold 0) or dynamic_threshold(percentile=threshold), then
  recompute eps_hat = (z - alpha x_hat) / sigma, so the pair stays consistent."""
  if threshold:
    x_hat = dynamic_threshold(x_hat, percentile=threshold)
  else:
    x_hat = jnp.clip(x_hat, -1.0, 1.0)
  return x_hat, eps_from_x(z=z, x=x_hat, logsnr=logsnr)


def model_denoiser(
    model_fn: Callable[[jax.Array, jax.Array], jax.Array], *, parameterization: str,
    clip_x: bool = True, dynamic_threshold_percentile: float = 0.0,
) -> DenoiseFn:
  """denoise_fn from a network `model_fn(z, logsnr) -> out` (see diffusion.predict_x_eps).

  When clip_x, x_hat is clipped to [-1, 1] (or dynamically thresholded when
  dynamic_threshold_percentile > 0) and eps_hat recomputed from it, so (x_hat, eps_hat) stay
  consistent: z = alpha x_hat + sigma eps_hat. Use clip_x=False for the `cond_uncond_fn` of
  classifier_free_guidance (which clips after guidance).
  """
  check_parameterization(parameterization)

  def denoise_fn(z, logsnr):
    x_hat, eps_hat = predict_x_eps(
        model_fn(z, logsnr), z=z, logsnr=logsnr, parameterization=parameterization)
    if clip_x:
      x_hat, eps_hat = _clip_x(x_hat, z, logsnr, dynamic_threshold_percentile)
    return x_hat, eps_hat

  return denoise_fn


def classifier_free_guidance(
    cond_uncond_fn: DenoiseFn, *, guidance_weight: float | jax.Array, clip_x: bool = True,
    dynamic_threshold_percentile: float = 0.0,
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
    dynamic_threshold_percentile: p > 0: with clip_x, dynamic_threshold(x_hat, percentile=p)
      (Saharia et al. 2022) instead of the static clip, after guidance as well.

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
      x_hat, eps_hat = _clip_x(x_hat, z, logsnr, dynamic_threshold_percentile)
    return x_hat, eps_hat

  return denoise_fn


def expert_denoiser(high_noise_fn: DenoiseFn, low_noise_fn: DenoiseFn, *,
                    logsnr_below: float | jax.Array) -> DenoiseFn:
  """Two denoisers split by noise level, as eDiff-I's ensemble of expert denoisers (Balaji et al.
  2022): `high_noise_fn` where lambda < logsnr_below, `low_noise_fn` elsewhere (logsnr_below
  may be traced).

  Each row of the batch takes its own denoiser. A sampler's evaluation has one log-SNR for every
  row, so `lax.switch` runs only the denoiser it needs; a batch of mixed levels runs both and
  picks per row.
  """

  def denoise_fn(z, logsnr):
    high = jnp.broadcast_to(logsnr, (z.shape[0],)) < logsnr_below
    branch = jnp.where(jnp.all(high), 0, jnp.where(jnp.any(high), 2, 1))

    def both(z, logsnr):
      (x_high, eps_high), (x_low, eps_low) = high_noise_fn(z, logsnr), low_noise_fn(z, logsnr)
      return jnp.where(_bcast(high, x_high), x_high, x_low), jnp.where(
          _bcast(high, eps_high), eps_high, eps_low)

    return jax.lax.switch(branch, (high_noise_fn, low_noise_fn, both), z, logsnr)

  return denoise_fn


# ============================================================================ time grids


def logsnr_grid(logsnr_fn: Callable[[jax.Array], jax.Array], *, num_steps: int,
                time_spacing: str = 'uniform_t', dtype=jnp.float32) -> jax.Array:
  """The N = num_steps log-SNRs lambda_1 < ... < lambda_N a sampler evaluates the network at.

  With lambda_max = logsnr_fn(0), lambda_min = logsnr_fn(1), for i = 1..N:
    'uniform_t':      lambda_i = logsnr_fn(1 - (i - 1) / N)  (t = 1, (N-1)/N, ..., 1/N);
    'trailing':       Lin et al. 2023, Table 2: timesteps from the last one down in steps of T/N,
                      never t = 0; in continuous time these are the times of 'uniform_t' (which
                      already starts from t = 1), so the two are the same grid;
    'uniform_logsnr': lambda_i = lambda_min + (i - 1) / N (lambda_max - lambda_min);
    'karras':         Karras et al. 2022 (EDM), eq. 5, in sigma_edm = exp(-lambda / 2):
                      sigma_i = (smax^(1/rho) + (i - 1) / (N - 1) (smin^(1/rho) - smax^(1/rho)))^rho,
                      rho = 7, smax = min(80, exp(-lambda_min / 2)), smin = max(0.002,
                      exp(-lambda_max / 2)) (EDM's range, within the schedule's), both ends
                      included; lambda_i = -2 log sigma_i.
  Returns float [N] in dtype.
  """
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}.')
  N = num_steps
  if time_spacing in ('uniform_t', 'trailing'):
    return jnp.asarray(logsnr_fn(jnp.arange(N, 0, -1).astype(dtype) / N), dtype)
  ends = jnp.asarray(logsnr_fn(jnp.array([1.0, 0.0], dtype)), dtype)
  lambda_min, lambda_max = ends[0], ends[1]
  fraction = jnp.arange(N, dtype=dtype) / N
  if time_spacing == 'uniform_logsnr':
    return lambda_min + fraction * (lambda_max - lambda_min)
  if time_spacing == 'karras':
    rho = KARRAS_RHO
    # sigma^(1/rho) = exp(-lambda / (2 rho)).
    inv_max = jnp.minimum(KARRAS_SIGMA_MAX ** (1 / rho), jnp.exp(-lambda_min / (2 * rho)))
    inv_min = jnp.maximum(KARRAS_SIGMA_MIN ** (1 / rho), jnp.exp(-lambda_max / (2 * rho)))
    fraction = jnp.arange(N, dtype=dtype) / max(N - 1, 1)
    return -2.0 * rho * jnp.log(inv_max + fraction * (inv_min - inv_max))
  raise ValueError(f'Unknown time_spacing {time_spacing!r}; allowed values: {TIME_SPACINGS[1:]}.')


# ============================================================================ steps


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


def langevin_corrector_step(
    z_s: jax.Array, *, eps_hat: jax.Array, logsnr_s: jax.Array, noise: jax.Array,
    delta: float | jax.Array = PC_DELTA,
) -> jax.Array:
  """The Langevin correction of the predictor-corrector sampler (Ho et al. 2022, Video Diffusion
  Models, sec. 2; after Song et al. 2021, score SDE, Algorithm 5 / Langevin dynamics):

    z_s <- z_s - (1/2) delta sigma_s eps_hat + sqrt(delta) sigma_s noise,

  i.e. a Langevin step z + (eta/2) score + sqrt(eta) noise with the score from eps_hat,
  score = grad log p(z_s) ~ -eps_hat / sigma_s, and step size eta = delta sigma_s^2 (delta = 0.1).
  eps_hat is the (guided) noise estimate at z_s. z_s, eps_hat, noise: [B, ...]; logsnr_s: [B].
  """
  _, sigma_s = alpha_sigma(_bcast(logsnr_s, z_s))
  return z_s - 0.5 * delta * sigma_s * eps_hat + jnp.sqrt(delta) * sigma_s * noise


def dpmpp_2m_step(
    z_t: jax.Array, *, x_hat: jax.Array, x_hat_prev: jax.Array, logsnr_prev: jax.Array,
    logsnr_t: jax.Array, logsnr_s: jax.Array, first_order: bool | jax.Array = False,
) -> jax.Array:
  """One step z_t -> z_s of DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2).

  DPM-Solver's lambda is log(alpha / sigma), HALF our log-SNR: with l = logsnr / 2,

    h = l_s - l_t,   h_prev = l_t - l_prev,   r = h_prev / h,
    D = (1 + 1 / (2r)) x_hat - (1 / (2r)) x_hat_prev       (x_hat at t, x_hat_prev at prev),
    z_s = (sigma_s / sigma_t) z_t - alpha_s (exp(-h) - 1) D.

  first_order (the first step, no history): D = x_hat, which is DDIM (eta = 0). x_hat_prev and
  logsnr_prev are the previous evaluation's (prev < t < s in time, lambda_prev < lambda_t).
  z_t, x_hat, x_hat_prev: [B, ...]; logsnr_*: [B].
  """
  lp, lt, ls = (_bcast(l, z_t) for l in (logsnr_prev, logsnr_t, logsnr_s))
  h, h_prev = 0.5 * (ls - lt), 0.5 * (lt - lp)
  # 1 / (2r) = h / (2 h_prev); the unused branch of the first step may divide by zero.
  h_prev = jnp.where(first_order, 1.0, h_prev)
  D = jnp.where(first_order, x_hat, x_hat + h / (2.0 * h_prev) * (x_hat - x_hat_prev))
  alpha_s, _ = alpha_sigma(ls)
  sigma_ratio = jnp.exp(0.5 * (jax.nn.log_sigmoid(-ls) - jax.nn.log_sigmoid(-lt)))
  return sigma_ratio * z_t - alpha_s * jnp.expm1(-h) * D


def heun_step(
    *, x_hat_t: jax.Array, eps_hat_t: jax.Array, eps_hat_s: jax.Array, logsnr_t: jax.Array,
    logsnr_s: jax.Array,
) -> jax.Array:
  """The second-order (Heun) step t -> s of Karras et al. 2022 (EDM), Algorithm 1, in VP form.

  EDM's variables are x_edm = z / alpha and sigma_edm = sigma / alpha = exp(-lambda / 2) (so
  z = x_edm / sqrt(1 + sigma_edm^2)); its ODE is dx_edm / dsigma_edm = (x_edm - D) / sigma_edm,
  and (x_edm - D(x_edm; sigma_edm)) / sigma_edm = eps_hat for a consistent denoiser. Its steps:

    Euler:  x'_s  = x_t + (sigma_s - sigma_t) eps_hat_t                 (= DDIM, eta = 0),
    Heun:   x_s   = x_t + (sigma_s - sigma_t) (eps_hat_t + eps_hat_s) / 2,

  eps_hat_s evaluated at the Euler point x'_s. Written with x_t = x_hat_t + sigma_t eps_hat_t
  and multiplied by alpha_s, so no large terms cancel at low SNR:

    z_s = alpha_s x_hat_t + sigma_s eps_hat_t + alpha_s (sigma_edm_s - sigma_edm_t) / 2 (eps_hat_s - eps_hat_t).

  eps_hat_s = eps_hat_t gives the Euler step. x_hat_t, eps_hat_*: [B, ...]; logsnr_*: [B].
  """
  lt, ls = _bcast(logsnr_t, x_hat_t), _bcast(logsnr_s, x_hat_t)
  alpha_s, sigma_s = alpha_sigma(ls)
  half_dsigma = 0.5 * alpha_s * (jnp.exp(-0.5 * ls) - jnp.exp(-0.5 * lt))
  return alpha_s * x_hat_t + sigma_s * eps_hat_t + half_dsigma * (eps_hat_s - eps_hat_t)


# ============================================================================ the sampling loop


def _evaluation_plan(sampler: str, num_steps: int):
  """Per network evaluation k: (grid index evaluated at, index stepped from, index stepped to,
  is_corrector). Index num_steps is the final step to sigma = 0 (a null step: its z is unused)."""
  N = num_steps
  if sampler in ('pc', 'heun'):
    # i = 0..N-2: the step's predictor evaluation at i, then its corrector evaluation at i + 1.
    at = [j for i in range(N - 1) for j in (i, i + 1)] + [N - 1]
    frm = [i for i in range(N - 1) for _ in (0, 1)] + [N - 1]
    to = [i + 1 for i in range(N - 1) for _ in (0, 1)] + [N - 1]
    corrector = [c for _ in range(N - 1) for c in (False, True)] + [False]
  else:
    at, frm = list(range(N)), list(range(N))
    to = list(range(1, N)) + [N - 1]
    corrector = [False] * N
  return tuple(np.asarray(a) for a in (at, frm, to, corrector))


def sample(
    denoise_fn: DenoiseFn,
    *,
    rng: jax.Array,
    shape: Sequence[int],
    logsnr_fn: Callable[[jax.Array], jax.Array],
    num_steps: int,
    sampler: str = 'ddim',
    time_spacing: str = 'default',
    eta: float | jax.Array = 0.0,
    gamma: float | jax.Array = 0.0,
    pc_delta: float | jax.Array = PC_DELTA,
    z_init: jax.Array | None = None,
    dtype=jnp.float32,
    denoiser_takes_rng: bool = False,
    noise_prior: NoisePrior = INDEPENDENT,
) -> jax.Array:
  """Generate x [shape] from z ~ N(0, I) by num_steps = N steps over `logsnr_grid`.

  With the grid lambda_1 < ... < lambda_N and lambda_{N+1} = +inf (sigma = 0):
    'ancestral': z <- ancestral_step(z, x_hat(z, lambda_i); lambda_i -> lambda_{i+1}) (gamma);
    'ddim':      z <- ddim_step(...) (eta);
    'pc':        the ancestral step (gamma), then at lambda_{i+1} one Langevin corrector step
                 (langevin_corrector_step, delta = pc_delta) with a fresh evaluation;
    'dpmpp_2m':  z <- dpmpp_2m_step, first order at the first step;
    'heun':      Euler step to lambda_{i+1}, a second evaluation there, heun_step.
  Every sampler's step to sigma = 0 returns the x_hat of its last evaluation (at lambda_N): the
  limit of each step above, and DPM-Solver++'s first-order final step (Lu et al. 2022) and EDM's
  Euler final step. Network evaluations: nfe(sampler, N). The loop is one `jax.lax.scan` over the
  evaluations with the denoiser traced once, so the function is jit-able with shape, num_steps,
  sampler, time_spacing (and dtype) static; eta, gamma and pc_delta may be traced.

  Args:
    denoise_fn: (z [B, ...], logsnr [B]) -> (x_hat, eps_hat), e.g. model_denoiser(...).
    rng: PRNG key; evaluation k draws its noise from fold_in(rng_steps, k).
    shape: [B, ...] e.g. [batch, frames, height, width, channels].
    logsnr_fn: t [any shape] -> logsnr (elementwise).
    num_steps: N >= 1 grid points.
    sampler: one of SAMPLERS.
    time_spacing: one of TIME_SPACINGS ('default': 'karras' for heun, else 'uniform_t').
    eta: DDIM stochasticity in [0, 1].
    gamma: ancestral (and pc predictor) variance interpolation in [0, 1] (0: posterior variance).
    pc_delta: step size delta of the pc corrector.
    z_init: the starting z [shape] at lambda_1 (default: drawn from N(0, I) with rng), e.g. to
      follow one deterministic trajectory with several samplers.
    dtype: dtype of z and of the result (float32; float64 for closed-form tests).
    denoiser_takes_rng: call denoise_fn(z, logsnr, rng) with a fresh key per evaluation k,
      fold_in(rng_denoise, k), rng_denoise split off rng first (e.g. guidance.replacement, which
      draws noise at every network call). False: denoise_fn(z, logsnr), and rng is used as before.
    noise_prior: the noise's correlation across frames (axis 1), as the model was trained with
      (noise_prior.py): z_1 and every fresh noise are drawn from N(0, Sigma), the steps unchanged.

  Returns:
    x [shape] in dtype: in [-1, 1] when denoise_fn clips x_hat.
  """
  time_spacing = resolve_time_spacing(sampler, time_spacing)
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}.')
  shape = tuple(shape)
  B = shape[0]
  if denoiser_takes_rng:
    rng, rng_denoise = jax.random.split(rng)
  rng_init, rng_steps = jax.random.split(rng)
  grid = logsnr_grid(logsnr_fn, num_steps=num_steps, time_spacing=time_spacing, dtype=dtype)
  at, frm, to, corrector = _evaluation_plan(sampler, num_steps)
  per_eval = dict(k=jnp.arange(len(at)), at=grid[at], frm=grid[frm], to=grid[to],
                  prev=grid[np.maximum(at - 1, 0)], corrector=jnp.asarray(corrector))

  def body(carry, xs):
    z, x_base, eps_base, _ = carry  # z: where to evaluate; *_base: a previous evaluation
    full = lambda l: jnp.full((B,), l, dtype)
    logsnr = full(xs['at'])
    if denoiser_takes_rng:
      x_hat, eps_hat = denoise_fn(z, logsnr, jax.random.fold_in(rng_denoise, xs['k']))
    else:
      x_hat, eps_hat = denoise_fn(z, logsnr)
    x_hat, eps_hat = x_hat.astype(dtype), eps_hat.astype(dtype)
    noise = (noise_prior.sample(jax.random.fold_in(rng_steps, xs['k']), shape, dtype)
             if sampler in ('ancestral', 'ddim', 'pc') else None)
    step = dict(logsnr_t=full(xs['frm']), logsnr_s=full(xs['to']))
    if sampler == 'ancestral':
      z = ancestral_step(z, x_hat=x_hat, noise=noise, gamma=gamma, **step)
    elif sampler == 'ddim':
      z = ddim_step(z, x_hat=x_hat, eps_hat=eps_hat, noise=noise, eta=eta, **step)
    elif sampler == 'pc':
      z = jnp.where(
          xs['corrector'],
          langevin_corrector_step(z, eps_hat=eps_hat, logsnr_s=logsnr, noise=noise,
                                  delta=pc_delta),
          ancestral_step(z, x_hat=x_hat, noise=noise, gamma=gamma, **step))
    elif sampler == 'dpmpp_2m':
      z = dpmpp_2m_step(z, x_hat=x_hat, x_hat_prev=x_base, logsnr_prev=full(xs['prev']),
                        first_order=xs['k'] == 0, **step)
      x_base = x_hat
    else:  # heun: a predictor evaluation takes the Euler step and is kept for its corrector.
      x_base = jnp.where(xs['corrector'], x_base, x_hat)
      eps_base = jnp.where(xs['corrector'], eps_base, eps_hat)
      z = heun_step(x_hat_t=x_base, eps_hat_t=eps_base, eps_hat_s=eps_hat, **step)
    # After the last evaluation z is unused: the result is that evaluation's x_hat.
    return (z.astype(dtype), x_base, eps_base, x_hat), None

  z_1 = noise_prior.sample(rng_init, shape, dtype) if z_init is None else jnp.asarray(z_init, dtype)
  zeros = jnp.zeros(shape, dtype)
  (_, _, _, x_hat), _ = jax.lax.scan(body, (z_1, zeros, zeros, zeros), per_eval)
  return x_hat

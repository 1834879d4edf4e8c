"""Noise schedules as functions from time t in [0, 1] to log-SNR lambda(t).

Variance-preserving diffusion (Kingma et al. 2021, "Variational Diffusion Models", VDM):

    z_t = alpha_t x + sigma_t eps,   alpha_t^2 + sigma_t^2 = 1,
    lambda(t) = log(alpha_t^2 / sigma_t^2)  (log signal-to-noise ratio),
    alpha_t^2 = sigmoid(lambda(t)),  sigma_t^2 = sigmoid(-lambda(t)).

A schedule is strictly decreasing: t = 0 is (almost) clean data, t = 1 is (almost) pure noise.
Schedules are Flax modules without parameters (so `schedule.apply({}, t)` works); a learned
schedule can later add parameters behind the same interface.

Schedules compute in float32, or in float64 when given float64 times (closed-form tests).
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ('cosine', 'linear')


def _float_dtype(x: jax.Array):
  """float32, or float64 for float64 inputs: the schedule never runs in low precision."""
  dtype = jnp.asarray(x).dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.float32
  # Canonicalise: numpy float64 input without jax_enable_x64 computes in float32, silently.
  return jax.dtypes.canonicalize_dtype(jnp.promote_types(dtype, jnp.float32))


def alpha_sigma(logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Signal and noise scales of the variance-preserving process (Kingma et al. 2021).

    alpha = sqrt(sigmoid(lambda)),  sigma = sqrt(sigmoid(-lambda)),

  so alpha^2 + sigma^2 = 1 and log(alpha^2 / sigma^2) = lambda. Same shape and dtype as logsnr.
  """
  logsnr = jnp.asarray(logsnr)
  return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


class _Schedule(nn.Module):
  """Base: `__call__(t) -> logsnr`, elementwise, any shape."""

  @nn.nowrap
  def logsnr_fn(self, variables: Optional[Any] = None) -> Callable[[jax.Array], jax.Array]:
    """`t -> logsnr` as a plain function: `logsnr_fn = schedule.logsnr_fn()`.

    Same as `lambda t: schedule.apply(variables or {}, t)`; `variables` is for a future learned
    schedule (these have no parameters).
    """
    variables = {} if variables is None else variables
    return lambda t: self.apply(variables, t)


class CosineSchedule(_Schedule):
  """Cosine log-SNR schedule, truncated to [logsnr_min, logsnr_max].

  Nichol & Dhariwal 2021 cosine schedule in log-SNR form, as used by Ho et al. 2022 (Video
  Diffusion Models) and google-research/diffusion_distillation (`logsnr_schedule_cosine`):

    lambda(t) = -2 log tan(a t + b),
    b = arctan(exp(-logsnr_max / 2)),  a = arctan(exp(-logsnr_min / 2)) - b,

  so lambda(0) = logsnr_max and lambda(1) = logsnr_min, strictly decreasing in between.

  `logsnr_shift` s moves the curve by s at every t (Hoogeboom et al. 2023, "simple diffusion":
  s = 2 log(64 / resolution), negative = more noise), keeping the endpoints: the cosine is
  truncated to [logsnr_min - s, logsnr_max - s] and then shifted, lambda(t) = -2 log tan(a t + b) + s.
  """

  logsnr_min: float = -20.0
  logsnr_max: float = 20.0
  logsnr_shift: float = 0.0

  def __call__(self, t: jax.Array) -> jax.Array:
    """t: any shape, in [0, 1]. Returns logsnr, same shape, float32 (float64 for float64 t)."""
    if not self.logsnr_min < self.logsnr_max:
      raise ValueError(
          f'Need logsnr_min < logsnr_max, got {self.logsnr_min} and {self.logsnr_max}.')
    dtype = _float_dtype(t)
    t = jnp.asarray(t, dtype)
    # Constants in float64 numpy, then cast: a float64 numpy scalar would otherwise promote t.
    shift = self.logsnr_shift
    b = np.arctan(np.exp(-0.5 * (self.logsnr_max - shift)))
    a = np.arctan(np.exp(-0.5 * (self.logsnr_min - shift))) - b
    return -2.0 * jnp.log(jnp.tan(jnp.asarray(a, dtype) * t + jnp.asarray(b, dtype))) + shift


class LinearBetaSchedule(_Schedule):
  """The discrete linear-beta schedule of DDPM (Ho et al. 2020) in continuous time.

  betas beta_1..beta_T are linearly spaced from beta_start to beta_end (T = num_steps) and
  alpha_bar_i = prod_{j <= i} (1 - beta_j). At t = i / T (i = 1..T), lambda(t) is exactly the
  discrete log-SNR

    lambda_i = log(alpha_bar_i / (1 - alpha_bar_i)),

  so the step from t = (i-1)/T to t = i/T is the DDPM transition q(x_i | x_{i-1}) =
  N(sqrt(1 - beta_i) x_{i-1}, beta_i I) and t = 1 is step T.

  Choice at t = 0: alpha_bar_0 = 1 has infinite log-SNR, so lambda(0) uses half of the first
  step's noise variance, 1 - alpha_bar_0 := beta_1 / 2, i.e. lambda_0 = log((1 - beta_1/2) /
  (beta_1/2)) (about 9.9 for beta_1 = 1e-4): finite and strictly above lambda_1.

  Between grid points lambda is linearly interpolated in t (continuous, strictly decreasing).
  """

  num_steps: int = 1000
  beta_start: float = 1e-4
  beta_end: float = 0.02

  @nn.nowrap
  def discrete_logsnr(self) -> np.ndarray:
    """float64 [num_steps + 1]: lambda_0 (the choice above), lambda_1, ..., lambda_T."""
    if not (self.num_steps >= 1 and 0.0 < self.beta_start <= self.beta_end < 1.0):
      raise ValueError(
          'Need num_steps >= 1 and 0 < beta_start <= beta_end < 1, got '
          f'{self.num_steps}, {self.beta_start}, {self.beta_end}.')
    betas = np.linspace(self.beta_start, self.beta_end, self.num_steps, dtype=np.float64)
    log_alpha_bar = np.cumsum(np.log1p(-betas))
    # log(alpha_bar / (1 - alpha_bar)) without cancellation when alpha_bar ~ 1.
    logsnr = log_alpha_bar - np.log(-np.expm1(log_alpha_bar))
    half_beta = 0.5 * betas[0]
    logsnr_0 = np.log1p(-half_beta) - np.log(half_beta)
    return np.concatenate([[logsnr_0], logsnr])

  def __call__(self, t: jax.Array) -> jax.Array:
    """t: any shape, clipped to [0, 1]. Returns logsnr, same shape, float32 (float64 for float64 t)."""
    dtype = _float_dtype(t)
    table = jnp.asarray(self.discrete_logsnr(), dtype)
    u = jnp.clip(jnp.asarray(t, dtype), 0.0, 1.0) * self.num_steps  # position on the step grid
    i = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, self.num_steps - 1)
    frac = u - i.astype(dtype)
    return table[i] + frac * (table[i + 1] - table[i])


def make_schedule(name: str, **kwargs) -> nn.Module:
  """Schedule by name: 'cosine' -> CosineSchedule(**kwargs), 'linear' -> LinearBetaSchedule(**kwargs)."""
  if name == 'cosine':
    return CosineSchedule(**kwargs)
  if name == 'linear':
    return LinearBetaSchedule(**kwargs)
  raise ValueError(f'Unknown schedule {name!r}; allowed values: {SCHEDULES}.')

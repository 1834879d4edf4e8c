"""Noise schedules as functions from time t in [0, 1] to log-SNR lambda(t).

Variance-preserving diffusion (Kingma et al. 2021, "Variational Diffusion Models", VDM):

    z_t = alpha_t x + sigma_t eps,   alpha_t^2 + sigma_t^2 = 1,
    lambda(t) = log(alpha_t^2 / sigma_t^2)  (log signal-to-noise ratio),
    alpha_t^2 = sigmoid(lambda(t)),  sigma_t^2 = sigmoid(-lambda(t)).

A schedule is strictly decreasing: t = 0 is (almost) clean data, t = 1 is (almost) pure noise.
Schedules are Flax modules. The fixed ones have no parameters (`schedule.apply({}, t)`); the
learned one (`LearnedSchedule`, Kingma et al. 2021) has, behind the same interface
(`schedule.apply({'params': p}, t)`).

Zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
Flawed", Algorithm 1) is an option of the cosine and discrete schedules: sqrt(alpha_bar) is
shifted and scaled so the last step has alpha = 0 (SNR 0) and the first keeps its value. A log-SNR
of -inf would make every formula in log-SNR form produce inf or NaN, so the terminal log-SNR is
clamped to ZERO_SNR_LOGSNR = -30 (SNR 9.4e-14, alpha 3.1e-7: below float32 resolution of the data
signal, and finite in the samplers, losses and likelihood).

Schedules compute in float32, or in float64 when given float64 times (closed-form tests).
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ('cosine', 'linear', 'betas', 'learned')
ZERO_SNR_LOGSNR = -30.0  # The clamped log-SNR of "SNR 0" (see above).
# The learned schedule's endpoint parameters (LearnedSchedule with learn_endpoints), and the least
# log-SNR range they can give: it keeps lambda(0) > lambda(1) distinct in float32 up to |lambda| ~ 1e4.
ENDPOINT_PARAMS = ('gamma_0', 'gamma_1')
MIN_LOGSNR_RANGE = 0.01


def _float_dtype(x: jax.Array):
  """float32, or float64 for float64 inputs: the schedule never runs in low precision."""
  dtype = jnp.asarray(x).dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.float32
  # Canonicalise: numpy float64 input without jax_enable_x64 computes in float32, silently.
  return jax.dtypes.canonicalize_dtype(jnp.promote_types(dtype, jnp.float32))


def _checked_time(t: jax.Array, logsnr_min: float, logsnr_max: float):
  """(t in its float dtype, that dtype), after checking logsnr_min < logsnr_max."""
  if not logsnr_min < logsnr_max:
    raise ValueError(f'Need logsnr_min < logsnr_max, got {logsnr_min} and {logsnr_max}.')
  dtype = _float_dtype(t)
  return jnp.asarray(t, dtype), dtype


def alpha_sigma(logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Signal and noise scales of the variance-preserving process (Kingma et al. 2021).

    alpha = sqrt(sigmoid(lambda)),  sigma = sqrt(sigmoid(-lambda)),

  so alpha^2 + sigma^2 = 1 and log(alpha^2 / sigma^2) = lambda. Same shape and dtype as logsnr.
  """
  logsnr = jnp.asarray(logsnr)
  return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def rescale_zero_terminal_snr(logsnr: jax.Array, *, logsnr_first: float,
                              logsnr_last: float) -> jax.Array:
  """Lin et al. 2023, Algorithm 1, in log-SNR form: with a = sqrt(alpha_bar) = sqrt(sigmoid(lambda)),

    a' = a_first (a - a_last) / (a_first - a_last),    lambda' = log(a'^2 / (1 - a'^2)),

  so lambda_first is kept and lambda_last becomes -inf, clamped to ZERO_SNR_LOGSNR (a' is floored
  at sqrt(sigmoid(ZERO_SNR_LOGSNR))). 1 - a' is computed as
  (a_first (1 - a) - a_last (1 - a_first)) / (a_first - a_last) with 1 - a = sigmoid(-lambda) / (1 + a),
  which keeps lambda ~ +20 exact in float32 (where a rounds to 1). Elementwise; same dtype.
  """
  # numpy in, numpy out (float64 tables of the discrete schedules); jax otherwise.
  xp = np if isinstance(logsnr, np.ndarray) else jnp
  logsnr = xp.asarray(logsnr)
  dtype = logsnr.dtype
  if not logsnr_first > logsnr_last:
    raise ValueError(f'Need logsnr_first > logsnr_last, got {logsnr_first} and {logsnr_last}.')
  sigmoid = lambda l: 1.0 / (1.0 + xp.exp(-l))
  np_sigmoid = lambda l: 1.0 / (1.0 + np.exp(-np.float64(l)))
  a_first, a_last, a_floor = (np.sqrt(np_sigmoid(l))
                              for l in (logsnr_first, logsnr_last, ZERO_SNR_LOGSNR))
  one_minus_a_first = np_sigmoid(-logsnr_first) / (1.0 + a_first)
  c = lambda v: xp.asarray(v, dtype)  # float64 numpy constants, cast: they must not promote
  a = xp.sqrt(sigmoid(logsnr))
  one_minus_a = sigmoid(-logsnr) / (1.0 + a)
  a_new = c(a_first / (a_first - a_last)) * (a - c(a_last))
  clamped = a_new <= c(a_floor)
  a_new = xp.maximum(a_new, c(a_floor))  # keeps the log below finite (and its derivative)
  one_minus_a_new = (c(a_first) * one_minus_a - c(a_last * one_minus_a_first)) / c(a_first - a_last)
  logsnr_new = 2.0 * xp.log(a_new) - xp.log(one_minus_a_new * (1.0 + a_new))
  return xp.where(clamped, c(ZERO_SNR_LOGSNR), logsnr_new)


class _Schedule(nn.Module):
  """Base: `__call__(t) -> logsnr`, elementwise, any shape."""

  @nn.nowrap
  def logsnr_fn(self, variables: Optional[Any] = None) -> Callable[[jax.Array], jax.Array]:
    """`t -> logsnr` as a plain function: `logsnr_fn = schedule.logsnr_fn()`.

    Same as `lambda t: schedule.apply(variables or {}, t)`; `variables` ({'params': ...}) only for
    the learned schedule (the others have no parameters).
    """
    variables = {} if variables is None else variables
    return lambda t: self.apply(variables, t)


def resolution_shift(*, base_resolution: int, resolution: int) -> float:
  """Simple diffusion's log-SNR shift for `resolution` (Hoogeboom et al. 2023, sec. 3.1): a
  schedule tuned at `base_resolution` has the same per-pixel-block SNR at resolution d when
  shifted by 2 log(base_resolution / d) (d > base: negative, noisier)."""
  return 2.0 * float(np.log(base_resolution / resolution))


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

  `zero_terminal_snr`: then rescaled by `rescale_zero_terminal_snr` (Lin et al. 2023) between
  lambda(0) = logsnr_max (kept) and lambda(1) = logsnr_min (-> ZERO_SNR_LOGSNR).
  """

  logsnr_min: float = -20.0
  logsnr_max: float = 20.0
  logsnr_shift: float = 0.0
  zero_terminal_snr: bool = False

  def __call__(self, t: jax.Array) -> jax.Array:
    """t: any shape, in [0, 1]. Returns logsnr, same shape, float32 (float64 for float64 t)."""
    t, dtype = _checked_time(t, self.logsnr_min, self.logsnr_max)
    # Constants in float64 numpy, then cast: a float64 numpy scalar would otherwise promote t.
    shift = self.logsnr_shift
    b = np.arctan(np.exp(-0.5 * (self.logsnr_max - shift)))
    a = np.arctan(np.exp(-0.5 * (self.logsnr_min - shift))) - b
    logsnr = -2.0 * jnp.log(jnp.tan(jnp.asarray(a, dtype) * t + jnp.asarray(b, dtype))) + shift
    if self.zero_terminal_snr:
      logsnr = rescale_zero_terminal_snr(logsnr, logsnr_first=self.logsnr_max,
                                         logsnr_last=self.logsnr_min)
    return logsnr


class _DiscreteSchedule(_Schedule):
  """A discrete DDPM schedule (Ho et al. 2020) in continuous time, from its betas.

  alpha_bar_i = prod_{j <= i} (1 - beta_j) for i = 1..T (T = len(betas)). At t = i / T, lambda(t)
  is exactly the discrete log-SNR

    lambda_i = log(alpha_bar_i / (1 - alpha_bar_i)),

  so the step from t = (i-1)/T to t = i/T is the DDPM transition q(x_i | x_{i-1}) =
  N(sqrt(1 - beta_i) x_{i-1}, beta_i I) and t = 1 is step T.

  Choice at t = 0: alpha_bar_0 = 1 has infinite log-SNR, so lambda(0) uses half of the first
  step's noise variance, 1 - alpha_bar_0 := beta_1 / 2, i.e. lambda_0 = log((1 - beta_1/2) /
  (beta_1/2)) (about 9.9 for beta_1 = 1e-4): finite and strictly above lambda_1.

  With `zero_terminal_snr`, lambda_1..lambda_T are rescaled by Lin et al. 2023, Algorithm 1
  (`rescale_zero_terminal_snr`: lambda_1, hence beta_1 and lambda_0, kept; lambda_T -> the clamp
  ZERO_SNR_LOGSNR).

  Between grid points lambda is linearly interpolated in t (continuous, strictly decreasing).
  Subclasses give `discrete_betas()` and the field `zero_terminal_snr`.
  """

  @nn.nowrap
  def discrete_betas(self) -> np.ndarray:
    raise NotImplementedError

  @nn.nowrap
  def discrete_logsnr(self) -> np.ndarray:
    """float64 [T + 1]: lambda_0 (the choice above), lambda_1, ..., lambda_T."""
    betas = np.asarray(self.discrete_betas(), np.float64)
    if not (betas.ndim == 1 and betas.size >= 1 and np.all((betas > 0) & (betas < 1))):
      raise ValueError(f'Need a non-empty 1-D array of betas in (0, 1), got {betas!r}.')
    log_alpha_bar = np.cumsum(np.log1p(-betas))
    if not np.all(np.diff(log_alpha_bar) < 0):
      raise ValueError('alpha_bar must strictly decrease: some betas are too small to change it.')
    # log(alpha_bar / (1 - alpha_bar)) without cancellation when alpha_bar ~ 1.
    logsnr = log_alpha_bar - np.log(-np.expm1(log_alpha_bar))
    if self.zero_terminal_snr:
      if betas.size < 2:
        raise ValueError('zero_terminal_snr needs at least 2 steps.')
      logsnr = rescale_zero_terminal_snr(logsnr, logsnr_first=logsnr[0], logsnr_last=logsnr[-1])
      if not logsnr[-2] > ZERO_SNR_LOGSNR:
        raise ValueError(f'zero_terminal_snr: step T-1 already has log-SNR {logsnr[-2]:.1f} <= '
                         f'the terminal clamp {ZERO_SNR_LOGSNR}; use fewer or smaller betas.')
    half_beta = 0.5 * betas[0]
    logsnr_0 = np.log1p(-half_beta) - np.log(half_beta)
    return np.concatenate([[logsnr_0], logsnr])

  def __call__(self, t: jax.Array) -> jax.Array:
    """t: any shape, clipped to [0, 1]. Returns logsnr, same shape, float32 (float64 for float64 t)."""
    dtype = _float_dtype(t)
    table = jnp.asarray(self.discrete_logsnr(), dtype)
    num_steps = table.shape[0] - 1
    u = jnp.clip(jnp.asarray(t, dtype), 0.0, 1.0) * num_steps  # position on the step grid
    i = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, num_steps - 1)
    frac = u - i.astype(dtype)
    return table[i] + frac * (table[i + 1] - table[i])


class LinearBetaSchedule(_DiscreteSchedule):
  """The discrete linear-beta schedule of DDPM (Ho et al. 2020): betas linearly spaced from
  beta_start to beta_end over num_steps steps (see _DiscreteSchedule)."""

  num_steps: int = 1000
  beta_start: float = 1e-4
  beta_end: float = 0.02
  zero_terminal_snr: bool = False

  @nn.nowrap
  def discrete_betas(self) -> np.ndarray:
    if not (self.num_steps >= 1 and 0.0 < self.beta_start <= self.beta_end < 1.0):
      raise ValueError(
          'Need num_steps >= 1 and 0 < beta_start <= beta_end < 1, got '
          f'{self.num_steps}, {self.beta_start}, {self.beta_end}.')
    return np.linspace(self.beta_start, self.beta_end, self.num_steps, dtype=np.float64)


class BetaSchedule(_DiscreteSchedule):
  """The discrete schedule of any given betas beta_1..beta_T in (0, 1) (see _DiscreteSchedule)."""

  betas: tuple[float, ...] = ()
  zero_terminal_snr: bool = False

  @nn.nowrap
  def discrete_betas(self) -> np.ndarray:
    return np.asarray(self.betas, np.float64)


class LearnedSchedule(_Schedule):
  """The learned schedule of Kingma et al. 2021 (VDM, sec. 3.2 and appendix H): a monotone
  network gamma(t) = -lambda(t), normalised so its endpoints are exactly gamma_0 and gamma_1.

    g(t) = softplus(w1) t + mean_k softplus(w3_k) sigmoid(softplus(w2_k) (2t - 1) + b2_k),
    gamma(t) = gamma_0 + (gamma_1 - gamma_0) (g(t) - g(0)) / (g(1) - g(0)),
    gamma_0 = -logsnr_max,  gamma_1 = -logsnr_min  (or learned: `learn_endpoints` below),

  g is a one-hidden-layer MLP with positive weights (softplus of the parameters) and a positive
  skip connection, so g, and hence gamma, strictly increase in t: lambda(t) strictly decreases from
  -gamma_0 at t = 0 to -gamma_1 at t = 1 whatever the parameters. The nonlinear part starts
  small (softplus(w3) ~ 0.02), so the initial schedule is close to linear in log-SNR.

  The continuous-time VLB depends on the schedule only through its endpoints (VDM, sec. 5), so the
  shape is trained to minimise the variance of the VLB estimate (diffusion.
  grads_with_learned_schedule).

  `learn_endpoints`: the endpoints are parameters too (ENDPOINT_PARAMS), trained as VDM does on
  the VLB itself (prior KL at t = 1 and reconstruction at t = 0 against the diffusion term):

    gamma_0 = param 'gamma_0',
    gamma_1 = f + softplus(param 'gamma_1' - f),   f = gamma_0 + MIN_LOGSNR_RANGE,

  initialised at -logsnr_max and -logsnr_min. gamma_1 is its own parameter (to within exp(-40) at
  the default range) while that lies well above the floor f, so each endpoint has its own Adam
  step, and never falls below f: gamma_0 < gamma_1 (lambda(0) > lambda(1)) whatever the parameters.
  Without `learn_endpoints` (the default) there are no such parameters (older checkpoints' layout).
  """

  logsnr_min: float = -20.0
  logsnr_max: float = 20.0
  num_features: int = 1024  # Hidden units of the monotone MLP (VDM: 1024).
  learn_endpoints: bool = False

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    """t: any shape, in [0, 1]. Returns logsnr, same shape, float32 (float64 for float64 t)."""
    t, dtype = _checked_time(t, self.logsnr_min, self.logsnr_max)
    K = self.num_features
    normal = nn.initializers.normal(1.0)
    w1 = self.param('w1', nn.initializers.constant(np.log(np.expm1(1.0))), ())  # softplus -> 1
    w2 = self.param('w2', normal, (K,))
    b2 = self.param('b2', normal, (K,))
    w3 = self.param('w3', nn.initializers.constant(-4.0), (K,))
    w1, w2, b2, w3 = (jnp.asarray(p, dtype) for p in (w1, w2, b2, w3))

    def g(u):
      hidden = jax.nn.sigmoid(jax.nn.softplus(w2) * (2.0 * u[..., None] - 1.0) + b2)  # [..., K]
      return jax.nn.softplus(w1) * u + jnp.mean(jax.nn.softplus(w3) * hidden, axis=-1)

    g0, g1 = g(jnp.zeros((), dtype)), g(jnp.ones((), dtype))
    fraction = (g(t) - g0) / (g1 - g0)  # in [0, 1], 0 at t = 0 and 1 at t = 1
    if not self.learn_endpoints:
      return self.logsnr_max + (self.logsnr_min - self.logsnr_max) * fraction
    excess = self.logsnr_max - self.logsnr_min - MIN_LOGSNR_RANGE
    if not excess > 0:
      raise ValueError(f'Need logsnr_max - logsnr_min > {MIN_LOGSNR_RANGE}, got '
                       f'{self.logsnr_max} - {self.logsnr_min}.')
    # The initial gamma_1 parameter: floor + softplus^-1(excess), where softplus^-1(r) =
    # r + log(-expm1(-r)) (exact for large r, where log(expm1(r)) overflows).
    init_1 = -self.logsnr_max + MIN_LOGSNR_RANGE + excess + np.log(-np.expm1(-excess))
    gamma_0 = self.param('gamma_0', nn.initializers.constant(-self.logsnr_max), ())
    gamma_1 = self.param('gamma_1', nn.initializers.constant(init_1), ())
    gamma_0, gamma_1 = jnp.asarray(gamma_0, dtype), jnp.asarray(gamma_1, dtype)
    floor = gamma_0 + MIN_LOGSNR_RANGE
    gamma_1 = floor + jax.nn.softplus(gamma_1 - floor)  # = the parameter, unless near the floor
    return -gamma_0 - (gamma_1 - gamma_0) * fraction


def make_schedule(name: str, **kwargs) -> nn.Module:
  """Schedule by name: 'cosine' -> CosineSchedule(**kwargs), 'linear' -> LinearBetaSchedule,
  'betas' -> BetaSchedule, 'learned' -> LearnedSchedule."""
  classes = {'cosine': CosineSchedule, 'linear': LinearBetaSchedule, 'betas': BetaSchedule,
             'learned': LearnedSchedule}
  if name not in classes:
    raise ValueError(f'Unknown schedule {name!r}; allowed values: {SCHEDULES}.')
  return classes[name](**kwargs)

"""Tests of vdm_jax.schedules: endpoints, monotonicity, the DDPM chain, names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax import schedules




def test_alpha_sigma_is_variance_preserving(x64):
  logsnr = jnp.linspace(-20.0, 20.0, 101, dtype=jnp.float64)
  alpha, sigma = schedules.alpha_sigma(logsnr)
  np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, rtol=1e-14)
  np.testing.assert_allclose(jnp.log(alpha**2 / sigma**2), logsnr, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('logsnr_min, logsnr_max', [(-20.0, 20.0), (-10.0, 5.0)])
def test_cosine_endpoints(x64, logsnr_min, logsnr_max):
  schedule = schedules.CosineSchedule(logsnr_min=logsnr_min, logsnr_max=logsnr_max)
  ends = schedule.apply({}, jnp.array([0.0, 1.0], jnp.float64))
  np.testing.assert_allclose(ends, [logsnr_max, logsnr_min], rtol=1e-10)
  ends32 = schedule.apply({}, jnp.array([0.0, 1.0], jnp.float32))
  assert ends32.dtype == jnp.float32
  np.testing.assert_allclose(ends32, [logsnr_max, logsnr_min], atol=2e-2)


def test_cosine_is_the_cosine_schedule(x64):
  """Symmetric truncation puts lambda(1/2) = 0; a wide range gives alpha^2 = cos^2(pi t / 2)
  (Nichol & Dhariwal 2021 with offset 0)."""
  half = schedules.CosineSchedule(logsnr_min=-20.0, logsnr_max=20.0).apply({}, jnp.float64(0.5))
  np.testing.assert_allclose(half, 0.0, atol=1e-10)
  t = jnp.linspace(0.05, 0.95, 19, dtype=jnp.float64)
  wide = schedules.CosineSchedule(logsnr_min=-60.0, logsnr_max=60.0)
  alpha, _ = schedules.alpha_sigma(wide.apply({}, t))
  np.testing.assert_allclose(alpha**2, np.cos(0.5 * np.pi * np.asarray(t))**2, rtol=1e-10)


_KWARGS = {'betas': dict(betas=tuple(np.linspace(1e-4, 0.02, 1000))), 'learned': dict(num_features=16)}


def _variables(schedule):
  if isinstance(schedule, schedules.LearnedSchedule):
    return schedule.init(jax.random.PRNGKey(0), jnp.zeros((1,)))
  return {}


@pytest.mark.parametrize('name', schedules.SCHEDULES)
def test_strictly_decreasing(name):
  schedule = schedules.make_schedule(name, **_KWARGS.get(name, {}))
  t = jnp.linspace(0.0, 1.0, 2001, dtype=jnp.float32)
  logsnr = jax.jit(schedule.logsnr_fn(_variables(schedule)))(t)
  assert logsnr.dtype == jnp.float32
  assert np.all(np.isfinite(logsnr))
  assert np.all(np.diff(np.asarray(logsnr)) < 0), 'log-SNR must strictly decrease in t'


def _ddpm_betas(num_steps=1000, beta_start=1e-4, beta_end=0.02):
  return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def test_linear_grid_is_discrete_ddpm_logsnr(x64):
  betas = _ddpm_betas()
  alpha_bar = np.cumprod(1.0 - betas)  # a product, independent of the module's log-cumsum
  schedule = schedules.LinearBetaSchedule()
  T = schedule.num_steps
  logsnr = schedule.apply({}, jnp.arange(1, T + 1, dtype=jnp.float64) / T)
  np.testing.assert_allclose(logsnr, np.log(alpha_bar / (1.0 - alpha_bar)), rtol=1e-9, atol=1e-9)
  # The documented choice at t = 0: 1 - alpha_bar_0 := beta_1 / 2.
  np.testing.assert_allclose(schedule.apply({}, jnp.float64(0.0)),
                             np.log((1.0 - betas[0] / 2) / (betas[0] / 2)), rtol=1e-12)
  # Linear interpolation between grid points, and t clipped to [0, 1].
  mid = schedule.apply({}, jnp.float64(10.5 / T))
  np.testing.assert_allclose(mid, 0.5 * (logsnr[9] + logsnr[10]), rtol=1e-9)
  np.testing.assert_allclose(schedule.apply({}, jnp.array([-0.5, 1.5])),
                             schedule.apply({}, jnp.array([0.0, 1.0])), rtol=1e-12)


def test_ddpm_chain_composed_step_by_step_equals_marginal(x64):
  """x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) eps_i composed from x_0 gives
  N(m_i x_0, v_i I); the schedule's marginal q(z_t | x) = N(alpha_t x, sigma_t^2 I) at t = i/T
  must have alpha_t = m_i and sigma_t^2 = v_i, and its transitions alpha_{t|s}, sigma_{t|s}^2 must
  be the DDPM ones."""
  T = 200
  betas = _ddpm_betas(T, 1e-4, 0.05)
  schedule = schedules.LinearBetaSchedule(num_steps=T, beta_start=1e-4, beta_end=0.05)
  alpha, sigma = schedules.alpha_sigma(schedule.apply({}, jnp.arange(T + 1, dtype=jnp.float64) / T))
  alpha, sigma = np.asarray(alpha), np.asarray(sigma)
  m, v = 1.0, 0.0  # x_0 is given: mean coefficient 1, variance 0
  for i in range(1, T + 1):
    m, v = np.sqrt(1.0 - betas[i - 1]) * m, (1.0 - betas[i - 1]) * v + betas[i - 1]
    np.testing.assert_allclose(alpha[i], m, rtol=1e-10)
    np.testing.assert_allclose(sigma[i]**2, v, rtol=1e-8)
  # Transitions between consecutive grid points (i >= 2: step 1 starts at the lambda_0 choice).
  alpha_ts = alpha[2:] / alpha[1:-1]
  sigma2_ts = sigma[2:]**2 - alpha_ts**2 * sigma[1:-1]**2
  np.testing.assert_allclose(alpha_ts, np.sqrt(1.0 - betas[1:]), rtol=1e-10)
  np.testing.assert_allclose(sigma2_ts, betas[1:], rtol=1e-6)


def test_make_schedule_names_and_kwargs():
  cosine = schedules.make_schedule('cosine', logsnr_min=-7.0, logsnr_max=3.0)
  assert isinstance(cosine, schedules.CosineSchedule) and cosine.logsnr_min == -7.0
  linear = schedules.make_schedule('linear', num_steps=10)
  assert isinstance(linear, schedules.LinearBetaSchedule) and linear.num_steps == 10
  assert isinstance(schedules.make_schedule('betas', betas=(0.1,)), schedules.BetaSchedule)
  assert isinstance(schedules.make_schedule('learned'), schedules.LearnedSchedule)
  with pytest.raises(ValueError, match="'cosine', 'linear', 'betas', 'learned'"):
    schedules.make_schedule('sigmoid')


@pytest.mark.parametrize('name', ['cosine', 'linear', 'betas'])
def test_no_parameters_apply_and_logsnr_fn_agree(name):
  schedule = schedules.make_schedule(name, **_KWARGS.get(name, {}))
  t = jnp.array([[0.0, 0.25, 0.5], [0.6, 0.9, 1.0]], jnp.float32)
  assert jax.tree_util.tree_leaves(schedule.init(jax.random.PRNGKey(0), t)) == []
  direct = schedule.apply({}, t)
  assert direct.shape == t.shape and direct.dtype == jnp.float32
  np.testing.assert_array_equal(schedule.logsnr_fn()(t), direct)
  # Low-precision times still give a float32 schedule.
  assert schedule.apply({}, t.astype(jnp.bfloat16)).dtype == jnp.float32


@pytest.mark.parametrize('shift', [-2 * np.log(4.0), 2 * np.log(2.0)])
def test_shifted_cosine_keeps_endpoints_and_shifts_the_interior(x64, shift):
  t = jnp.linspace(0.0, 1.0, 101, dtype=jnp.float64)
  shifted = np.asarray(schedules.CosineSchedule(-20.0, 20.0, shift).apply({}, t))
  np.testing.assert_allclose(shifted[[0, -1]], [20.0, -20.0], rtol=1e-10)
  assert np.all(np.diff(shifted) < 0)
  # Away from the truncation, lambda moves by exactly the shift at every t (simple diffusion).
  t = jnp.linspace(0.05, 0.95, 19, dtype=jnp.float64)
  plain = schedules.CosineSchedule(-60.0, 60.0).apply({}, t)
  moved = schedules.CosineSchedule(-60.0, 60.0, shift).apply({}, t)
  np.testing.assert_allclose(moved - plain, shift, atol=1e-9)


def test_resolution_shift_is_derived_from_the_data_resolution(x64):
  """diffusion.logsnr_shift_base_resolution = 64 at 128x128 data is the cosine shifted by
  2 log(64 / 128) = -1.386 (simple diffusion); at the base resolution, no shift; setting both
  shifts, or the rule on another schedule, is refused in one line naming the fields."""
  from experiments import moving_shapes  # pylint: disable=g-import-not-at-top
  from vdm_jax import config_validation, train  # pylint: disable=g-import-not-at-top
  from vdm_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  assert schedules.resolution_shift(base_resolution=64, resolution=128) == pytest.approx(-2 * np.log(2))
  config = moving_shapes.get_config('smoke')
  config.diffusion.logsnr_shift_base_resolution = 64
  t = jnp.linspace(0.0, 1.0, 33, dtype=jnp.float64)
  for resolution, shift in [(128, -2 * np.log(2)), (64, 0.0), (32, 2 * np.log(2))]:
    config.data.resolution = resolution
    assert train.logsnr_shift(config) == pytest.approx(shift)
    np.testing.assert_allclose(train.create_logsnr_fn(config)(t),
                               schedules.CosineSchedule(-20.0, 20.0, shift).apply({}, t), rtol=1e-12)
  config.diffusion.logsnr_shift = -1.0
  with pytest.raises(UserError, match='both set a shift'):
    config_validation.validate(config)
  config.diffusion.logsnr_shift = 0.0
  config.diffusion.schedule = 'linear'
  with pytest.raises(UserError, match='logsnr_shift_base_resolution shifts the cosine schedule'):
    config_validation.validate(config)


# ---------------------------------------------------------------- custom betas, zero terminal SNR


def _chain_marginals(betas):
  """(m_i, v_i), i = 1..T, of x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) eps_i composed from
  a given x_0 (mean coefficient 1, variance 0): q(x_i | x_0) = N(m_i x_0, v_i I)."""
  m, v, out = 1.0, 0.0, []
  for beta in betas:
    m, v = np.sqrt(1.0 - beta) * m, (1.0 - beta) * v + beta
    out.append((m, v))
  return np.array(out).T


def test_custom_betas_reproduce_the_ddpm_chain_marginals(x64):
  T = 40
  betas = np.sort(np.random.default_rng(0).uniform(1e-3, 0.3, T))
  schedule = schedules.BetaSchedule(betas=tuple(betas))
  alpha, sigma = schedules.alpha_sigma(schedule.apply({}, jnp.arange(T + 1, dtype=jnp.float64) / T))
  m, v = _chain_marginals(betas)
  np.testing.assert_allclose(alpha[1:], m, rtol=1e-10)
  np.testing.assert_allclose(sigma[1:]**2, v, rtol=1e-9)
  # The linear schedule is the case betas = linspace(beta_start, beta_end, T).
  linear = schedules.LinearBetaSchedule(num_steps=T, beta_start=1e-3, beta_end=0.3)
  as_betas = schedules.BetaSchedule(betas=tuple(np.linspace(1e-3, 0.3, T)))
  t = jnp.linspace(0.0, 1.0, 333, dtype=jnp.float64)
  np.testing.assert_array_equal(linear.apply({}, t), as_betas.apply({}, t))
  with pytest.raises(ValueError, match='betas in \\(0, 1\\)'):
    schedules.BetaSchedule(betas=(0.1, 1.0)).apply({}, t)


def _lin_et_al_algorithm_1(betas):
  """Lin et al. 2023, Algorithm 1, as written there (on sqrt(alpha_bar)); returns new betas."""
  alphas_bar_sqrt = np.sqrt(np.cumprod(1.0 - betas))
  first, last = alphas_bar_sqrt[0], alphas_bar_sqrt[-1]
  alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
  alphas_bar = alphas_bar_sqrt**2
  alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
  return 1.0 - alphas


def test_zero_terminal_snr_discrete_is_lin_et_al(x64):
  T = 1000
  betas = np.linspace(1e-4, 0.02, T)
  new_betas = _lin_et_al_algorithm_1(betas)
  assert new_betas[-1] == 1.0  # SNR 0 at step T
  zero = schedules.LinearBetaSchedule(zero_terminal_snr=True)
  logsnr = np.asarray(zero.apply({}, jnp.arange(T + 1, dtype=jnp.float64) / T))
  # Steps 1..T-1 are the chain of the rescaled betas; step T is the documented clamp.
  m, v = _chain_marginals(new_betas[:-1])
  alpha, sigma = schedules.alpha_sigma(logsnr[1:T])
  np.testing.assert_allclose(alpha, m, rtol=1e-8)
  np.testing.assert_allclose(sigma**2, v, rtol=1e-7)
  assert logsnr[T] == schedules.ZERO_SNR_LOGSNR
  plain = np.asarray(schedules.LinearBetaSchedule().apply({}, jnp.arange(2, dtype=jnp.float64) / T))
  np.testing.assert_allclose(logsnr[:2], plain, rtol=1e-12)  # lambda_0 and step 1 kept
  assert np.all(np.diff(logsnr) < 0)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.float64])
def test_zero_terminal_snr_cosine(x64, dtype):
  t = jnp.linspace(0.0, 1.0, 1001, dtype=dtype)
  plain = np.asarray(schedules.CosineSchedule().apply({}, t), np.float64)
  zero = np.asarray(schedules.CosineSchedule(zero_terminal_snr=True).apply({}, t), np.float64)
  assert zero.dtype == np.float64 and np.all(np.isfinite(zero))
  assert zero[-1] == schedules.ZERO_SNR_LOGSNR
  np.testing.assert_allclose(zero[0], 20.0, rtol=1e-6)
  assert np.all(np.diff(zero) < 0)
  # sqrt(alpha_bar) is mapped affinely: a' = a_0 (a - a_1) / (a_0 - a_1) (Lin et al. 2023).
  a = lambda l: np.sqrt(1.0 / (1.0 + np.exp(-l)))
  a0, a1 = a(20.0), a(-20.0)
  np.testing.assert_allclose(a(zero[1:-1]), a0 * (a(plain[1:-1]) - a1) / (a0 - a1),
                             rtol=1e-12 if dtype == jnp.float64 else 2e-5)


def test_zero_terminal_snr_gives_finite_losses_and_gradients():
  """At t = 1 (SNR 0, clamped) every parameterization and weighting stays finite, gradients too."""
  from vdm_jax import diffusion  # pylint: disable=g-import-not-at-top
  logsnr_fn = schedules.CosineSchedule(zero_terminal_snr=True).logsnr_fn()
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (3, 4, 4, 3)), jnp.float32)

  def losses(w):
    out = []
    for parameterization in diffusion.PARAMETERIZATIONS:
      terms = diffusion.denoising_terms(
          lambda z, logsnr: w * z, x, t=jnp.array([0.0, 0.5, 1.0]), noise=jnp.ones_like(x),
          logsnr_fn=logsnr_fn, parameterization=parameterization)
      for weighting in ('eps_mse', 'v_mse', 'vlb'):
        weight = diffusion.target_loss_weight_fn(weighting, parameterization=parameterization)
        out.append(jnp.mean(terms['mse_target'] * weight(terms['logsnr'], terms['dlogsnr_dt'])))
    return jnp.stack(out)

  values, grads = jax.jit(lambda w: (losses(w), jax.jacfwd(losses)(w)))(jnp.float32(0.5))
  assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads)), (values, grads)


# ---------------------------------------------------------------- learned schedule (VDM)

MU, S = 0.3, 0.5  # Gaussian data N(MU, S^2 I): the exact denoiser and its error are closed form.


def _gaussian_vlb_terms(logsnr, dlogsnr_dt, x, noise, bias):
  """Per-example VLB diffusion term of the exact posterior-mean denoiser (+ a scalar bias, the
  stand-in for network parameters): x, noise [B, D]; logsnr, dlogsnr_dt [B]."""
  from vdm_jax import diffusion  # pylint: disable=g-import-not-at-top
  alpha, sigma = schedules.alpha_sigma(logsnr[:, None])
  z = alpha * x + sigma * noise
  x_hat = MU + alpha * S**2 / (alpha**2 * S**2 + sigma**2) * (z - alpha * MU) + bias
  mse_x = jnp.mean(jnp.square(x - x_hat), axis=1)
  return diffusion.vlb_diffusion_term(mse_x=mse_x, logsnr=logsnr, dlogsnr_dt=dlogsnr_dt)


def _vlb_mean_and_variance_over_t(schedule, variables):
  """Mean and variance over t of E[L_vlb | t] for the exact denoiser (E ||x - x_hat||^2 / D =
  posterior variance S^2 sigma^2 / (alpha^2 S^2 + sigma^2)), over a fine midpoint grid of t."""
  from vdm_jax import diffusion  # pylint: disable=g-import-not-at-top
  t = (jnp.arange(2000) + 0.5) / 2000
  logsnr, slope = diffusion.logsnr_and_derivative(schedule.logsnr_fn(variables), t)
  alpha2, sigma2 = jax.nn.sigmoid(logsnr), jax.nn.sigmoid(-logsnr)
  terms = diffusion.vlb_diffusion_term(mse_x=S**2 * sigma2 / (alpha2 * S**2 + sigma2),
                                       logsnr=logsnr, dlogsnr_dt=slope)
  return jnp.mean(terms), jnp.var(terms)


def test_learned_schedule_trains_to_lower_vlb_variance_and_stays_monotone():
  import optax  # pylint: disable=g-import-not-at-top
  from vdm_jax import diffusion  # pylint: disable=g-import-not-at-top
  schedule = schedules.LearnedSchedule(logsnr_min=-10.0, logsnr_max=12.0, num_features=64)
  variables = jax.jit(schedule.init)(jax.random.PRNGKey(0), jnp.zeros((1,)))
  moments = jax.jit(lambda eta: _vlb_mean_and_variance_over_t(schedule, {'params': eta}))
  tx = optax.adam(0.05)
  B, D = 64, 8

  @jax.jit
  def step(eta, opt_state, bias, rng):
    rng_t, rng_x, rng_n = jax.random.split(rng, 3)
    t = diffusion.sample_time(rng_t, B, antithetic=True)
    x = MU + S * jax.random.normal(rng_x, (B, D))
    noise = jax.random.normal(rng_n, (B, D))

    def per_example(bias, eta):
      logsnr, slope = diffusion.logsnr_and_derivative(
          lambda u: schedule.apply({'params': eta}, u), t)
      vlb = _gaussian_vlb_terms(logsnr, slope, x, noise, bias)
      return (vlb, vlb), None

    _, _, grad_bias, grad_eta = diffusion.grads_with_learned_schedule(per_example, bias, eta)
    updates, opt_state = tx.update(grad_eta, opt_state, eta)
    return optax.apply_updates(eta, updates), opt_state, grad_bias

  eta = variables['params']
  opt_state = tx.init(eta)
  mean_before, var_before = moments(eta)
  for i in range(60):
    eta, opt_state, grad_bias = step(eta, opt_state, jnp.float32(0.0), jax.random.PRNGKey(i))
  assert np.isfinite(grad_bias)
  mean_after, var_after = moments(eta)
  changed = max(float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(jax.tree.leaves(eta), jax.tree.leaves(variables['params'])))
  assert changed > 0.1
  # The VLB is unchanged (it depends on the endpoints only), its variance much lower.
  np.testing.assert_allclose(mean_after, mean_before, rtol=2e-2)
  assert var_after < 0.6 * var_before, (var_before, var_after)  # measured: 24.7 -> 10.0
  t = jnp.linspace(0.0, 1.0, 4001)
  logsnr = np.asarray(schedule.apply({'params': eta}, t))
  np.testing.assert_allclose(logsnr[[0, -1]], [12.0, -10.0], atol=1e-5)
  assert np.all(np.diff(logsnr) < 0)

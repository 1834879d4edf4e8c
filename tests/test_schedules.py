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


@pytest.mark.parametrize('name', schedules.SCHEDULES)
def test_strictly_decreasing(name):
  schedule = schedules.make_schedule(name)
  t = jnp.linspace(0.0, 1.0, 2001, dtype=jnp.float32)
  logsnr = jax.jit(schedule.logsnr_fn())(t)
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
  with pytest.raises(ValueError, match="'cosine'.*'linear'"):
    schedules.make_schedule('sigmoid')


@pytest.mark.parametrize('name', schedules.SCHEDULES)
def test_no_parameters_apply_and_logsnr_fn_agree(name):
  schedule = schedules.make_schedule(name)
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

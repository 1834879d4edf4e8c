"""Tests of vdm_jax.samplers with exact denoisers of Gaussian data and of a mixture of Gaussians
(no training needed).

For data x ~ N(mu, s^2 I), z = alpha x + sigma eps, the optimal denoiser is closed form:
  E[x | z] = mu + k (z - alpha mu),  k = alpha s^2 / (alpha^2 s^2 + sigma^2).
Every sampler step is then affine in z plus Gaussian noise, so the exact mean and variance of a
sample after N steps follow from a scalar recursion (written below from the textbook formulas
with alpha_{t|s}, sigma_{t|s}, independently of the module's log-SNR form).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax import diffusion, samplers
from vdm_jax.schedules import CosineSchedule, LinearBetaSchedule, alpha_sigma

MU, S = 0.3, 0.5




def gaussian_denoiser(mu=MU, s=S):
  """Exact posterior mean E[x | z] for x ~ N(mu, s^2 I), and the consistent eps_hat."""

  def denoise_fn(z, logsnr):
    alpha, sigma = alpha_sigma(logsnr.reshape((-1,) + (1,) * (z.ndim - 1)))
    x_hat = mu + alpha * s**2 / (alpha**2 * s**2 + sigma**2) * (z - alpha * mu)
    return x_hat, diffusion.eps_from_x(z=z, x=x_hat, logsnr=logsnr)

  return denoise_fn


def reference_moments(sampler, logsnrs, *, mu=MU, s=S, eta=0.0, gamma=0.0,
                      delta=samplers.PC_DELTA):
  """Exact (mean, var) of one output element: logsnrs[i] = lambda(i / N), i = 0..N, float64.

  'pc' is the ancestral chain with, after every step but the last, the Langevin correction
  z <- z - (delta / 2) (z - alpha x_hat) + sqrt(delta) sigma noise (score -eps_hat / sigma)."""
  sig = lambda l: 1.0 / (1.0 + np.exp(-l))
  m, v = 0.0, 1.0  # z_1 ~ N(0, 1)
  N = len(logsnrs) - 1
  for i in range(N, 0, -1):
    a_t, s_t = np.sqrt(sig(logsnrs[i])), np.sqrt(sig(-logsnrs[i]))
    a_s, s_s = np.sqrt(sig(logsnrs[i - 1])), np.sqrt(sig(-logsnrs[i - 1]))
    k = a_t * s**2 / (a_t**2 * s**2 + s_t**2)  # x_hat = k z + (mu - k a_t mu)
    x_const = mu - k * a_t * mu
    if i == 1:
      return k * m + x_const, k * k * v
    a_ts = a_t / a_s
    s2_ts = s_t**2 - a_ts**2 * s_s**2
    s2_tilde = s2_ts * s_s**2 / s_t**2
    if sampler in ('ancestral', 'pc'):
      c_z, c_x = a_ts * s_s**2 / s_t**2, a_s * s2_ts / s_t**2
      noise_var = s2_tilde**(1 - gamma) * s2_ts**gamma
    else:  # z_s = a_s x_hat + e (z - a_t x_hat) / s_t + c noise
      noise_var = eta**2 * s2_tilde
      e = np.sqrt(s_s**2 - noise_var)
      c_z, c_x = e / s_t, a_s - e * a_t / s_t
    A, b = c_z + c_x * k, c_x * x_const
    m, v = A * m + b, A * A * v + noise_var
    if sampler == 'pc':  # x_hat = k_s z + x_const_s at the corrector's evaluation
      k_s = a_s * s**2 / (a_s**2 * s**2 + s_s**2)
      A, b = 1 - 0.5 * delta * (1 - a_s * k_s), 0.5 * delta * a_s * (mu - k_s * a_s * mu)
      m, v = A * m + b, A * A * v + delta * s_s**2


def _grid_logsnrs(schedule, N):
  return np.asarray(schedule.apply({}, np.arange(N + 1, dtype=np.float64) / N))


@pytest.mark.parametrize('gamma', [0.0, 0.3, 1.0])
def test_ancestral_step_is_the_textbook_posterior(x64, gamma):
  z, x_hat, noise = jnp.asarray(np.random.default_rng(0).standard_normal((3, 5, 7)))
  logsnr_t = jnp.array([-15.0, -3.0, 0.0, 2.0, 10.0])
  logsnr_s = logsnr_t + jnp.array([0.01, 1.0, 5.0, 0.5, 12.0])
  a_t, s_t = alpha_sigma(logsnr_t[:, None])
  a_s, s_s = alpha_sigma(logsnr_s[:, None])
  a_ts = a_t / a_s
  s2_ts = s_t**2 - a_ts**2 * s_s**2
  mu = a_ts * s_s**2 / s_t**2 * z + a_s * s2_ts / s_t**2 * x_hat
  std = jnp.sqrt((s2_ts * s_s**2 / s_t**2)**(1 - gamma) * s2_ts**gamma)
  got = samplers.ancestral_step(z, x_hat=x_hat, logsnr_t=logsnr_t, logsnr_s=logsnr_s,
                                noise=noise, gamma=gamma)
  np.testing.assert_allclose(got, mu + std * noise, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize('sampler, knob', [('ancestral', 0.0), ('ddim', 0.0), ('ddim', 0.5),
                                           ('ddim', 1.0)])
def test_step_with_true_x_preserves_the_marginal(x64, sampler, knob):
  """Given the true x (and eps_hat consistent with it), z_t ~ q(z_t | x) -> z_s ~ q(z_s | x):
  the step's coefficients c_z, c_x and noise std c_n satisfy c_z alpha_t + c_x = alpha_s and
  c_z^2 sigma_t^2 + c_n^2 = sigma_s^2."""
  logsnr_t = jnp.array([-12.0, -1.0, 0.5, 6.0])
  logsnr_s = logsnr_t + jnp.array([0.3, 2.0, 0.01, 8.0])
  a_t, s_t = alpha_sigma(logsnr_t)
  a_s, s_s = alpha_sigma(logsnr_s)

  def step(z, x, noise):
    z, x, noise = (jnp.full((4,), c, jnp.float64) for c in (z, x, noise))
    eps = diffusion.eps_from_x(z=z, x=x, logsnr=logsnr_t)
    if sampler == 'ancestral':
      return samplers.ancestral_step(z, x_hat=x, logsnr_t=logsnr_t, logsnr_s=logsnr_s,
                                     noise=noise, gamma=knob)
    return samplers.ddim_step(z, x_hat=x, eps_hat=eps, logsnr_t=logsnr_t, logsnr_s=logsnr_s,
                              noise=noise, eta=knob)

  c_z, c_x, c_n = step(1, 0, 0), step(0, 1, 0), step(0, 0, 1)
  np.testing.assert_allclose(c_z * a_t + c_x, a_s, rtol=1e-10)
  np.testing.assert_allclose(c_z**2 * s_t**2 + c_n**2, s_s**2, rtol=1e-9)


def _sampler_fn(denoise_fn, logsnr_fn, shape, num_steps, sampler, dtype, **kwargs):
  return jax.jit(functools.partial(samplers.sample, denoise_fn, shape=shape, logsnr_fn=logsnr_fn,
                                   num_steps=num_steps, sampler=sampler, dtype=dtype, **kwargs))


@pytest.mark.parametrize('sampler, schedule, num_steps', [
    ('ancestral', CosineSchedule(), 4),
    ('ddim', CosineSchedule(), 4),
    ('ancestral', CosineSchedule(), 500),
    ('ddim', CosineSchedule(), 500),
    ('ancestral', LinearBetaSchedule(), 1000),  # exactly DDPM's ancestral sampler (Ho et al. 2020)
])
def test_exact_denoiser_reproduces_the_data_distribution(x64, sampler, schedule, num_steps):
  """Empirical mean/std of 8192 samples match the exact discrete-chain moments within 5 standard
  errors; with many steps those moments are the data's (mu, s)."""
  shape = (1024, 8)
  sample_fn = _sampler_fn(gaussian_denoiser(), schedule.logsnr_fn(), shape, num_steps, sampler,
                          jnp.float64)
  x = np.asarray(sample_fn(rng=jax.random.PRNGKey(1)))
  assert np.all(np.isfinite(x))
  mean, var = reference_moments(sampler, _grid_logsnrs(schedule, num_steps))
  n = x.size
  assert abs(x.mean() - mean) < 5 * np.sqrt(var / n), (x.mean(), mean)
  assert abs(x.std() - np.sqrt(var)) < 5 * np.sqrt(var / (2 * n)), (x.std(), np.sqrt(var))
  if num_steps >= 100:
    np.testing.assert_allclose([mean, np.sqrt(var)], [MU, S], rtol=0.015)
    np.testing.assert_allclose([x.mean(), x.std()], [MU, S], rtol=0.04)
  else:  # few steps under-disperse Gaussian data, but not wildly
    assert 0.5 * S < np.sqrt(var) < S


def test_ddim_eta_one_equals_ancestral_gamma_zero():
  args = (gaussian_denoiser(), CosineSchedule().logsnr_fn(), (16, 3, 4, 4, 2), 10)
  rng = jax.random.PRNGKey(3)
  ddim_fn = _sampler_fn(*args, 'ddim', jnp.float32)  # eta is traced: one compile for both etas
  ddim = ddim_fn(rng=rng, eta=1.0)
  ancestral = _sampler_fn(*args, 'ancestral', jnp.float32, gamma=0.0)(rng=rng)
  assert ddim.dtype == jnp.float32
  np.testing.assert_allclose(ddim, ancestral, rtol=1e-4, atol=1e-4)
  deterministic = ddim_fn(rng=rng, eta=0.0)
  assert np.max(np.abs(deterministic - ddim)) > 0.1  # the noise matters when eta = 1


@pytest.mark.parametrize('sampler', samplers.SAMPLERS)
def test_sample_is_one_scan_of_nfe_evaluations_with_one_denoiser_trace(sampler):
  traces = []

  def denoise_fn(z, logsnr):
    traces.append(z.shape)
    return gaussian_denoiser()(z, logsnr)

  fn = functools.partial(samplers.sample, denoise_fn, shape=(2, 3), num_steps=7, sampler=sampler,
                         logsnr_fn=CosineSchedule().logsnr_fn())
  jaxpr = jax.make_jaxpr(fn)(rng=jax.random.PRNGKey(0))
  assert traces == [(2, 3)]  # one evaluation per scan iteration
  scans = [eqn for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == 'scan']
  assert len(scans) == 1 and scans[0].params['length'] == samplers.nfe(sampler, 7)
  assert samplers.nfe(sampler, 7) == (13 if sampler in ('pc', 'heun') else 7)
  for budget in (1, 2, 10, 11, 250):
    steps = samplers.steps_for_nfe(sampler, budget)
    assert samplers.nfe(sampler, steps) <= budget < samplers.nfe(sampler, steps + 1)


def test_few_steps_with_clipping_network_is_finite_and_in_range():
  # An untrained-looking eps network: x_hat = (z - sigma eps) / alpha is huge at t = 1.
  model_fn = lambda z, logsnr: 0.5 * z
  denoise_fn = samplers.model_denoiser(model_fn, parameterization='eps')
  for sampler in samplers.SAMPLERS:  # 2-D: a 5-D video shape takes twice as long to compile
    x = _sampler_fn(denoise_fn, CosineSchedule().logsnr_fn(), (4, 96), 3, sampler,
                    jnp.float32, gamma=0.3)(rng=jax.random.PRNGKey(0))
    assert x.shape == (4, 96)
    assert x.dtype == jnp.float32 and np.all(np.isfinite(x))
    assert np.all(np.abs(x) <= 1.0) and np.any(np.abs(x) == 1.0)


def test_unknown_sampler_is_rejected():
  with pytest.raises(ValueError, match="'ancestral'.*'ddim'"):
    samplers.sample(gaussian_denoiser(), rng=jax.random.PRNGKey(0), shape=(1, 2),
                    logsnr_fn=CosineSchedule().logsnr_fn(), num_steps=2, sampler='euler')


@pytest.mark.parametrize('parameterization', diffusion.PARAMETERIZATIONS)
def test_model_denoiser_clips_and_stays_consistent(x64, parameterization):
  z = jnp.linspace(-3.0, 3.0, 24, dtype=jnp.float64).reshape(4, 6)
  logsnr = jnp.array([-8.0, -1.0, 1.0, 6.0])
  model_fn = lambda z, logsnr: 2.0 * z + 0.1
  x_raw, _ = samplers.model_denoiser(model_fn, parameterization=parameterization,
                                     clip_x=False)(z, logsnr)
  x_hat, eps_hat = samplers.model_denoiser(model_fn, parameterization=parameterization)(z, logsnr)
  assert np.any(np.abs(x_raw) > 1.0)  # the test exercises the clip
  np.testing.assert_allclose(x_hat, np.clip(x_raw, -1.0, 1.0), rtol=1e-12)
  np.testing.assert_allclose(diffusion.q_sample(x_hat, logsnr=logsnr, noise=eps_hat), z,
                             rtol=1e-9, atol=1e-9)


def _cond_uncond_fn(calls):
  """Fake network on the doubled batch: conditional rows x = 0.8, unconditional rows x = 0.2."""

  def fn(z2, logsnr2):
    calls.append((z2.shape, logsnr2.shape))
    B = z2.shape[0] // 2
    x2 = jnp.concatenate([jnp.full_like(z2[:B], 0.8), jnp.full_like(z2[B:], 0.2)]) + 0.1 * z2
    return x2, diffusion.eps_from_x(z=z2, x=x2, logsnr=logsnr2)

  return fn


def test_cfg_one_call_on_doubled_batch_and_w_zero_is_conditional(x64):
  z = jnp.asarray(np.random.default_rng(0).standard_normal((3, 2, 4, 4, 1)))
  logsnr = jnp.array([-2.0, 0.0, 3.0])
  calls = []
  x_hat, eps_hat = samplers.classifier_free_guidance(_cond_uncond_fn(calls), guidance_weight=0.0,
                                                     clip_x=False)(z, logsnr)
  assert calls == [((6, 2, 4, 4, 1), (6,))]  # one network call, batch doubled
  x2, eps2 = _cond_uncond_fn([])(jnp.concatenate([z, z]), jnp.concatenate([logsnr, logsnr]))
  np.testing.assert_allclose(x_hat, x2[:3], rtol=1e-12)
  np.testing.assert_allclose(eps_hat, eps2[:3], rtol=1e-12)
  # With the default clip: the clipped conditional denoiser.
  x_clip, eps_clip = samplers.classifier_free_guidance(_cond_uncond_fn([]),
                                                       guidance_weight=0.0)(z, logsnr)
  cond = samplers.model_denoiser(lambda z, logsnr: _cond_uncond_fn([])(
      jnp.concatenate([z, z]), jnp.concatenate([logsnr, logsnr]))[1][:3], parameterization='eps')
  x_ref, eps_ref = cond(z, logsnr)
  np.testing.assert_allclose(x_clip, x_ref, rtol=1e-12)
  np.testing.assert_allclose(eps_clip, eps_ref, rtol=1e-10, atol=1e-12)


def test_cfg_formula_and_clip_after_guidance(x64):
  z = jnp.asarray(np.random.default_rng(1).standard_normal((3, 5)))
  logsnr = jnp.array([-2.0, 0.0, 3.0])
  w = 2.0
  x2, eps2 = _cond_uncond_fn([])(jnp.concatenate([z, z]), jnp.concatenate([logsnr, logsnr]))
  x_hat, eps_hat = samplers.classifier_free_guidance(_cond_uncond_fn([]), guidance_weight=w,
                                                     clip_x=False)(z, logsnr)
  np.testing.assert_allclose(eps_hat, (1 + w) * eps2[:3] - w * eps2[3:], rtol=1e-10)
  # x follows from the guided eps (the guidance is affine in eps for fixed z).
  np.testing.assert_allclose(x_hat, diffusion.x_from_eps(z=z, eps=eps_hat, logsnr=logsnr),
                             rtol=1e-9, atol=1e-9)
  # Guided x = 3 * 0.8 - 2 * 0.2 + 0.1 z = 2 + 0.1 z > 1 mostly: clipped after guidance (clipping
  # before would leave the components unchanged, as they lie within [-1, 1]).
  assert np.all(np.abs(x2) <= 1.0) and np.any(x_hat > 1.0)
  x_clip, eps_clip = samplers.classifier_free_guidance(_cond_uncond_fn([]),
                                                       guidance_weight=w)(z, logsnr)
  np.testing.assert_allclose(x_clip, np.clip(x_hat, -1.0, 1.0), rtol=1e-12)
  np.testing.assert_allclose(diffusion.q_sample(x_clip, logsnr=logsnr, noise=eps_clip), z,
                             rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- every sampler, exact denoisers
# Per dimension d, x_d ~ sum_k W[d, k] N(M[d, k], SD[d, k]^2): column 0 is the Gaussian N(MU, S^2)
# (two equal components), column 1 a two-component mixture with well separated modes.
W = np.array([[0.5, 0.5], [0.3, 0.7]])
M = np.array([[MU, MU], [-0.6, 0.4]])
SD = np.array([[S, S], [0.15, 0.2]])
NUM_SAMPLES = 16384
# (num_steps, time_spacing) of the distribution test: about 64 to 256 network evaluations.
DISTRIBUTION_RUNS = {'ancestral': (250, 'uniform_t'), 'pc': (125, 'uniform_t'),
                     'ddim': (256, 'karras'), 'dpmpp_2m': (64, 'karras'), 'heun': (64, 'karras')}
# Grid sizes of the order test; DDIM's reuse the distribution test's 256 (one compile fewer).
ORDER_STEPS = {'ddim': (32, 64, 256), 'dpmpp_2m': (16, 32, 64), 'heun': (16, 32, 64)}


def mixture_denoiser(z, logsnr):
  """Exact E[x | z] for the per-dimension mixture (W, M, SD), z [B, D]: with v_k = alpha^2 SD_k^2 +
  sigma^2, the responsibilities r_k = softmax_k(log W_k - log(v_k) / 2 - (z - alpha M_k)^2 / (2 v_k))
  weigh the component posterior means M_k + alpha SD_k^2 / v_k (z - alpha M_k)."""
  alpha, sigma = alpha_sigma(logsnr[:, None, None])
  var = alpha**2 * SD**2 + sigma**2
  resid = z[..., None] - alpha * M
  log_r = jnp.log(W) - 0.5 * jnp.log(var) - 0.5 * resid**2 / var
  x_hat = jnp.sum(jax.nn.softmax(log_r, axis=-1) * (M + alpha * SD**2 / var * resid), axis=-1)
  return x_hat, diffusion.eps_from_x(z=z, x=x_hat, logsnr=logsnr)


Z_INIT_KEY = jax.random.PRNGKey(7)


@functools.lru_cache(maxsize=None)
def _mixture_run(sampler, num_steps, time_spacing):
  """float64 samples [NUM_SAMPLES, 2] from the shared z_1; one compile per argument tuple."""
  assert jax.config.jax_enable_x64
  z_init = jax.random.normal(Z_INIT_KEY, (NUM_SAMPLES, 2), jnp.float64)
  fn = _sampler_fn(mixture_denoiser, CosineSchedule().logsnr_fn(), (NUM_SAMPLES, 2), num_steps,
                   sampler, jnp.float64, time_spacing=time_spacing)
  return np.asarray(fn(rng=jax.random.PRNGKey(11), z_init=z_init))


@pytest.mark.parametrize('sampler', samplers.SAMPLERS)
def test_every_sampler_reproduces_gaussian_and_mixture_data(x64, sampler):
  """16384 samples per column with DISTRIBUTION_RUNS' steps. Stated tolerance: mean within 0.025,
  std within 3% (about 5 standard errors each, with the discretisation bias of these step counts
  below 1.5%), the weight of the lower mode within 0.025 (5 binomial standard errors)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  x = _mixture_run(sampler, *DISTRIBUTION_RUNS[sampler])
  assert np.all(np.isfinite(x))
  mean = np.sum(W * M, axis=1)
  std = np.sqrt(np.sum(W * (SD**2 + M**2), axis=1) - mean**2)
  np.testing.assert_allclose(x.mean(axis=0), mean, atol=0.025)
  np.testing.assert_allclose(x.std(axis=0), std, rtol=0.03)
  # Mixture weights: the mass below the midpoint -0.1 of the modes (exact, tails included).
  lower = np.sum(W[1] * stats.norm.cdf(-0.1, M[1], SD[1]))
  assert abs(np.mean(x[:, 1] < -0.1) - lower) < 0.025, (np.mean(x[:, 1] < -0.1), lower)
  assert 0.25 < lower < 0.35


def _ode_error(sampler, num_steps):
  """max |x - x_ode| on the Gaussian column, x_ode the exact probability-flow ODE solution.

  For x ~ N(mu, s^2) the marginal of z at log-SNR lambda is N(alpha mu, alpha^2 s^2 + sigma^2),
  and the probability-flow ODE, linear in z, is the monotone affine map between these Gaussians:
  (z - alpha mu) / sqrt(alpha^2 s^2 + sigma^2) is constant along it. From z_1 at lambda_1:

    z_ode(lambda) = alpha mu + sqrt(alpha^2 s^2 + sigma^2) (z_1 - alpha_1 mu) / sqrt(alpha_1^2 s^2 + sigma_1^2),

  and at sigma = 0, x = mu + s (z_1 - alpha_1 mu) / sqrt(alpha_1^2 s^2 + sigma_1^2). Every sampler
  returns the denoiser's x_hat at its last grid point lambda_N (its common step to sigma = 0), so
  the solver's own error is measured against x_hat(z_ode(lambda_N), lambda_N).
  """
  x = _mixture_run(sampler, num_steps, 'karras')[:, 0]
  z_1 = np.asarray(jax.random.normal(Z_INIT_KEY, (NUM_SAMPLES, 2), jnp.float64))[:, 0]
  grid = np.asarray(samplers.logsnr_grid(CosineSchedule().logsnr_fn(), num_steps=num_steps,
                                         time_spacing='karras', dtype=jnp.float64))
  (a_1, s_1), (a_n, s_n) = alpha_sigma(grid[0]), alpha_sigma(grid[-1])
  z_n = a_n * MU + np.sqrt(a_n**2 * S**2 + s_n**2) * (z_1 - a_1 * MU) / np.sqrt(a_1**2 * S**2 + s_1**2)
  x_ode = MU + a_n * S**2 / (a_n**2 * S**2 + s_n**2) * (z_n - a_n * MU)
  return np.max(np.abs(x - x_ode))


@pytest.mark.parametrize('sampler, order', [('ddim', 1), ('dpmpp_2m', 2), ('heun', 2)])
def test_deterministic_samplers_converge_with_their_order(x64, sampler, order):
  """On Karras grids of ORDER_STEPS points, the error against the exact ODE solution falls as
  N^-order: the fitted log-log slope is within 0.3 of -1 (DDIM) or -2 (DPM-Solver++(2M), Heun),
  and at 64 points the second-order samplers are at least 5 times closer than DDIM."""
  steps = ORDER_STEPS[sampler]
  errors = [_ode_error(sampler, n) for n in steps]
  slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
  assert abs(slope + order) < 0.3, (slope, errors)
  if order == 2:
    assert errors[-1] < _ode_error('ddim', 64) / 5, errors


# ---------------------------------------------------------------- covariance, gamma, eta, networks
# x = (x_0, x_1, x_2): (x_0, x_1) ~ N(MU2, COV2) with correlation 0.6 and unequal variances, and,
# independent of them, x_2 ~ W3 N(M3, SD3^2), a two-mode mixture. Every component lies 4.5 or
# more of its standard deviations inside [-1, 1], so model_denoiser's clip leaves the samples
# unchanged (checked: test_network_of_every_parameterization_samples_the_data).
MU2 = np.array([0.1, -0.2])
COV2 = np.array([[0.2**2, 0.6 * 0.2 * 0.1], [0.6 * 0.2 * 0.1, 0.1**2]])
W3, M3, SD3 = np.array([0.3, 0.7]), np.array([-0.5, 0.35]), np.array([0.1, 0.13])
MODE_SPLIT = -0.075  # the midpoint of the mixture's modes
# Samples per run: a quarter of NUM_SAMPLES, so the runs cost 1/8 of what 16384 samples at
# twice the steps would, with the same ratio of bias to standard error.
CORRELATED_SAMPLES = 4096
# (num_steps, time_spacing): the discretisation bias of the covariance stays below 1 standard
# error at CORRELATED_SAMPLES (asserted below where closed form). The first-order samplers' bias
# falls as 1 / N, so at this sample size they need about 750 points (at 16384 samples, 1500;
# 2.7 standard errors at 500 for ancestral, gamma = 0, on COV2's small eigenvalue); 'karras' has
# the least bias per point here. dpmpp_2m and heun (second order, not checked below): 0.4
# standard errors at 64 points, measured from their maps of z_1, which are affine on the pair.
CORRELATED_RUNS = {'ancestral': (750, 'karras'), 'ddim': (750, 'karras'), 'pc': (375, 'karras'),
                   'dpmpp_2m': (64, 'karras'), 'heun': (64, 'karras')}
STOCHASTIC_KNOBS = {'ancestral': 'gamma', 'pc': 'gamma', 'ddim': 'eta'}


def correlated_denoiser(z, logsnr):
  """Exact E[x | z] for the data above, z [B, 3], logsnr [B]: for the Gaussian pair
  mu + alpha S (alpha^2 S + sigma^2 I)^-1 (z - alpha mu) (S = COV2), for x_2 the mixture's
  posterior mean as in mixture_denoiser."""
  alpha, sigma = alpha_sigma(logsnr[:, None])  # [B, 1]
  # The 2x2 solve by Cramer's rule: elementwise, where a batched jnp.linalg.solve costs more
  # than the rest of a sampler step on CPU.
  c00, c01, c11 = (alpha**2 * COV2[i, j] + sigma**2 * (i == j) for i, j in ((0, 0), (0, 1), (1, 1)))
  r = z[:, :2] - alpha * MU2
  solved = jnp.concatenate([c11 * r[:, :1] - c01 * r[:, 1:], c00 * r[:, 1:] - c01 * r[:, :1]],
                           axis=1) / (c00 * c11 - c01**2)
  x_pair = MU2 + alpha * solved @ COV2  # COV2 is symmetric: (S v)^T = v^T S
  var = alpha**2 * SD3**2 + sigma**2  # [B, 2]: per component
  resid = z[:, 2:] - alpha * M3
  log_r = jnp.log(W3) - 0.5 * jnp.log(var) - 0.5 * resid**2 / var
  x_mix = jnp.sum(jax.nn.softmax(log_r, axis=-1) * (M3 + alpha * SD3**2 / var * resid), axis=-1)
  x_hat = jnp.concatenate([x_pair, x_mix[:, None]], axis=1)
  return x_hat, diffusion.eps_from_x(z=z, x=x_hat, logsnr=logsnr)


def _as_network(parameterization):
  """correlated_denoiser as the output of a network of that parameterization: x_hat, eps_hat or
  v = alpha eps_hat - sigma x_hat (Salimans & Ho 2022)."""

  def network(z, logsnr):
    x_hat, eps_hat = correlated_denoiser(z, logsnr)
    if parameterization == 'x':
      return x_hat
    if parameterization == 'eps':
      return eps_hat
    return diffusion.v_from_x_eps(x=x_hat, eps=eps_hat, logsnr=logsnr)

  return network


def _correlated_moments():
  """The data's mean [3], covariance [3, 3], the standard deviation of one term of each sample
  covariance entry, sqrt(Var[(x_i - m_i)(x_j - m_j)]) [3, 3], and the mass below MODE_SPLIT."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  mix_mean = np.sum(W3 * M3)
  mix_var = np.sum(W3 * (SD3**2 + M3**2)) - mix_mean**2
  mean = np.append(MU2, mix_mean)
  cov = np.zeros((3, 3))
  cov[:2, :2], cov[2, 2] = COV2, mix_var
  # E[d_i^2 d_j^2], d = x - mean: Isserlis for the Gaussian pair (and C_ii C_jj for x_2 with
  # either of it, by independence); at [2, 2] the mixture's own fourth central moment.
  fourth = np.outer(np.diag(cov), np.diag(cov)) + 2 * cov**2
  d = M3 - mix_mean
  fourth[2, 2] = np.sum(W3 * (d**4 + 6 * d**2 * SD3**2 + 3 * SD3**4))
  lower = np.sum(W3 * stats.norm.cdf(MODE_SPLIT, M3, SD3))
  return mean, cov, np.sqrt(fourth - cov**2), lower


@functools.lru_cache(maxsize=None)
def _correlated_run(sampler, knob=0.0, parameterization=None):
  """float64 samples [CORRELATED_SAMPLES, 3] with CORRELATED_RUNS' steps; knob: gamma (ancestral, pc)
  or eta (ddim), passed traced so that every knob shares one compiled computation.
  parameterization: sample through model_denoiser(_as_network(parameterization)), as a trained
  network is sampled, instead of with correlated_denoiser itself."""
  assert jax.config.jax_enable_x64
  num_steps, time_spacing = CORRELATED_RUNS[sampler]
  denoise_fn = correlated_denoiser
  if parameterization is not None:
    denoise_fn = samplers.model_denoiser(_as_network(parameterization),
                                         parameterization=parameterization)
  fn = _sampler_fn(denoise_fn, CosineSchedule().logsnr_fn(), (CORRELATED_SAMPLES, 3), num_steps,
                   sampler, jnp.float64, time_spacing=time_spacing)
  knobs = {STOCHASTIC_KNOBS[sampler]: knob} if sampler in STOCHASTIC_KNOBS else {}
  return np.asarray(fn(rng=jax.random.PRNGKey(12), **knobs))


def _assert_correlated_data(x):
  """x [n, 3] has the data's mean, full covariance and lower-mode weight. Stated tolerance: 6
  standard errors of each statistic at this n (its one-sample standard deviation / sqrt(n)),
  5 for the sampling error and 1 for the discretisation bias (CORRELATED_RUNS). At n = 4096:
  means within 0.094 of each standard deviation; variances within 13% (Gaussian) and 9%
  (mixture); the pair's covariance within 18%, i.e. its correlation 0.6 within 0.11; the
  independent pairs' within 0.094 in correlation units; the lower mode's weight 0.30 within
  0.044."""
  mean, cov, cov_term_std, lower = _correlated_moments()
  n = x.shape[0]
  assert np.all(np.isfinite(x))
  np.testing.assert_array_less(np.abs(x.mean(axis=0) - mean), 6 * np.sqrt(np.diag(cov) / n))
  np.testing.assert_array_less(np.abs(np.cov(x, rowvar=False) - cov), 6 * cov_term_std / np.sqrt(n))
  assert abs(np.mean(x[:, 2] < MODE_SPLIT) - lower) < 6 * np.sqrt(lower * (1 - lower) / n), (
      np.mean(x[:, 2] < MODE_SPLIT), lower)


def _chain_moments(sampler, knob):
  """Exact (mean [2], covariance [2, 2]) of the Gaussian pair after an ancestral, ddim or pc run
  of CORRELATED_RUNS' grid: in the eigenbasis of COV2 the denoiser and the isotropic noise act
  per coordinate, so the pair's chain is two scalar chains of reference_moments (a route
  independent of the Cramer solve in correlated_denoiser)."""
  num_steps, time_spacing = CORRELATED_RUNS[sampler]
  grid = np.asarray(samplers.logsnr_grid(CosineSchedule().logsnr_fn(), num_steps=num_steps,
                                         time_spacing=time_spacing, dtype=jnp.float64))
  logsnrs = np.concatenate([[np.inf], grid[::-1]])  # reference_moments' order; [0] is unused
  evals, evecs = np.linalg.eigh(COV2)
  moments = [reference_moments(sampler, logsnrs, mu=m, s=np.sqrt(e),
                               **{STOCHASTIC_KNOBS[sampler]: knob})
             for m, e in zip(evecs.T @ MU2, evals)]
  m, v = np.array(moments).T
  return evecs @ m, evecs @ np.diag(v) @ evecs.T


@pytest.mark.parametrize('sampler, knob', [
    ('ancestral', 0.0), ('ancestral', 0.3), ('ancestral', 1.0), ('ddim', 0.0), ('ddim', 0.5),
    ('ddim', 1.0), ('pc', 0.0), ('dpmpp_2m', 0.0), ('heun', 0.0)])
def test_every_sampler_reproduces_the_full_covariance(x64, sampler, knob):
  """With the exact denoiser, every sampler, the stochastic ones at several gamma (ancestral)
  and eta (ddim), reproduces the mean, the full covariance (the pair's correlation, the mixture's
  independence) and the mixture weights of the data (tolerance: _assert_correlated_data)."""
  x = _correlated_run(sampler, knob)
  _assert_correlated_data(x)
  if sampler in STOCHASTIC_KNOBS:
    # The tolerance allows 1 standard error of discretisation bias: check it in closed form.
    n = x.shape[0]
    _, _, cov_term_std, _ = _correlated_moments()
    chain_mean, chain_cov = _chain_moments(sampler, knob)
    np.testing.assert_array_less(np.abs(chain_mean - MU2), np.sqrt(np.diag(COV2) / n))
    np.testing.assert_array_less(np.abs(chain_cov - COV2), cov_term_std[:2, :2] / np.sqrt(n))
  if knob:
    assert np.max(np.abs(x - _correlated_run(sampler, 0.0))) > 0.1  # the knob reached the run


# One sampler suffices: model_denoiser is the same for every sampler (dpmpp_2m: 128 steps, ~1 s).
@pytest.mark.parametrize('sampler', ['dpmpp_2m'])
@pytest.mark.parametrize('parameterization', diffusion.PARAMETERIZATIONS)
def test_network_of_every_parameterization_samples_the_data(x64, parameterization, sampler):
  """The exact denoiser as an eps-, x- or v-predicting network, wrapped by model_denoiser (its
  default clip included) as a trained network is: a whole run reproduces the data (mean, full
  covariance, mixture weights; tolerance: _assert_correlated_data) and equals, up to float64
  round-off, the run of the denoiser itself from the same key."""
  x = _correlated_run(sampler, 0.0, parameterization)
  _assert_correlated_data(x)
  np.testing.assert_allclose(x, _correlated_run(sampler, 0.0), rtol=0, atol=1e-9)


# ---------------------------------------------------------------- grids, steps, thresholding


def test_logsnr_grids(x64):
  logsnr_fn = CosineSchedule().logsnr_fn()
  N = 5
  grid = lambda spacing, fn=logsnr_fn: np.asarray(samplers.logsnr_grid(
      fn, num_steps=N, time_spacing=spacing, dtype=jnp.float64))
  t = np.arange(N, 0, -1) / N  # 1, 4/5, ..., 1/5
  np.testing.assert_allclose(grid('uniform_t'), logsnr_fn(jnp.asarray(t)), rtol=1e-12)
  np.testing.assert_allclose(grid('trailing'), grid('uniform_t'), rtol=1e-12)
  np.testing.assert_allclose(grid('uniform_logsnr'), -20.0 + 40.0 * np.arange(N) / N, rtol=1e-12)
  # EDM's sigma range (80 .. 0.002) lies within the cosine's (e^10 .. e^-10): both ends, and
  # sigma^(1/7) equally spaced in between.
  sigma = np.exp(-grid('karras') / 2)
  np.testing.assert_allclose(sigma[[0, -1]], [80.0, 0.002], rtol=1e-12)
  np.testing.assert_allclose(np.diff(sigma ** (1 / 7)), (0.002 ** (1 / 7) - 80 ** (1 / 7)) / (N - 1),
                             rtol=1e-10)
  # A narrower schedule clips EDM's range to its own ends.
  narrow = CosineSchedule(logsnr_min=-5.0, logsnr_max=5.0).logsnr_fn()
  np.testing.assert_allclose(grid('karras', narrow)[[0, -1]], [-5.0, 5.0], rtol=1e-12)
  for spacing in samplers.TIME_SPACINGS[1:]:
    assert np.all(np.diff(grid(spacing)) > 0), spacing
  with pytest.raises(ValueError, match="'uniform_t'.*'karras'"):
    samplers.sample(gaussian_denoiser(), rng=jax.random.PRNGKey(0), shape=(1, 2), logsnr_fn=logsnr_fn,
                    num_steps=2, time_spacing='cosine')


def test_dpmpp_heun_and_corrector_steps_by_hand(x64):
  rng = np.random.default_rng(2)
  z, x_hat, x_prev, eps_t, eps_s, noise = (jnp.asarray(rng.standard_normal((3, 4)))
                                           for _ in range(6))
  l_prev, l_t, l_s = jnp.array([-6.0, -1.0, 2.0]), jnp.array([-4.0, 0.0, 3.0]), jnp.array([-1.0, 1.5, 3.2])
  eps_hat = diffusion.eps_from_x(z=z, x=x_hat, logsnr=l_t)
  (a_t, s_t), (a_s, s_s) = alpha_sigma(l_t[:, None]), alpha_sigma(l_s[:, None])
  ddim = samplers.ddim_step(z, x_hat=x_hat, eps_hat=eps_hat, logsnr_t=l_t, logsnr_s=l_s,
                            noise=noise)
  # DPM-Solver++(2M), Lu et al. 2022 Algorithm 2, with lambda_DPM = log(alpha / sigma).
  lam = lambda l: np.log(alpha_sigma(l[:, None])[0] / alpha_sigma(l[:, None])[1])
  h, h_prev = lam(l_s) - lam(l_t), lam(l_t) - lam(l_prev)
  D = (1 + h / (2 * h_prev)) * x_hat - h / (2 * h_prev) * x_prev
  want = s_s / s_t * z - a_s * (np.exp(-h) - 1) * D
  got = samplers.dpmpp_2m_step(z, x_hat=x_hat, x_hat_prev=x_prev, logsnr_prev=l_prev, logsnr_t=l_t,
                               logsnr_s=l_s)
  np.testing.assert_allclose(got, want, rtol=1e-10)
  first = samplers.dpmpp_2m_step(z, x_hat=x_hat, x_hat_prev=x_prev, logsnr_prev=l_prev,
                                 logsnr_t=l_t, logsnr_s=l_s, first_order=True)
  np.testing.assert_allclose(first, ddim, rtol=1e-10)  # the first-order step is DDIM
  # Heun (Karras et al. 2022, Algorithm 1) in x_edm = z / alpha, sigma_edm = sigma / alpha.
  x_edm, se_t, se_s = z / a_t, s_t / a_t, s_s / a_s
  want = a_s * (x_edm + (se_s - se_t) * (eps_hat + eps_s) / 2)
  got = samplers.heun_step(x_hat_t=x_hat, eps_hat_t=eps_hat, eps_hat_s=eps_s, logsnr_t=l_t,
                           logsnr_s=l_s)
  np.testing.assert_allclose(got, want, rtol=1e-10)
  euler = samplers.heun_step(x_hat_t=x_hat, eps_hat_t=eps_hat, eps_hat_s=eps_hat, logsnr_t=l_t,
                             logsnr_s=l_s)
  np.testing.assert_allclose(euler, ddim, rtol=1e-10)
  # Langevin corrector: score = -eps / sigma, step size delta sigma^2.
  got = samplers.langevin_corrector_step(z, eps_hat=eps_s, logsnr_s=l_s, noise=noise, delta=0.1)
  step = 0.1 * s_s**2
  np.testing.assert_allclose(got, z + step / 2 * (-eps_s / s_s) + np.sqrt(step) * noise, rtol=1e-10)


def test_dynamic_threshold_formula(x64):
  x = jnp.array([[0.0, 1.0, -2.0, 3.0, -4.0],    # |x| sorted 0 1 2 3 4: 75th percentile 3
                 [0.1, -0.5, 0.2, 0.9, -0.3],    # within [-1, 1]: s = max(1, .) = 1, unchanged
                 [1.5, -1.2, 0.0, 0.5, 1.1]])    # |x| 0 .5 1.1 1.2 1.5: 75th percentile 1.2
  got = samplers.dynamic_threshold(x, percentile=0.75)
  want = [[0.0, 1 / 3, -2 / 3, 1.0, -1.0], [0.1, -0.5, 0.2, 0.9, -0.3],
          [1.0, -1.0, 0.0, 0.5 / 1.2, 1.1 / 1.2]]
  np.testing.assert_allclose(got, want, rtol=1e-12)
  y = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4, 4)) * 3.0)
  s = np.maximum(1.0, np.quantile(np.abs(np.asarray(y)).reshape(2, -1), 0.995, axis=1))[:, None, None, None]
  np.testing.assert_allclose(samplers.dynamic_threshold(y, percentile=0.995),
                             np.clip(y, -s, s) / s, rtol=1e-12)


def test_cfg_dynamic_threshold_after_guidance(x64):
  z = jnp.asarray(np.random.default_rng(1).standard_normal((3, 5)))
  logsnr = jnp.array([-2.0, 0.0, 3.0])
  x_hat, _ = samplers.classifier_free_guidance(_cond_uncond_fn([]), guidance_weight=2.0,
                                               clip_x=False)(z, logsnr)
  x_thr, eps_thr = samplers.classifier_free_guidance(
      _cond_uncond_fn([]), guidance_weight=2.0, dynamic_threshold_percentile=0.9)(z, logsnr)
  np.testing.assert_allclose(x_thr, samplers.dynamic_threshold(x_hat, percentile=0.9), rtol=1e-12)
  assert np.all(np.abs(x_thr) <= 1.0) and np.any(np.abs(x_thr - np.clip(x_hat, -1, 1)) > 0.05)
  np.testing.assert_allclose(diffusion.q_sample(x_thr, logsnr=logsnr, noise=eps_thr), z,
                             rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- benchmarks/samplers.py helpers


def test_benchmark_frechet_distance_and_features():
  from benchmarks import samplers as bench  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  a = rng.standard_normal((20000, 3))
  b = 2.0 * rng.standard_normal((20000, 3)) + np.array([1.0, 0.0, -1.0])
  # N(0, I) vs N(m, 4 I) in 3 dims: |m|^2 + 3 (1 + 4 - 2 * 2) = 2 + 3.
  np.testing.assert_allclose(bench.frechet_distance(a, b), 5.0, rtol=0.05)
  assert bench.frechet_distance(a, a) < 1e-6
  video = np.zeros((2, 8, 4, 4, 3), np.uint8)
  video[0, ..., 0] = 255  # all red
  video[1, ::2, :2, :2, 2] = 255  # blue in one quadrant, every other frame
  f = bench.video_features(video)
  assert f.shape == (2, 63)
  np.testing.assert_allclose(f[0, :12], [0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0])  # histograms
  np.testing.assert_allclose(f[0, 12:60].reshape(4, 2, 2, 3)[..., 0], 1.0)  # pooled red
  np.testing.assert_allclose(f[1, 12:60].reshape(4, 2, 2, 3)[:, 0, 0, 2], 0.5)
  np.testing.assert_allclose(f[1, 12:60].reshape(4, 2, 2, 3)[:, 1, 1, 2], 0.0)
  np.testing.assert_allclose(f[:, 60:], [[0, 0, 0], [0, 0, 0.25]])  # |frame difference|

"""Tests of vdm_jax.diffusion: forward process, conversions, loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax import diffusion
from vdm_jax.schedules import CosineSchedule




def _video_x_eps_logsnr(dtype, B=6, shape=(3, 4, 4, 2), seed=0):
  """x [B, T, H, W, C] in [-1, 1], eps, and logsnr [B] spanning [-20, 20]."""
  gen = np.random.default_rng(seed)  # numpy: no per-op compiles for test data
  x = jnp.asarray(gen.uniform(-1.0, 1.0, (B, *shape)), dtype)
  eps = jnp.asarray(gen.standard_normal((B, *shape)), dtype)
  logsnr = jnp.asarray(np.linspace(-20.0, 20.0, B), dtype)
  return x, eps, logsnr


def test_q_sample_uses_each_examples_logsnr(x64):
  x, eps, logsnr = _video_x_eps_logsnr(jnp.float64)
  z = np.asarray(diffusion.q_sample(x, logsnr=logsnr, noise=eps))
  x, eps, logsnr = np.asarray(x), np.asarray(eps), np.asarray(logsnr)
  for b in range(x.shape[0]):
    a = 1.0 / np.sqrt(1.0 + np.exp(-logsnr[b]))
    s = 1.0 / np.sqrt(1.0 + np.exp(logsnr[b]))
    np.testing.assert_allclose(z[b], a * x[b] + s * eps[b], rtol=1e-12, atol=1e-14)


def test_conversions_invert_each_other(x64):
  x, eps, logsnr = _video_x_eps_logsnr(jnp.float64)
  z = diffusion.q_sample(x, logsnr=logsnr, noise=eps)
  v = diffusion.v_from_x_eps(x=x, eps=eps, logsnr=logsnr)
  tol = dict(rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(diffusion.x_from_eps(z=z, eps=eps, logsnr=logsnr), x, **tol)
  np.testing.assert_allclose(diffusion.eps_from_x(z=z, x=x, logsnr=logsnr), eps, **tol)
  np.testing.assert_allclose(diffusion.x_from_v(z=z, v=v, logsnr=logsnr), x, **tol)
  np.testing.assert_allclose(diffusion.eps_from_v(z=z, v=v, logsnr=logsnr), eps, **tol)
  # v is a rotation of (x, eps) by phi with alpha = cos phi: ||v||^2 + ||z||^2 = ||x||^2 + ||eps||^2.
  np.testing.assert_allclose(v**2 + z**2, x**2 + eps**2, rtol=1e-10)


@pytest.mark.parametrize('parameterization', diffusion.PARAMETERIZATIONS)
def test_predict_x_eps_from_true_target(x64, parameterization):
  x, eps, logsnr = _video_x_eps_logsnr(jnp.float64)
  z = diffusion.q_sample(x, logsnr=logsnr, noise=eps)
  target = {'eps': eps, 'x': x,
            'v': diffusion.v_from_x_eps(x=x, eps=eps, logsnr=logsnr)}[parameterization]
  x_hat, eps_hat = diffusion.predict_x_eps(target, z=z, logsnr=logsnr,
                                           parameterization=parameterization)
  np.testing.assert_allclose(x_hat, x, rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(eps_hat, eps, rtol=1e-9, atol=1e-9)


def test_unknown_parameterization_is_rejected():
  with pytest.raises(ValueError, match="'eps', 'x', 'v'"):
    diffusion.predict_x_eps(jnp.zeros((1, 2)), z=jnp.zeros((1, 2)), logsnr=jnp.zeros((1,)),
                            parameterization='x0')


def _oracle_model(x, parameterization, offset=0.0):
  """The perfect network for known data x: recovers eps from z, returns the target (+ offset)."""

  def model_fn(z, logsnr):
    eps = diffusion.eps_from_x(z=z, x=x, logsnr=logsnr)
    if parameterization == 'eps':
      return eps + offset
    if parameterization == 'x':
      return x + offset
    return diffusion.v_from_x_eps(x=x, eps=eps, logsnr=logsnr) + offset

  return model_fn


@pytest.mark.parametrize('parameterization', diffusion.PARAMETERIZATIONS)
def test_loss_zero_for_oracle_and_one_for_zero_model(x64, parameterization):
  logsnr_fn = CosineSchedule().logsnr_fn()
  x = jnp.asarray(np.random.default_rng(1).choice([-1.0, 1.0], (64, 4, 4, 4, 1)))  # x^2 = 1, so E v^2 = alpha^2 + sigma^2 = 1 as E eps^2 = 1

  @jax.jit
  def losses(rng):
    oracle = diffusion.diffusion_loss(_oracle_model(x, parameterization), x, rng=rng,
                                      logsnr_fn=logsnr_fn, parameterization=parameterization)
    zero = diffusion.diffusion_loss(lambda z, logsnr: jnp.zeros_like(z), x, rng=rng,
                                    logsnr_fn=logsnr_fn, parameterization=parameterization)
    return oracle, zero

  (loss, metrics), (zero_loss, _) = losses(jax.random.PRNGKey(2))
  assert loss < 1e-12 and metrics['mse_x'] < 1e-12 and metrics['mse_eps'] < 1e-12
  np.testing.assert_array_equal(metrics['loss'], loss)
  np.testing.assert_allclose(zero_loss, 1.0, atol=0.1)


def test_t_is_uniform_per_example():
  seen = []

  def model_fn(z, logsnr):
    seen.append(logsnr)
    return jnp.zeros_like(z)

  # Identity "schedule": the model sees t itself.
  diffusion.diffusion_loss(model_fn, jnp.zeros((512, 2)), rng=jax.random.PRNGKey(0),
                           logsnr_fn=lambda t: t, parameterization='eps')
  (t,) = seen
  t = np.asarray(t)
  assert t.shape == (512,) and t.dtype == np.float32
  assert np.all((t >= 0) & (t <= 1)) and len(np.unique(t)) == 512
  assert abs(t.mean() - 0.5) < 5 * np.sqrt(1 / 12 / 512)  # 5 standard errors
  assert abs(t.var() - 1 / 12) < 0.015


def test_loss_weighting_hook(x64):
  x = jnp.linspace(-1.0, 1.0, 8 * 6, dtype=jnp.float64).reshape(8, 6)
  c = jnp.linspace(0.1, 0.8, 8, dtype=jnp.float64)[:, None]  # example b is off by c_b everywhere
  logsnr_fn = CosineSchedule().logsnr_fn()
  weights = []

  def weighting(logsnr, dlogsnr_dt):
    del dlogsnr_dt
    weights.append(jax.nn.sigmoid(logsnr) + 0.5)
    return weights[-1]

  loss, _ = diffusion.diffusion_loss(_oracle_model(x, 'v', offset=c), x, rng=jax.random.PRNGKey(3),
                                     logsnr_fn=logsnr_fn, parameterization='v',
                                     loss_weighting=weighting)
  # Each example's MSE is c_b^2, weighted by its own w_b.
  np.testing.assert_allclose(loss, np.mean(c[:, 0]**2 * weights[0]), rtol=1e-10)
  assert not np.isclose(loss, np.mean(c**2) * np.mean(weights[0]), rtol=1e-3)
  unweighted, _ = diffusion.diffusion_loss(_oracle_model(x, 'v', offset=c), x,
                                           rng=jax.random.PRNGKey(3), logsnr_fn=logsnr_fn,
                                           parameterization='v')
  np.testing.assert_allclose(unweighted, np.mean(c**2), rtol=1e-10)


def test_loss_float32_for_bfloat16_model_and_differentiable():
  x = jnp.asarray(np.random.default_rng(0).uniform(-1.0, 1.0, (4, 2, 4, 4, 3)), jnp.float32)
  logsnr_fn = CosineSchedule().logsnr_fn()

  def loss_fn(w):
    model_fn = lambda z, logsnr: (z.astype(jnp.bfloat16) * w.astype(jnp.bfloat16))
    return diffusion.diffusion_loss(model_fn, x, rng=jax.random.PRNGKey(1), logsnr_fn=logsnr_fn,
                                    parameterization='eps')

  (loss, metrics), grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(jnp.float32(0.0))
  assert loss.dtype == jnp.float32 and all(m.dtype == jnp.float32 for m in metrics.values())
  assert np.isfinite(loss) and np.isfinite(grad) and grad != 0
  # d/dw mean (w z - eps)^2 at w = 0 is -2 mean(z eps), about -2 E[sigma] < 0 (z = alpha x + sigma eps).
  assert grad < 0


@pytest.mark.parametrize('parameterization', diffusion.PARAMETERIZATIONS)
@pytest.mark.parametrize('loss_weighting', diffusion.LOSS_WEIGHTINGS)
def test_named_loss_weightings_are_x_space_weights(x64, parameterization, loss_weighting):
  """Whatever the network predicts, the loss is E_b[w(SNR_b) ||x_b - x_hat_b||^2] with w from the
  closed forms of LOSS_WEIGHTINGS (x_hat derived from a deliberately wrong network output)."""
  x, _, _ = _video_x_eps_logsnr(jnp.float64, B=16)
  logsnr_fn = CosineSchedule().logsnr_fn()
  gamma = 5.0
  seen = {}

  def model_fn(z, logsnr):  # Any output works: the identity is exact, not a property of the oracle.
    seen['z'], seen['logsnr'] = z, logsnr
    return 0.3 * z + 0.1

  weight = diffusion.target_loss_weight_fn(loss_weighting, parameterization=parameterization,
                                           min_snr_gamma=gamma)
  loss, _ = diffusion.diffusion_loss(model_fn, x, rng=jax.random.PRNGKey(5), logsnr_fn=logsnr_fn,
                                     parameterization=parameterization, loss_weighting=weight)
  z, logsnr = np.asarray(seen['z']), np.asarray(seen['logsnr'])
  x_hat, _ = diffusion.predict_x_eps(0.3 * z + 0.1, z=z, logsnr=logsnr,
                                     parameterization=parameterization)
  snr = np.exp(logsnr)
  # Cosine schedule (Nichol & Dhariwal; endpoints +-20): lambda = -2 log tan(a t + b), so
  # dlambda/dt = -4 a / sin(2 (a t + b)) with a t + b = arctan(exp(-lambda / 2)).
  a = np.arctan(np.exp(10.0)) - np.arctan(np.exp(-10.0))
  dlogsnr_dt = -4.0 * a / np.sin(2.0 * np.arctan(np.exp(-0.5 * logsnr)))
  w = {'eps_mse': snr, 'v_mse': snr + 1, 'x_mse': np.ones_like(snr),
       'snr_trunc': np.maximum(snr, 1), 'min_snr': np.minimum(snr, gamma),
       'vlb': -0.5 * dlogsnr_dt * snr}[loss_weighting]
  x_err = np.mean(np.square(np.asarray(x) - np.asarray(x_hat)), axis=(1, 2, 3, 4))
  np.testing.assert_allclose(loss, np.mean(w * x_err), rtol=1e-8)


def test_matching_weighting_is_the_plain_target_mse(x64):
  logsnr = jnp.linspace(-20.0, 20.0, 9, dtype=jnp.float64)
  for parameterization, natural in (('eps', 'eps_mse'), ('x', 'x_mse'), ('v', 'v_mse')):
    weight = diffusion.target_loss_weight_fn(natural, parameterization=parameterization)
    np.testing.assert_allclose(weight(logsnr), 1.0, rtol=1e-12)
  with pytest.raises(ValueError, match="allowed values: \\('eps_mse'"):
    diffusion.target_loss_weight_fn('snr', parameterization='eps')


def test_vlb_weighting_needs_the_schedule_derivative():
  with pytest.raises(ValueError, match='dlogsnr_dt'):
    diffusion.log_x_weight('vlb', jnp.zeros((2,)))


def test_logsnr_derivative_is_the_schedules_slope(x64):
  schedule = CosineSchedule(logsnr_min=-10.0, logsnr_max=5.0, logsnr_shift=-1.0).logsnr_fn()
  t = jnp.linspace(0.1, 0.9, 9, dtype=jnp.float64)
  logsnr, slope = diffusion.logsnr_and_derivative(schedule, t)
  h = 1e-6
  np.testing.assert_allclose(logsnr, schedule(t), rtol=1e-14)
  np.testing.assert_allclose(slope, (schedule(t + h) - schedule(t - h)) / (2 * h), rtol=1e-7)


def test_antithetic_times_cover_the_unit_interval_evenly():
  t = np.sort(np.asarray(diffusion.sample_time(jax.random.PRNGKey(4), 8, antithetic=True)))
  # One u0, then steps of exactly 1/B (mod 1): sorted, consecutive gaps are 1/B.
  np.testing.assert_allclose(np.diff(t), 1 / 8, atol=1e-6)
  assert np.all((t >= 0) & (t < 1))
  # Each t_i is still uniform: over many draws, t_0 = u0 has mean 1/2.
  firsts = [float(diffusion.sample_time(jax.random.PRNGKey(k), 8, antithetic=True)[0])
            for k in range(200)]
  assert abs(np.mean(firsts) - 0.5) < 5 * np.sqrt(1 / 12 / 200)


@pytest.mark.parametrize('antithetic', [False, True])
def test_logit_normal_times_follow_their_distribution(x64, antithetic):
  """t = sigmoid(m + s n): logit(t) has mean m and std s, and the histogram of t matches the
  closed-form density (which must also integrate to 1)."""
  m, s = 1.5, 0.7
  t = jnp.concatenate([
      diffusion.sample_time(jax.random.PRNGKey(k), 512, antithetic=antithetic,
                            distribution='logit_normal', logit_mean=m, logit_std=s,
                            dtype=jnp.float64) for k in range(40)])
  t = np.asarray(t)
  assert np.all((t > 0) & (t < 1))
  logit = np.log(t) - np.log1p(-t)
  n = t.size
  assert abs(logit.mean() - m) < 5 * s / np.sqrt(n)
  assert abs(logit.std() - s) < 0.03
  edges = np.linspace(0, 1, 21)
  counts, _ = np.histogram(t, edges)
  grid = np.linspace(1e-6, 1 - 1e-6, 200001)
  density = np.asarray(diffusion.logit_normal_density(jnp.asarray(grid), logit_mean=m, logit_std=s))
  assert abs(np.trapezoid(density, grid) - 1) < 1e-4
  cdf = np.concatenate([[0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(grid))])
  expected = np.diff(np.interp(edges, grid, cdf)) * n
  np.testing.assert_allclose(counts, expected, atol=5 * np.sqrt(expected.max()) + 1)
  # Most of the batch at high noise when m > 0 (the point of the option).
  assert np.mean(t > 0.5) > 0.9


def test_logit_normal_times_are_a_monotone_map_of_the_uniform_draws():
  """The same key gives the uniform draws u and, through the inverse CDF, the logit-normal t:
  the order of the batch is kept, so antithetic strata stay strata."""
  rng = jax.random.PRNGKey(7)
  u = np.asarray(diffusion.sample_time(rng, 16, antithetic=True))
  t = np.asarray(diffusion.sample_time(rng, 16, antithetic=True, distribution='logit_normal',
                                       logit_mean=-1.0, logit_std=2.0))
  np.testing.assert_array_equal(np.argsort(u), np.argsort(t))


def test_unknown_time_distribution_is_rejected():
  with pytest.raises(ValueError, match='logit_normal'):
    diffusion.sample_time(jax.random.PRNGKey(0), 4, distribution='beta')


def test_uniform_fraction_keeps_part_of_the_batch_uniform():
  """With uniform_fraction f the first round(f B) draws are the uniform ones, unchanged; the
  rest are mapped to the logit-normal; and the mixture's density still integrates to 1."""
  rng = jax.random.PRNGKey(3)
  u = np.asarray(diffusion.sample_time(rng, 8))
  t = np.asarray(diffusion.sample_time(rng, 8, distribution='logit_normal', logit_mean=3.0,
                                       logit_std=0.5, uniform_fraction=0.5))
  np.testing.assert_array_equal(t[:4], u[:4])
  assert np.all(t[4:] != u[4:]) and np.all(t[4:] > 0.8)
  grid = np.linspace(1e-6, 1 - 1e-6, 200001)
  density = diffusion.logit_normal_density(jnp.asarray(grid, jnp.float32), logit_mean=3.0,
                                           logit_std=0.5, uniform_fraction=0.5)
  assert abs(np.trapezoid(np.asarray(density, np.float64), grid) - 1) < 1e-3


@pytest.mark.parametrize('parameterization', ['eps', 'x', 'v'])
def test_layout_correction_moves_the_x_prediction_by_exactly_dx(x64, parameterization):
  """unet.layout_correction converts an x-space correction into the output's parameterization:
  the x prediction of (out + correction) is x_hat(out) + dx, at every noise level (float64)."""
  from vdm_jax.models import unet  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  z, out, dx = (jnp.asarray(rng.standard_normal((4, 3, 5)), jnp.float64) for _ in range(3))
  logsnr = jnp.array([-12.0, -3.0, 0.5, 7.0], jnp.float64)
  x_hat = lambda o: diffusion.predict_x_eps(o, z=z, logsnr=logsnr,
                                            parameterization=parameterization)[0]
  corrected = out + unet.layout_correction(dx, logsnr, parameterization)
  np.testing.assert_allclose(x_hat(corrected), x_hat(out) + dx, rtol=1e-9, atol=1e-9)


def test_a_residual_head_learns_what_the_network_leaves_and_leaves_its_gradient_alone(x64):
  """A model_fn returning (network, correction): the network's gradient is that of the loss
  without the head, the head's that of the x-error of stop_gradient(network) + correction."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.uniform(-1, 1, (6, 2, 4, 4, 3)), jnp.float64)
  t = jnp.asarray(rng.uniform(0.05, 0.95, 6), jnp.float64)
  noise = jnp.asarray(rng.standard_normal(x.shape), jnp.float64)
  logsnr_fn = lambda u: CosineSchedule().apply({}, u)
  weight = diffusion.target_loss_weight_fn('eps_mse', parameterization='eps')

  def loss(a, b, with_head):
    def model_fn(z, logsnr):
      network = a * z
      return (network, b * z * jnp.exp(0.5 * logsnr)[:, None, None, None, None]) if with_head else network
    per_example, _ = diffusion.per_example_loss_at(model_fn, x, t=t, noise=noise, logsnr_fn=logsnr_fn,
                                                   parameterization='eps', loss_weighting=weight)
    return jnp.mean(per_example)

  a, b = jnp.float64(0.7), jnp.float64(0.3)
  grad_a, grad_b = jax.grad(loss, argnums=(0, 1))(a, b, True)
  np.testing.assert_allclose(grad_a, jax.grad(loss)(a, b, False), rtol=1e-12)

  def head_x_error(b):
    logsnr = logsnr_fn(t)
    z = diffusion.q_sample(x, logsnr=logsnr, noise=noise)
    out = a * z + b * z * jnp.exp(0.5 * logsnr)[:, None, None, None, None]
    x_hat = diffusion.x_from_eps(z=z, eps=out, logsnr=logsnr)
    return jnp.mean(jnp.mean(jnp.square(x - x_hat), axis=(1, 2, 3, 4)))

  np.testing.assert_allclose(grad_b, jax.grad(head_x_error)(b), rtol=1e-10)
  assert abs(float(grad_b)) > 1e-6

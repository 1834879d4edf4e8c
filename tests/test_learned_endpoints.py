"""Learned endpoints of the learned schedule (Kingma et al. 2021, VDM; config.diffusion.learn_endpoints):
lambda(0) and lambda(1) are trained on the whole VLB (prior KL + diffusion + reconstruction), the
shape on the VLB estimate's variance. Checked against the VLB of Gaussian data in closed form
(continuous decoder) and against a quadrature of VDM's 256-value decoder (8-bit data)."""

import math

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from scipy import special

from experiments import base
from vdm_jax import checkpoints
from vdm_jax import config_validation
from vdm_jax import diffusion
from vdm_jax import likelihood
from vdm_jax import schedules
from vdm_jax.errors import UserError

MU, S = 0.6, 0.3  # Continuous data x ~ N(MU, S^2) in every dimension.
ENDPOINTS = schedules.ENDPOINT_PARAMS


def _schedule(logsnr_min, logsnr_max):
  return schedules.LearnedSchedule(logsnr_min=logsnr_min, logsnr_max=logsnr_max, num_features=16,
                                   learn_endpoints=True)


def _init(schedule):
  return jax.jit(schedule.init)(jax.random.PRNGKey(0), jnp.zeros((1,)))['params']


def _ends(schedule, eta):
  """(lambda(0), lambda(1))."""
  return schedule.apply({'params': eta}, jnp.array([0.0, 1.0]))


def _posterior_mean(z, logsnr, *, mu=MU, s=S):
  """E[x | z] of x ~ N(mu, s^2 I): mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (z - alpha mu); logsnr [B]."""
  alpha2, sigma2 = jax.nn.sigmoid(logsnr)[:, None], jax.nn.sigmoid(-logsnr)[:, None]
  alpha = jnp.sqrt(alpha2)
  return mu + alpha * s**2 / (alpha2 * s**2 + sigma2) * (z - alpha * mu)


def _estimator(schedule, x, rng, *, denoiser, decoder):
  """(per_example_fn, endpoint_terms_fn) of diffusion.grads_with_learned_schedule as train.py
  builds them (an eps-parameterised network, loss weighting 'vlb'), for data x [B, D] and one draw
  of t, noise and the decoder's z_0 from rng. The network is `denoiser` plus a bias (its params)."""
  weight = diffusion.target_loss_weight_fn('vlb', parameterization='eps')
  rng_diffusion, rng_0 = jax.random.split(rng)
  noise_0 = jax.random.normal(rng_0, x.shape, x.dtype)

  def per_example(bias, eta):
    network = lambda z, logsnr: diffusion.eps_from_x(z=z, x=denoiser(z, logsnr) + bias,
                                                     logsnr=logsnr)
    loss, terms = diffusion.per_example_loss(
        network, x, rng=rng_diffusion, logsnr_fn=lambda t: schedule.apply({'params': eta}, t),
        parameterization='eps', loss_weighting=weight, antithetic_time=True)
    vlb = diffusion.vlb_diffusion_term(mse_x=terms['mse_x'], logsnr=terms['logsnr'],
                                       dlogsnr_dt=terms['dlogsnr_dt'])
    return (loss, vlb), None

  def endpoint_terms(eta):
    logsnr_0, logsnr_1 = _ends(schedule, eta)
    return jnp.mean(likelihood.endpoint_terms(x, logsnr_0=logsnr_0, logsnr_1=logsnr_1,
                                              noise=noise_0, decoder=decoder))
  return per_example, endpoint_terms


def _expected_gaussian_vlb(logsnr_0, logsnr_1):
  """The VLB per dimension of x ~ N(MU, S^2) with the exact denoiser and the Gaussian decoder,
  in expectation over the data too (tests/test_likelihood.py's closed form with E(x - MU)^2 = S^2):

    prior = 1/2 (alpha_1^2 (MU^2 + S^2) - alpha_1^2 + log(1 + r_1)),
    diffusion = 1/2 log((1 + r_0 S^2) / (1 + r_1 S^2)),
    reconstruction = 1/2 (log(2 pi) - lambda_0 + 1),      r = exp(lambda).
  """
  a1 = jax.nn.sigmoid(logsnr_1)
  return {'prior': 0.5 * (a1 * (MU**2 + S**2) - a1 + jnp.log1p(jnp.exp(logsnr_1))),
          'diffusion': 0.5 * (jnp.log1p(jnp.exp(logsnr_0) * S**2)
                              - jnp.log1p(jnp.exp(logsnr_1) * S**2)),
          'reconstruction': 0.5 * (math.log(2 * math.pi) - logsnr_0 + 1.0)}


def _total(terms):
  return sum(terms.values())


# ---------------------------------------------------------------- the module


def test_endpoints_start_at_the_configured_values_and_stay_ordered_whatever_the_parameters(x64):
  fixed = schedules.LearnedSchedule(logsnr_min=-12.0, logsnr_max=10.0, num_features=16)
  learned = _schedule(-12.0, 10.0)
  p_fixed, p_learned = _init(fixed), _init(learned)
  # Without learn_endpoints the parameters are those older checkpoints hold.
  assert set(p_fixed) == {'w1', 'w2', 'b2', 'w3'}
  assert set(p_learned) == set(p_fixed) | set(ENDPOINTS)
  t = jnp.linspace(0.0, 1.0, 1001)
  np.testing.assert_allclose(learned.apply({'params': p_learned}, t),
                             fixed.apply({'params': p_fixed}, t), rtol=0, atol=1e-12)
  np.testing.assert_allclose(_ends(learned, p_learned), [10.0, -12.0], rtol=0, atol=1e-12)

  gen = np.random.default_rng(0)
  # gamma_1's parameter far below gamma_0 (the floor holds), or far above (it is gamma_1 itself).
  for gamma_0, gamma_1 in [(500.0, -1e3), (-500.0, -700.0), (0.0, 80.0), (3.0, 2.0)]:
    eta = {k: 2.0 * gen.standard_normal(np.shape(v)) for k, v in p_learned.items()}
    eta.update(gamma_0=np.float64(gamma_0), gamma_1=np.float64(gamma_1))
    logsnr = np.asarray(learned.apply({'params': eta}, t))
    assert np.all(np.diff(logsnr) < 0), (gamma_0, gamma_1)
    floor = gamma_0 + schedules.MIN_LOGSNR_RANGE
    np.testing.assert_allclose(logsnr[[0, -1]], [-gamma_0, -floor - np.logaddexp(0.0, gamma_1 - floor)],
                               rtol=0, atol=1e-9)
    # float32 (the training dtype): lambda(0) > lambda(1) even where softplus underflows to 0.
    eta32 = jax.tree.map(lambda a: np.asarray(a, np.float32), eta)
    ends32 = np.asarray(learned.apply({'params': eta32}, jnp.array([0.0, 1.0], jnp.float32)))
    assert ends32.dtype == np.float32 and ends32[0] > ends32[1], (gamma_0, gamma_1, ends32)
  np.testing.assert_allclose(_ends(learned, {**p_learned, 'gamma_1': 12.0}), [10.0, -12.0], atol=1e-9)


def test_endpoint_terms_weight_frames_as_the_diffusion_term(x64):
  gen = np.random.default_rng(1)
  x = (2.0 * gen.integers(0, 256, (2, 3, 2, 2)) - 255.0) / 255.0  # [B, T, H, W] on the 8-bit grid
  noise = gen.standard_normal(x.shape)
  kwargs = dict(logsnr_0=7.0, logsnr_1=-3.0, decoder='discrete')
  plain = likelihood.endpoint_terms(x, noise=noise, **kwargs)
  by_hand = (likelihood.prior_kl(jnp.asarray(x), logsnr_1=-3.0) + likelihood.reconstruction_discrete(
      jnp.asarray(x), logsnr_0=7.0, noise=jnp.asarray(noise))) / 12
  np.testing.assert_allclose(plain, by_hand, rtol=1e-12)
  kwargs['decoder'] = 'gaussian'  # The frames' weighting does not depend on it (and compiles faster).
  plain = likelihood.endpoint_terms(x, noise=noise, **kwargs)
  np.testing.assert_allclose(likelihood.endpoint_terms(x, noise=noise, frame_weights=np.ones((2, 3)),
                                                       **kwargs), plain, rtol=1e-12)
  # A frame of weight 0 (a given frame of frame conditioning) is left out.
  np.testing.assert_allclose(
      likelihood.endpoint_terms(x, noise=noise, frame_weights=[[0, 1, 1], [0, 1, 1]], **kwargs),
      likelihood.endpoint_terms(x[:, 1:], noise=noise[:, 1:], **kwargs), rtol=1e-12)


# ---------------------------------------------------------------- gradients


def test_endpoint_gradient_is_the_gradient_of_the_whole_vlb(x64):
  """On one draw, the endpoints' gradient equals central finite differences of the VLB estimate
  (diffusion term + prior + reconstruction), not of its second moment, and the shape's is
  unchanged; averaged over draws, it is the gradient of the expected VLB in closed form."""
  schedule = _schedule(-2.0, 2.0)
  eta = _init(schedule)
  B, D, bias = 128, 16, jnp.float64(0.0)

  def estimator(rng):
    rng_x, rng = jax.random.split(rng)
    x = MU + S * jax.random.normal(rng_x, (B, D))
    return _estimator(schedule, x, rng, denoiser=_posterior_mean, decoder='gaussian')

  @jax.jit
  def gradients(eta, rng):
    per_example, endpoint_terms = estimator(rng)
    return (diffusion.grads_with_learned_schedule(per_example, bias, eta,
                                                  endpoint_terms_fn=endpoint_terms)[3],
            diffusion.grads_with_learned_schedule(per_example, bias, eta)[3])

  @jax.jit
  def objectives(eta, rng):
    """(the VLB estimate, the mean square of its diffusion term)."""
    per_example, endpoint_terms = estimator(rng)
    vlb = per_example(bias, eta)[0][1]
    return jnp.mean(vlb) + endpoint_terms(eta), jnp.mean(jnp.square(vlb))

  rng, h = jax.random.PRNGKey(2), 1e-6
  grads, plain = gradients(eta, rng)

  def central(index, name):
    shift = lambda d: {**eta, name: eta[name] + d}
    return float((objectives(shift(h), rng)[index] - objectives(shift(-h), rng)[index]) / (2 * h))

  for name in ENDPOINTS:
    expected = central(0, name)
    np.testing.assert_allclose(grads[name], expected, rtol=1e-6, err_msg=name)
    # Without endpoint_terms_fn they would get the variance gradient, which differs.
    assert abs(float(plain[name]) - expected) > 0.1 * abs(expected), (name, plain[name], expected)
  for name in ('w1', 'w3'):
    np.testing.assert_allclose(grads[name], plain[name], rtol=1e-12)
  np.testing.assert_allclose(grads['w1'], central(1, 'w1'), rtol=1e-4)

  draws = 16
  samples = np.array([[gradients(eta, key)[0][name] for name in ENDPOINTS]
                      for key in jax.random.split(jax.random.PRNGKey(3), draws)])
  exact = jax.grad(lambda eta: _total(_expected_gaussian_vlb(*_ends(schedule, eta))))(eta)
  exact = np.array([exact[name] for name in ENDPOINTS])
  mean, se = samples.mean(0), samples.std(0) / math.sqrt(draws)
  print('endpoint gradient', mean, '+-', se, 'exact', exact)
  assert np.all(np.abs(mean - exact) < 4 * se), (mean, exact, se)
  assert np.all(se < 0.25 * np.abs(exact)), (se, exact)  # a test that could tell them apart


# ---------------------------------------------------------------- training


def _train(schedule, eta, *, data_fn, denoiser, decoder, learning_rate, num_steps, B):
  """Adam steps on the schedule alone (the network is the fixed denoiser): the endpoints on the
  VLB, the shape on the VLB estimate's second moment. Returns (eta, [num_steps, 2] endpoints)."""
  tx = optax.adam(learning_rate)

  def step(carry, i):
    eta, opt_state = carry
    rng_x, rng = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(4), i))
    per_example, endpoint_terms = _estimator(schedule, data_fn(rng_x, B), rng, denoiser=denoiser,
                                             decoder=decoder)
    grads = diffusion.grads_with_learned_schedule(per_example, jnp.float64(0.0), eta,
                                                  endpoint_terms_fn=endpoint_terms)[3]
    updates, opt_state = tx.update(grads, opt_state, eta)
    eta = optax.apply_updates(eta, updates)
    return (eta, opt_state), _ends(schedule, eta)

  run = jax.jit(lambda eta: jax.lax.scan(step, (eta, tx.init(eta)), jnp.arange(num_steps)))
  (eta, _), path = run(eta)
  return eta, np.asarray(path)


def _assert_monotone_and_ordered(schedule, eta):
  logsnr = np.asarray(schedule.apply({'params': eta}, jnp.linspace(0.0, 1.0, 2001)))
  assert np.all(np.isfinite(logsnr)) and np.all(np.diff(logsnr) < 0)


def test_learned_endpoints_lower_the_vlb_of_gaussian_data(x64):
  """Gaussian data, exact denoiser, Gaussian decoder, endpoints started narrow at [-1, 3]: the
  VLB falls monotonically as lambda(0) rises (d VLB / d lambda_0 = -1/2 / (1 + r_0 S^2)) and as
  lambda(1) falls, until the prior KL is negligible and lowering lambda(1) further gains nothing
  (the prior KL it saves is paid back in the diffusion term)."""
  schedule = _schedule(-1.0, 3.0)
  eta0 = _init(schedule)
  data = lambda rng, B: MU + S * jax.random.normal(rng, (B, 16))
  eta, path = _train(schedule, eta0, data_fn=data, denoiser=_posterior_mean, decoder='gaussian',
                     learning_rate=0.05, num_steps=300, B=128)
  before, after = (_expected_gaussian_vlb(*_ends(schedule, e)) for e in (eta0, eta))
  slope_1 = jax.grad(lambda l1, l0: _total(_expected_gaussian_vlb(l0, l1)))
  (l0_before, l1_before), (l0_after, l1_after) = _ends(schedule, eta0), _ends(schedule, eta)
  print('endpoints', (float(l0_before), float(l1_before)), '->', (float(l0_after), float(l1_after)),
        'VLB', float(_total(before)), '->', float(_total(after)),
        'prior', float(before['prior']), '->', float(after['prior']),
        'dVLB/dlambda_1', float(slope_1(l1_before, l0_before)), '->',
        float(slope_1(l1_after, l0_after)))
  assert l0_after > l0_before + 2.0 and l1_after < l1_before - 2.0
  assert _total(after) < _total(before) - 0.2
  assert after['prior'] < 0.05 * before['prior']
  assert abs(slope_1(l1_after, l0_after)) < 0.05 * abs(slope_1(l1_before, l0_before))
  _assert_monotone_and_ordered(schedule, eta)
  assert not np.allclose(eta['w2'], eta0['w2'])  # the shape still trains (on the variance)


# 8-bit data: y ~ N(0, S8^2) rounded to the grid x_k = 2k / 255 - 1 (clipped to [-1, 1]).
S8, STEP = 0.3, 2.0 / 255.0


def _pixel_probabilities():
  edges = (np.arange(257) - 128.0) * STEP
  edges[[0, -1]] = -np.inf, np.inf
  return np.diff(special.ndtr(edges / S8))  # P(x = x_k), k = 0..255


def _reconstruction_quadrature(logsnr_0):
  """E -log p(x | z_0) per dimension of VDM's 256-value decoder for an interior pixel, by
  Gauss-Hermite quadrature: with s = sigma_0 / alpha_0 and z_0 / alpha_0 = x_k + s eps,
  -log p = eps^2 / 2 + log sum_m exp(-(eps + m STEP / s)^2 / 2) over the lattice offsets m."""
  eps, w = np.polynomial.hermite_e.hermegauss(80)  # nodes within |eps| < 10.5
  offsets = np.arange(-250, 251) * STEP  # |m| STEP / s up to 250 STEP / 0.05 = 39 > 10.5 + 8

  def one(logsnr):
    s = math.exp(-0.5 * logsnr)
    lse = special.logsumexp(-0.5 * np.square(eps[:, None] + offsets / s), axis=-1)
    return np.sum(w / w.sum() * (0.5 * eps**2 + lse))
  return np.array([one(float(l)) for l in np.ravel(logsnr_0)]).reshape(np.shape(logsnr_0))


def _denoiser_mse(logsnr, second_moment):
  """E (x - x_hat)^2 of the Gaussian posterior mean (mu = 0, s = S8) on data of E x^2 = V:
  (1 - k alpha)^2 V + k^2 sigma^2, k = alpha S8^2 / (alpha^2 S8^2 + sigma^2)."""
  alpha2, sigma2 = special.expit(logsnr), special.expit(-logsnr)
  k = np.sqrt(alpha2) * S8**2 / (alpha2 * S8**2 + sigma2)
  return (1.0 - k * np.sqrt(alpha2))**2 * second_moment + k**2 * sigma2


def test_lambda_0_moves_to_where_reconstruction_and_diffusion_balance_on_8bit_data(x64):
  """8-bit data, a denoiser that cannot resolve the 256 levels (the Gaussian posterior mean),
  VDM's discrete decoder: above the balance point lambda_0* each unit of lambda_0 costs about 1/2
  nat per dimension in the diffusion term and saves nothing in the (already lossless)
  reconstruction, so lambda_0, started at 14, falls to lambda_0*, where
  -d reconstruction / d lambda_0 = 1/2 exp(lambda_0) mse(lambda_0), found by quadrature."""
  probabilities = _pixel_probabilities()
  values = (2.0 * np.arange(256) - 255.0) / 255.0
  second_moment = float(np.sum(probabilities * values**2))
  grid = np.arange(6.0, 16.0, 0.02)
  reconstruction = _reconstruction_quadrature(grid)
  slope = np.gradient(reconstruction, grid) + 0.5 * np.exp(grid) * _denoiser_mse(grid, second_moment)
  balance = grid[np.argmax(slope > 0)]  # d VLB / d lambda_0 turns positive
  assert np.all(slope[grid > balance + 2.0] > 0.3)  # a wall above it

  def expected_vlb(logsnr_0, logsnr_1):
    lam = np.linspace(logsnr_1, logsnr_0, 20001)
    integrand = 0.5 * np.exp(lam) * _denoiser_mse(lam, second_moment)
    diffusion_term = np.sum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(lam))
    a1 = special.expit(logsnr_1)
    prior = 0.5 * (a1 * second_moment - a1 + np.log1p(np.exp(logsnr_1)))
    return prior + diffusion_term + float(_reconstruction_quadrature(logsnr_0))

  def data(rng, B):
    k = jnp.clip(jnp.round(S8 * jax.random.normal(rng, (B, 16)) / STEP + 127.5), 0, 255)
    return (2.0 * k - 255.0) / 255.0

  schedule = _schedule(-6.0, 14.0)
  eta0 = _init(schedule)
  eta, path = _train(schedule, eta0, data_fn=data,
                     denoiser=lambda z, logsnr: _posterior_mean(z, logsnr, mu=0.0, s=S8),
                     decoder='discrete', learning_rate=optax.cosine_decay_schedule(0.1, 200, 0.05),
                     num_steps=200, B=64)
  final = path[-20:].mean(0)
  vlb_before, vlb_after = expected_vlb(14.0, -6.0), expected_vlb(*final)
  vlb_best = expected_vlb(balance, final[1])  # the best lambda_0 for the final lambda_1
  print('balance', balance, 'endpoints (14, -6) ->', final, 'VLB', vlb_before, '->', vlb_after,
        'best', vlb_best)
  assert balance - 1.0 < final[0] < balance + 0.5, (final, balance)
  # Measured: 5.795 -> 5.062 nats/dim, 0.001 above the best lambda_0's.
  assert vlb_after < vlb_before - 0.6 and vlb_after - vlb_best < 0.02, (vlb_before, vlb_after, vlb_best)
  _assert_monotone_and_ordered(schedule, eta)


# ---------------------------------------------------------------- config, checkpoints, train step


def _learned_config(learn_endpoints=True):
  config = base.get_base_config()
  config.diffusion.schedule = 'learned'
  config.diffusion.loss_weighting = 'vlb'
  config.diffusion.learn_endpoints = learn_endpoints
  return config


def test_learn_endpoints_needs_the_learned_schedule():
  from experiments import moving_shapes  # pylint: disable=g-import-not-at-top
  config = moving_shapes.get_config('smoke')
  config.diffusion.schedule, config.diffusion.loss_weighting = 'learned', 'vlb'
  config.diffusion.learn_endpoints = True
  config_validation.validate(config)
  config.diffusion.schedule, config.diffusion.loss_weighting = 'cosine', 'eps_mse'
  with pytest.raises(UserError, match=r"config.diffusion.learn_endpoints=True needs "
                                      r"config.diffusion.schedule='learned' \(got 'cosine'\).*"
                                      r"--config.diffusion.learn_endpoints=False"):
    config_validation.validate(config)


def test_checkpoints_from_before_learned_endpoints_resume_without_them_only(tmp_path):
  """A learned-schedule checkpoint written before the field existed holds no endpoint parameters:
  it resumes with learn_endpoints=False (same state layout) and is refused, in one line naming
  the field, with learn_endpoints=True."""
  old = _learned_config().to_dict()
  del old['diffusion']['learn_endpoints']
  checkpointer = checkpoints.Checkpointer(str(tmp_path))
  checkpointer.save(1, state={'w': jnp.zeros(3)}, data_iterator=iter(
      grain.MapDataset.range(4).to_iter_dataset()), config=ml_collections.ConfigDict(old))
  checkpointer.wait()
  checkpointer.check_compatible(1, _learned_config(learn_endpoints=False))
  with pytest.raises(UserError, match=r'config\.diffusion\.learn_endpoints=False but this run has '
                                      r'True: .*--config\.diffusion\.learn_endpoints=False\.$'):
    checkpointer.check_compatible(1, _learned_config(learn_endpoints=True))
  checkpointer.close()


def test_train_step_learns_the_endpoints_without_weight_decay(tmp_path):
  """The jitted train step with learn_endpoints: the endpoints move, the metrics carry the VLB
  estimate and the endpoints, the schedule stays monotone. With weight decay 0.5, the first
  (Adam) step moves each endpoint by exactly the learning rate (-lr sign(g)), where decay would
  add lr * 0.5 * gamma (0.25 at gamma_0 = -10); the network's parameter is decayed."""
  from tests.smoke import LinearDenoiser, smoke_config  # pylint: disable=g-import-not-at-top
  from vdm_jax import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vdm_jax import train  # pylint: disable=g-import-not-at-top
  shape = (2, 8, 8, 3)
  model = LinearDenoiser()
  video = np.round(np.random.default_rng(0).uniform(0, 255, (4, *shape))) / 127.5 - 1.0
  config = smoke_config(tmp_path, 3)
  config.batch_size = 4
  config.diffusion.schedule, config.diffusion.loss_weighting = 'learned', 'vlb'
  config.diffusion.learn_endpoints = True
  config.diffusion.learned_num_features = 16
  config.diffusion.logsnr_min, config.diffusion.logsnr_max = -12.0, 10.0
  config.optim.warmup_steps, config.optim.learning_rate, config.optim.weight_decay = 0, 0.05, 0.5
  mesh = mesh_lib.make_mesh(config)
  tx, _ = train.create_optimizer(config)
  state = jax.jit(lambda: train.create_train_state(model, tx, config, shape, jax.random.PRNGKey(0)),
                  out_shardings=mesh_lib.replicated(mesh))()
  step = train.make_train_step(model, logsnr_fn=None, tx=tx, config=config, mesh=mesh)
  batch = mesh_lib.global_batch({'video': video.astype(np.float32),
                                 'tokens': np.zeros((4, 4), np.int32)}, mesh)
  states = [jax.device_get(state)]  # on the host: the state is donated
  for _ in range(3):
    state, metrics = step(state, batch)
    states.append(jax.device_get(state))
  metrics = jax.device_get(metrics)

  first = {k: float(states[1].schedule_params[k]) - float(states[0].schedule_params[k])
           for k in ENDPOINTS}
  np.testing.assert_allclose(np.abs(list(first.values())), 0.05, rtol=1e-4, err_msg=str(first))
  moved_w = abs(float(states[1].params['w']) - float(states[0].params['w']))
  assert abs(moved_w - 0.05) > 0.01, moved_w  # lr +- lr * 0.5 * 0.5: decayed
  ends = np.asarray(jax.jit(train.create_logsnr_fn(config, states[-1].schedule_params))(
      jnp.linspace(0.0, 1.0, 1001)))
  assert np.all(np.diff(ends) < 0)
  np.testing.assert_allclose(ends[[0, -1]], [metrics['train/logsnr_0'], metrics['train/logsnr_1']],
                             atol=0.2)  # The metrics are those before the last step.
  assert abs(ends[0] - 10.0) > 1e-3 and abs(ends[-1] + 12.0) > 1e-3, ends[[0, -1]]
  assert np.isfinite(metrics['train/vlb']) and metrics['train/vlb'] > metrics['train/loss']

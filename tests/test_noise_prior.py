"""Noise priors correlated across frames (vdm_jax/noise_prior.py): their covariances, and training,
sampling and the bound under them checked against Gaussian data, whose optimal denoiser under any
noise covariance is known in closed form."""

import functools
import math

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import base
from vdm_jax import config_validation
from vdm_jax import diffusion
from vdm_jax import likelihood
from vdm_jax import samplers
from vdm_jax.errors import UserError
from vdm_jax.noise_prior import INDEPENDENT, NoisePrior
from vdm_jax.schedules import CosineSchedule, alpha_sigma

MU, S = 0.3, 0.5  # data x ~ N(MU, S^2 I)
CORRELATED = [NoisePrior('mixed', 1.0), NoisePrior('mixed', 2.0), NoisePrior('progressive', 1.0),
              NoisePrior('progressive', 2.0)]


@pytest.mark.parametrize('prior', CORRELATED, ids=str)
@pytest.mark.parametrize('frames', [1, 2, 5, 16])
def test_factor_squares_to_the_papers_covariance(x64, prior, frames):
  cov = prior.covariance(frames)
  np.testing.assert_allclose(prior.factor(frames) @ prior.factor(frames).T, cov, atol=1e-12)
  np.testing.assert_allclose(np.diag(cov), 1.0)  # every element keeps unit variance
  f = np.arange(frames)
  if prior.kind == 'mixed':  # Ge et al. 2023, eq. 4: shared / (shared + own) variance
    expected = np.where(f[:, None] == f[None, :], 1.0, prior.alpha**2 / (1 + prior.alpha**2))
  else:  # eq. 5: an AR(1) chain, correlation rho^|f - g|
    expected = (prior.alpha / math.sqrt(1 + prior.alpha**2)) ** np.abs(f[:, None] - f[None, :])
  np.testing.assert_allclose(cov, expected, atol=1e-12)


def test_progressive_factor_is_the_recursion(x64):
  prior = NoisePrior('progressive', 1.5)
  white = np.random.default_rng(0).standard_normal((3, 6, 2))
  eps = [white[:, 0]]
  for f in range(1, 6):
    eps.append((prior.alpha * eps[-1] + white[:, f]) / math.sqrt(1 + prior.alpha**2))
  np.testing.assert_allclose(prior.color(jnp.asarray(white)), np.stack(eps, 1), atol=1e-12)


@pytest.mark.parametrize('prior', CORRELATED[::2], ids=str)
def test_samples_have_the_covariance_and_whiten_inverts_color(prior):
  shape = (4096, 5, 4, 4, 1)  # [batch, frames, height, width, channels]
  noise = np.asarray(prior.sample(jax.random.PRNGKey(0), shape))
  per_frame = np.moveaxis(noise, 1, 0).reshape(5, -1)
  n = per_frame.shape[1]
  np.testing.assert_allclose(np.cov(per_frame), prior.covariance(5), atol=5 / math.sqrt(n))
  # Pixels stay independent: neighbouring columns are uncorrelated.
  assert abs(np.mean(noise[..., 0, :] * noise[..., 1, :])) < 5 / math.sqrt(n / 4)
  np.testing.assert_allclose(prior.whiten(prior.color(jnp.asarray(noise))), noise, atol=1e-4)


def test_independent_prior_draws_exactly_the_old_noise():
  """Runs without a prior keep their random streams (checkpoints resume, seeds reproduce)."""
  rng = jax.random.PRNGKey(3)
  np.testing.assert_array_equal(INDEPENDENT.sample(rng, (2, 3, 4)), jax.random.normal(rng, (2, 3, 4)))
  _, noise = diffusion.draw_time_and_noise(rng, jnp.zeros((2, 3, 4)))
  _, noise_prior = diffusion.draw_time_and_noise(rng, jnp.zeros((2, 3, 4)), noise_prior=INDEPENDENT)
  np.testing.assert_array_equal(noise, noise_prior)


def test_training_noise_follows_the_prior():
  prior = NoisePrior('mixed', 1.0)
  _, noise = diffusion.draw_time_and_noise(jax.random.PRNGKey(0), jnp.zeros((2048, 3, 8)),
                                           noise_prior=prior)
  corr = np.corrcoef(np.moveaxis(np.asarray(noise), 1, 0).reshape(3, -1))
  np.testing.assert_allclose(corr, prior.covariance(3), atol=0.02)


def correlated_gaussian_denoiser(prior: NoisePrior, frames: int):
  """E[x | z] for x ~ N(MU, S^2 I) and z = alpha x + sigma L eps (Cov sigma^2 Sigma across frames):
  MU + alpha S^2 (alpha^2 S^2 I + sigma^2 Sigma)^{-1} (z - alpha MU), applied in Sigma's eigenbasis."""
  d, u = np.linalg.eigh(prior.covariance(frames))

  def denoise_fn(z, logsnr):
    alpha, sigma = alpha_sigma(logsnr.reshape((-1,) + (1,) * (z.ndim - 1)))
    basis = jnp.asarray(u, z.dtype)
    y = jnp.einsum('gf,bg...->bf...', basis, z - alpha * MU)  # U^T (z - alpha MU)
    gain = alpha * S**2 / (alpha**2 * S**2 + sigma**2 * jnp.asarray(d, z.dtype).reshape(
        (1, frames) + (1,) * (z.ndim - 2)))
    x_hat = MU + jnp.einsum('fg,bg...->bf...', basis, gain * y)
    return x_hat, diffusion.eps_from_x(z=z, x=x_hat, logsnr=logsnr)

  return denoise_fn


@pytest.mark.parametrize('sampler', ['ddim', 'ancestral', 'dpmpp_2m'])
@pytest.mark.parametrize('prior', [NoisePrior('mixed', 2.0), NoisePrior('progressive', 2.0)],
                         ids=str)
def test_samplers_reproduce_independent_frames_under_the_prior(x64, sampler, prior):
  """With the exact denoiser of the correlated process, sampling must return the data's
  distribution: mean MU, and frames independent with variance S^2. Drawing z_1 (and the fresh
  noise) i.i.d. instead, as a sampler unaware of the prior would, leaves the frames correlated."""
  frames, shape = 4, (2048, 4, 8)
  denoiser = correlated_gaussian_denoiser(prior, frames)

  def run(noise_prior):
    return np.asarray(jax.jit(lambda rng: samplers.sample(
        denoiser, rng=rng, shape=shape, logsnr_fn=CosineSchedule().logsnr_fn(), num_steps=200,
        sampler=sampler, dtype=jnp.float64, noise_prior=noise_prior))(jax.random.PRNGKey(1)))

  x = run(prior)
  per_frame = np.moveaxis(x, 1, 0).reshape(frames, -1)
  n = per_frame.shape[1]
  assert abs(per_frame.mean() - MU) < 5 * S / math.sqrt(n * frames)
  cov = np.cov(per_frame)
  np.testing.assert_allclose(cov, S**2 * np.eye(frames), atol=6 * S**2 * math.sqrt(2 / n))
  unaware = np.cov(np.moveaxis(run(INDEPENDENT), 1, 0).reshape(frames, -1))
  off_diagonal = unaware[~np.eye(frames, dtype=bool)]
  assert np.max(np.abs(off_diagonal)) > 20 * S**2 * math.sqrt(2 / n), unaware


def test_vlb_under_the_prior_tightens_to_the_exact_nll(x64):
  """The bound of the correlated process, with its exact denoiser, is the exact NLL of the data
  (the whitened KLs); the same denoiser read as if the noise were independent is not."""
  prior = NoisePrior('mixed', 2.0)
  B, F, D = 64, 4, 64
  x = MU + S * np.random.default_rng(0).standard_normal((B, F, D))
  nll = np.sum(0.5 * (x - MU)**2 / S**2 + 0.5 * math.log(2 * math.pi * S**2), axis=(1, 2))
  denoiser = correlated_gaussian_denoiser(prior, F)
  model_fn = lambda z, logsnr: denoiser(z, logsnr)[0]  # the x-parameterization

  @functools.partial(jax.jit, static_argnums=1)
  def vlb(x, noise_prior_is_used):
    logsnr_fn = lambda t: 14.0 + (-12.0 - 14.0) * t
    return likelihood.vlb(model_fn, x, rng=jax.random.PRNGKey(1), logsnr_fn=logsnr_fn,
                          parameterization='x', num_t=128, decoder='gaussian',
                          noise_prior=prior if noise_prior_is_used else INDEPENDENT)

  dims = F * D
  total = np.asarray(vlb(jnp.asarray(x), True)['total'])
  gap, se = np.mean(total - nll) / dims, np.std(total - nll) / math.sqrt(B) / dims
  assert abs(gap) < 4 * se and se < 0.02, (gap, se)
  unaware = np.asarray(vlb(jnp.asarray(x), False)['total'])
  assert np.mean(unaware - nll) / dims > 10 * se, np.mean(unaware - nll) / dims


def _config(**diffusion_fields):
  config = base.get_base_config()
  for key, value in diffusion_fields.items():
    setattr(config.diffusion, key, value)
  return config


@pytest.mark.parametrize('fields, others, message', [
    (dict(noise_prior='pyoco'), {}, r"config\.diffusion\.noise_prior='pyoco'"),
    (dict(noise_prior='mixed', noise_prior_alpha=0.0), {}, r'noise_prior_alpha=0\.0 must be > 0'),
    (dict(noise_prior='mixed', loss_weighting='vlb'), {}, r"loss_weighting='vlb'"),
    (dict(noise_prior='progressive'), {'data.num_images_per_video': 2, 'data.image_dataset': 'x'},
     r'num_images_per_video=2 appends independent images'),
    (dict(noise_prior='mixed'), {'sample.task': 'predict'}, r"config\.sample\.task='predict'"),
])
def test_bad_noise_prior_settings_are_refused(fields, others, message):
  config = _config(**fields)
  for field, value in others.items():
    section, key = field.split('.')
    setattr(config[section], key, value)
  with pytest.raises(UserError, match=message):
    config_validation.validate(config)


class FrameMeanDenoiser(flax.linen.Module):
  """out = w * (the mean of z over frames), broadcast to every frame: its loss gradient at w = 0
  measures how strongly each frame's noise correlates with the others'."""

  @flax.linen.compact
  def __call__(self, z, *, logsnr, text_tokens, drop_text=None, train=False, num_images=0):
    del logsnr, text_tokens, drop_text, train, num_images
    w = self.param('w', flax.linen.initializers.zeros, ())
    return w * jnp.broadcast_to(jnp.mean(z, axis=1, keepdims=True), z.shape)


def test_train_step_draws_the_configured_prior(tmp_path):
  """Zero videos, eps target: at w = 0 the gradient is -2 E[sigma] E[mean_f(eps) eps_g], which is
  1/F for independent noise and (1 + (F - 1) rho) / F under the mixed prior (rho = alpha^2 /
  (1 + alpha^2)): the train step's gradients must differ by that factor, with the same t draws."""
  from tests.smoke import smoke_config, stand_in_train_step  # pylint: disable=g-import-not-at-top
  from vdm_jax import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  frames, shape = 8, (8, 16, 16, 3)
  grad_norms = {}
  for prior in ('independent', 'mixed'):
    config = smoke_config(tmp_path, 1)
    config.diffusion.parameterization, config.diffusion.loss_weighting = 'eps', 'eps_mse'
    config.diffusion.noise_prior, config.diffusion.noise_prior_alpha = prior, 1.0
    state, step, mesh = stand_in_train_step(FrameMeanDenoiser(), config, shape)
    batch = mesh_lib.global_batch(
        {'video': np.zeros((config.batch_size, *shape), np.float32),
         'tokens': np.zeros((config.batch_size, 4), np.int32)}, mesh)
    _, metrics = step(state, batch)
    grad_norms[prior] = float(metrics['train/grad_norm'])
  expected = 1 + (frames - 1) * 0.5
  assert abs(grad_norms['mixed'] / grad_norms['independent'] - expected) < 0.1 * expected, grad_norms

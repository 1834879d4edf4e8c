"""A spatial super-resolution stage (config.train.cond_frames='low_res'): what it is trained on,
what the sampler feeds it, and the config checks (trained and evaluated: tests/test_cascade.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import moving_shapes as moving_shapes_experiment
from vdm_jax import config_validation
from vdm_jax import frame_conditioning
from vdm_jax import guidance
from vdm_jax import mesh as mesh_lib
from vdm_jax import sample as sample_lib
from vdm_jax import train
from vdm_jax.errors import UserError


def sr_config(factor=2, logsnr=(1.5, 1.5)):
  config = moving_shapes_experiment.get_config('smoke')
  config.model.frame_conditioning = True
  config.train.cond_frames, config.train.cond_low_res_factor = 'low_res', factor
  config.train.cond_aug_logsnr_min, config.train.cond_aug_logsnr_max = logsnr
  config.eval.bpd_num_videos = 0
  return config


def test_training_gives_every_frame_pooled_and_upsampled_and_scores_them_all(x64):
  lam = 1.5
  video = jax.random.uniform(jax.random.PRNGKey(5), (4, 6, 8, 8, 3), jnp.float64, -1, 1)
  cond, weights = jax.jit(lambda v, k: train.frame_conditioning_inputs(sr_config(), v, k))(
      video, jax.random.PRNGKey(6))
  assert np.asarray(cond['cond_mask']).all() and cond['cond_mask'].shape == (4, 6)
  np.testing.assert_array_equal(weights, np.ones((4, 6)))  # every high-resolution frame is generated
  # The 2x2 means of the video, repeated on each 2x2 block, then the forward process at lam.
  pooled = np.asarray(video).reshape(4, 6, 4, 2, 4, 2, 3).mean(axis=(3, 5))
  given = np.repeat(np.repeat(pooled, 2, axis=2), 2, axis=3)
  alpha, sigma = np.sqrt(1 / (1 + np.exp(-lam))), np.sqrt(1 / (1 + np.exp(lam)))
  eps = (np.asarray(cond['cond_frames']) - alpha * given) / sigma  # what the noise must have been
  n = eps.size
  assert abs(eps.mean()) < 5 / np.sqrt(n) and abs(eps.std() - 1) < 5 / np.sqrt(2 * n), eps.std()
  # The given video holds nothing of the detail within a block: two videos with the same 2x2
  # means give the same conditioning.
  detail = jnp.asarray(np.tile([[1., -1.], [-1., 1.]], (4, 4)))[None, None, :, :, None]
  other, _ = train.frame_conditioning_inputs(sr_config(), video + 0.1 * detail,
                                             jax.random.PRNGKey(6))
  np.testing.assert_allclose(other['cond_frames'], cond['cond_frames'], atol=1e-12)
  # Pooling the input gives the low-resolution video back exactly.
  low = frame_conditioning.low_res(video, factor=2)
  np.testing.assert_allclose(frame_conditioning.low_res(
      frame_conditioning.low_res_input(low, factor=2), factor=2), low, rtol=1e-12)


class CopyGiven(nn.Module):
  """A stand-in x-predicting denoiser that returns the frames it is given: sampled from it, a
  video is exactly what the sampler fed the network."""

  def conditioning_inputs(self):
    return ('cond_frames', 'cond_mask', 'cond_logsnr')

  @nn.compact
  def __call__(self, z, *, logsnr, cond_frames=None, cond_mask=None, cond_logsnr=None,
               drop_text=None, train=False, num_images=0):
    scale = self.param('scale', nn.initializers.ones, ())
    alpha = jnp.sqrt(jax.nn.sigmoid(cond_logsnr))[:, None, None, None, None]
    return scale * cond_frames / alpha  # undoes the augmentation's alpha scaling


def test_sampling_feeds_the_network_the_low_res_video_upsampled_and_returns_its_own_output():
  config = sr_config(logsnr=(30.0, 30.0))
  config.model.conditioning = 'none'
  config.diffusion.parameterization = 'x'
  config.sample.num_steps, config.sample.batch_size, config.sample.cond_aug_logsnr = 3, 2, 30.0
  video_shape = (3, 8, 8, 3)
  generate = sample_lib.make_generate_fn(
      CopyGiven(), logsnr_fn=train.create_logsnr_fn(config), config=config,
      video_shape=video_shape, mesh=mesh_lib.make_mesh(config))
  low = np.random.default_rng(0).uniform(-1, 1, (3, 3, 4, 4, 3)).astype(np.float32)
  videos = generate({'scale': jnp.float32(1.0)}, ['x'] * 3, jax.random.PRNGKey(0), frames=low)
  assert videos.shape == (3, *video_shape)
  expected = np.asarray(guidance.upsample(jnp.asarray(low), factor=2))
  np.testing.assert_allclose((videos.astype(np.float32) * 2 - 255) / 255, expected, atol=1.5 / 255)
  # The output is the network's, not the given frames pasted over it (as frame prediction does).
  halved = generate({'scale': jnp.float32(0.5)}, ['x'] * 3, jax.random.PRNGKey(0), frames=low)
  np.testing.assert_allclose((halved.astype(np.float32) * 2 - 255) / 255, 0.5 * expected,
                             atol=1.5 / 255)
  with pytest.raises(ValueError, match=r'takes \(3, 4, 4, 3\)'):  # full-resolution frames
    generate({'scale': jnp.float32(1.0)}, ['x'], jax.random.PRNGKey(0),
             frames=np.zeros((1, *video_shape), np.uint8))
  with pytest.raises(ValueError, match='low-resolution videos'):
    generate({'scale': jnp.float32(1.0)}, ['x'], jax.random.PRNGKey(0))


def test_given_frames_of_true_videos_are_their_pooled_versions():
  videos = np.random.default_rng(1).integers(0, 256, (2, 3, 8, 8, 3), dtype=np.uint8)
  low = sample_lib.given_frames(sr_config(factor=4), videos)
  assert low.shape == (2, 3, 2, 2, 3)
  x = (videos.astype(np.float32) * 2 - 255) / 255
  np.testing.assert_allclose(low[0, 1, 1, 0], x[0, 1, 4:8, 0:4].mean(axis=(0, 1)), rtol=1e-5)
  prediction = moving_shapes_experiment.get_config('smoke')
  prediction.model.frame_conditioning = True
  assert sample_lib.given_frames(prediction, videos) is videos  # prediction reads frames as they are


def test_a_factor_that_does_not_divide_the_resolution_is_refused():
  config = sr_config(factor=3)
  with pytest.raises(UserError, match='cond_low_res_factor=3 must be an integer > 1 dividing'):
    config_validation.validate(config)
  config_validation.validate(sr_config(factor=4))


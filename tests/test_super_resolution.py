"""Super-resolution stages, spatial (config.train.cond_frames='low_res') and temporal
('low_frame_rate'): what they are trained on, what the sampler feeds them, and the config checks
(restored as cascade stages and evaluated: tests/test_cascade.py)."""

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


def stage_config(cond_frames='low_res', logsnr=(1.5, 1.5), **train_fields):
  config = moving_shapes_experiment.get_config('smoke')
  config.model.frame_conditioning = True
  config.train.cond_frames = cond_frames
  config.train.update(train_fields)
  config.train.cond_aug_logsnr_min, config.train.cond_aug_logsnr_max = logsnr
  config.eval.bpd_num_videos = 0
  return config


def sr_config(factor=2, logsnr=(1.5, 1.5)):
  return stage_config('low_res', logsnr, cond_low_res_factor=factor)


def tsr_config(stride=2, logsnr=(1.5, 1.5)):
  return stage_config('low_frame_rate', logsnr, cond_frame_stride=stride)


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
  """A stand-in x-predicting denoiser that returns scale x the frames it is given, frame t the
  given frame t - shift (cyclically): sampled from it, a video is exactly what the sampler fed
  the network."""
  shift: int = 0

  def conditioning_inputs(self):
    return ('cond_frames', 'cond_mask', 'cond_logsnr')

  @nn.compact
  def __call__(self, z, *, logsnr, cond_frames=None, cond_mask=None, cond_logsnr=None,
               drop_text=None, train=False, num_images=0):
    scale = self.param('scale', nn.initializers.ones, ())
    alpha = jnp.sqrt(jax.nn.sigmoid(cond_logsnr))[:, None, None, None, None]
    # / alpha undoes the augmentation's alpha scaling.
    return scale * jnp.roll(cond_frames / alpha, self.shift, axis=1)


def copy_given_generate_fn(config, video_shape, *, shift=0):
  """make_generate_fn of CopyGiven, sampling in 3 steps with (nearly) noiseless given frames."""
  config.model.conditioning = 'none'
  config.diffusion.parameterization = 'x'
  config.train.cond_aug_logsnr_min = config.train.cond_aug_logsnr_max = 30.0
  config.sample.num_steps, config.sample.batch_size, config.sample.cond_aug_logsnr = 3, 2, 30.0
  return sample_lib.make_generate_fn(
      CopyGiven(shift=shift), logsnr_fn=train.create_logsnr_fn(config), config=config,
      video_shape=video_shape, mesh=mesh_lib.make_mesh(config))


def test_sampling_feeds_the_network_the_low_res_video_upsampled_and_returns_its_own_output():
  video_shape = (3, 8, 8, 3)
  generate = copy_given_generate_fn(sr_config(), video_shape)
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


# ---------------------------------------------------------------- temporal


def test_training_gives_every_sth_frame_and_scores_the_frames_between(x64):
  lam = 1.5
  video = jax.random.uniform(jax.random.PRNGKey(5), (4, 6, 8, 8, 3), jnp.float64, -1, 1)
  inputs = jax.jit(lambda v, k: train.frame_conditioning_inputs(tsr_config(stride=3), v, k))
  cond, weights = inputs(video, jax.random.PRNGKey(6))
  given = np.array([True, False, False, True, False, False])
  np.testing.assert_array_equal(cond['cond_mask'], np.broadcast_to(given, (4, 6)))
  np.testing.assert_array_equal(weights, np.broadcast_to(~given, (4, 6)).astype(np.float32))
  cond_frames = np.asarray(cond['cond_frames'])
  assert not cond_frames[:, ~given].any()  # nothing of the frames to generate
  alpha, sigma = np.sqrt(1 / (1 + np.exp(-lam))), np.sqrt(1 / (1 + np.exp(lam)))
  eps = (cond_frames[:, given] - alpha * np.asarray(video)[:, given]) / sigma
  n = eps.size
  assert abs(eps.mean()) < 5 / np.sqrt(n) and abs(eps.std() - 1) < 5 / np.sqrt(2 * n), eps.std()
  # The frames between the given ones do not reach the conditioning.
  other = np.asarray(video).copy()
  other[:, ~given] = 0.5
  other_cond, _ = inputs(jnp.asarray(other), jax.random.PRNGKey(6))
  np.testing.assert_allclose(other_cond['cond_frames'], cond_frames, atol=1e-12)


def test_appended_images_are_never_given_to_a_temporal_stage():
  """Joint image-video training (data.num_images_per_video = K): the stride runs over the
  video's frames only; the K appended images are generated, never given."""
  config = tsr_config(stride=2)
  config.data.num_images_per_video = 3
  video = jnp.zeros((2, 8 + 3, 4, 4, 3))
  cond, weights = train.frame_conditioning_inputs(config, video, jax.random.PRNGKey(0))
  given = np.array([True, False] * 4 + [False] * 3)
  np.testing.assert_array_equal(cond['cond_mask'], np.broadcast_to(given, (2, 11)))
  np.testing.assert_array_equal(weights, np.broadcast_to(~given, (2, 11)).astype(np.float32))


def test_low_frame_rate_input_puts_the_frames_in_their_places():
  frames = jnp.arange(2 * 3 * 1 * 1 * 1, dtype=jnp.float32).reshape(2, 3, 1, 1, 1) + 1
  placed = np.asarray(frame_conditioning.low_frame_rate_input(frames, stride=2))
  assert placed.shape == (2, 6, 1, 1, 1)
  np.testing.assert_array_equal(placed[:, 0::2], frames)
  np.testing.assert_array_equal(placed[:, 1::2], 0)
  np.testing.assert_array_equal(frame_conditioning.low_frame_rate(jnp.asarray(placed), stride=2),
                                frames)
  with pytest.raises(ValueError, match='must be > 1 and divide num_frames=6'):
    frame_conditioning.low_frame_rate_mask(6, stride=4)


def test_sampling_feeds_the_given_frames_at_their_places_and_keeps_them():
  """With a stand-in network whose frame t is the given frame t - 1, frame 2k + 1 shows what
  the sampler put at frame 2k."""
  video_shape = (6, 4, 4, 3)
  generate = copy_given_generate_fn(tsr_config(), video_shape, shift=1)
  low = np.random.default_rng(0).uniform(-1, 1, (3, 3, 4, 4, 3)).astype(np.float32)
  params = {'scale': jnp.float32(0.5)}
  videos = (generate(params, ['x'] * 3, jax.random.PRNGKey(0), frames=low).astype(np.float32)
            * 2 - 255) / 255
  assert videos.shape == (3, *video_shape)
  np.testing.assert_allclose(videos[:, 0::2], low, atol=1.5 / 255)  # the given frames, as given
  # Between them the network's own output: half of the given frame before (it saw frame k at 2k).
  np.testing.assert_allclose(videos[:, 1::2], 0.5 * low, atol=1.5 / 255)
  with pytest.raises(ValueError, match=r'takes \(3, 4, 4, 3\)'):  # full-rate frames
    generate(params, ['x'], jax.random.PRNGKey(0), frames=np.zeros((1, *video_shape), np.uint8))
  with pytest.raises(ValueError, match='low-frame-rate videos'):
    generate(params, ['x'], jax.random.PRNGKey(0))


def test_given_frames_of_true_videos_are_every_sth_frame():
  videos = np.random.default_rng(1).integers(0, 256, (2, 8, 4, 4, 3), dtype=np.uint8)
  config = tsr_config(stride=4)
  np.testing.assert_array_equal(sample_lib.given_frames(config, videos), videos[:, [0, 4]])
  assert sample_lib.given_frames_shape(config, (8, 4, 4, 3)) == (2, 4, 4, 3)
  np.testing.assert_array_equal(sample_lib.given_frames_mask(config, 8),
                                [True, False, False, False, True, False, False, False])
  assert sample_lib.frame_stride_of(config) == 4 and not sample_lib.low_res_factor_of(config)


def test_a_stride_that_does_not_divide_the_frames_is_refused():
  with pytest.raises(UserError, match='cond_frame_stride=3 must be an integer > 1 dividing the '
                                      '16 frames'):
    config_validation.validate(tsr_config(stride=3))
  config_validation.validate(tsr_config(stride=4))

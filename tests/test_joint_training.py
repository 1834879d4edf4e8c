"""Joint image-video training (Ho et al. 2022, sec. 4.3.1): the pipeline appends K frames of other
videos to every training video, the train step flags them to the model (`num_images`), the loss
covers them; sampling and evaluation stay video-only."""

import json
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import moving_shapes as moving_shapes_experiment
from tests.smoke import smoke_config, stand_in_train_step
from tests.test_data_registry import data_config  # Also registers TinyLabelledVideos with TFDS.
from tests.test_data_registry import encoded_video
from tests.test_inspect_model import tiny_config as tiny_inspect_config
from tests.test_model import FAST_COMPILE, host_params, max_diff
# pytest fixtures (module-scoped: this file renders its own copy of the tiny dataset).
from tests.test_pipeline import builder, source_index  # pylint: disable=unused-import
from tests.test_pipeline import _ids, _iterator, NUM_TRAIN
from vdm_jax import config_validation
from vdm_jax import inspect_model
from vdm_jax import mesh as mesh_lib
from vdm_jax.data import image_dataset
from vdm_jax.data import pipeline
from vdm_jax.data import registry
from vdm_jax.errors import UserError
from vdm_jax.models.unet import VideoUNet

T, K = 4, 3  # Frames of the tiny dataset (tests/test_pipeline.py), images appended.


def _as_uint8(video: np.ndarray) -> np.ndarray:
  """The uint8 frames behind float32 model inputs (checking that the mapping is exact)."""
  as_uint8 = np.round((video.astype(np.float64) + 1) * 127.5).astype(np.uint8)
  np.testing.assert_array_equal(video, (as_uint8 / 127.5 - 1).astype(np.float32))
  return as_uint8


def _split_batch(batch):
  """(the video part as a batch of its own, uint8 images [B, K, H, W, 3])."""
  assert batch['video'].shape[1] == T + K
  return dict(batch, video=batch['video'][:, :T]), _as_uint8(batch['video'][:, T:])


# ---------------------------------------------------------------- pipeline


def test_appended_images_are_frames_of_other_videos(builder, source_index):
  source = builder.as_data_source(split='train')
  holders, positions = {}, {}  # Frame bytes -> the videos holding it, its frame indices there.
  for i in range(len(source)):
    for t, frame in enumerate(source[i]['video']):
      holders.setdefault(frame.tobytes(), set()).add(i)
      positions.setdefault(frame.tobytes(), set()).add(t)
  drawn_positions = set()
  it = _iterator(builder, num_images_per_video=K)
  for _ in range(2):
    batch = next(it)
    assert batch['video'].shape == (8, T + K, 16, 16, 3)
    video, images = _split_batch(batch)
    # The video part is a whole example with its own caption (checked pixel-exactly).
    for own, example_images in zip(_ids(video, source_index), images):
      # Each image is, pixel for pixel, a frame of some video of the split other than this one,
      # and the K images come from K different videos.
      others = [holders[image.tobytes()] - {own} for image in example_images]
      assert all(others), 'an appended image is a frame of the video itself'
      assert len(set.union(*others)) >= K
      drawn_positions.update(*(positions[image.tobytes()] for image in example_images))
    # Every example gets its own images.
    assert len({example_images.tobytes() for example_images in images}) == len(images)
  assert drawn_positions == set(range(T))  # Any frame of a video, not a fixed one.


def test_video_part_is_the_run_without_images_and_resumes_exactly(builder):
  """The appended images change nothing else: the same videos in the same order, the same
  captions; and the iterator state (still {'next_index'}) resumes exactly, across epochs."""
  plain, joint = _iterator(builder), _iterator(builder, num_images_per_video=K)
  for _ in range(7):  # 6 batches per epoch: crosses into the second (reshuffled) epoch.
    want, got = next(plain), next(joint)
    np.testing.assert_array_equal(got['video'][:, :T], want['video'])
    np.testing.assert_array_equal(got['tokens'], want['tokens'])
  state = json.loads(json.dumps(joint.get_state()))
  expected = [next(joint) for _ in range(3)]
  fresh = _iterator(builder, num_images_per_video=K)
  first = next(fresh)  # Its own position must not matter.
  fresh.set_state(state)
  for want in expected:
    got = next(fresh)
    np.testing.assert_array_equal(got['video'], want['video'])
    np.testing.assert_array_equal(got['tokens'], want['tokens'])
  # Deterministic from the seed: a new iterator starts with the same batch, images included.
  np.testing.assert_array_equal(next(_iterator(builder, num_images_per_video=K))['video'],
                                first['video'])
  with pytest.raises(UserError, match=f'num_images_per_video={NUM_TRAIN} needs more other videos'):
    _iterator(builder, num_images_per_video=NUM_TRAIN)


def test_appended_images_of_a_tfds_dataset_are_preprocessed_frames(tmp_path):
  """TFDS videos (raw, 12 frames of 6x10) through the preprocessor: each image is one stored frame
  of another video, center-cropped to 6x6 (columns 2..7) and flipped like the clips."""
  config = data_config('tiny_labelled_videos', tmp_path, num_frames=3, frame_skip=2, resolution=6,
                       random_flip=True)
  builder = registry.load_builder(config)  # 6 training videos; channel 0 = 10 frame + video.
  make = lambda k: pipeline.make_train_dataset(
      builder=builder, split='train', global_batch_size=2, seed=3, max_text_length=32,
      process_index=0, process_count=1, num_images_per_video=k)
  plain, joint = make(0), make(2)
  flips, frames = set(), set()
  for i in range(6):
    want, got = plain[i], joint[i]
    assert got['video'].shape == (2, 3 + 2, 6, 6, 3)
    np.testing.assert_array_equal(got['video'][:, :3], want['video'])
    np.testing.assert_array_equal(got['tokens'], want['tokens'])
    values = _as_uint8(got['video'])
    for clip in values:
      own = clip[0, 0, 0, 0] % 10
      videos = {image[0, 0, 0] % 10 for image in clip[3:]}
      assert own not in videos and len(videos) == 2
      for image in clip[3:]:
        frame, video = divmod(int(image[0, 0, 0]), 10)
        stored = encoded_video(12, 6, 10, offset=video)[frame, :, 2:8]
        flipped = image[0, 0, 2] > image[0, -1, 2]
        np.testing.assert_array_equal(image, stored[:, ::-1] if flipped else stored)
        flips.add(bool(flipped))
        frames.add(frame)
  assert flips == {True, False}
  assert len(frames) > 3  # Not only the frames of one clip start.


def _image_data(tmp_path, name: str):
  """config.data of the smoke experiment with `name` as its image dataset, in tmp_path."""
  config = moving_shapes_experiment.get_config('smoke')
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.num_images_per_video = K
  config.data.image_dataset = name
  return config.data


def _mock_images(tmp_path, name: str, resolution: int = 16) -> image_dataset.ImageSource:
  """The ImageSource of TFDS's mock examples of `name` (policy USE_CODE: random images of the
  dataset's own features, nothing downloaded), held in memory: mock_data replaces every
  array_record source while active, the tiny videos' included, so it must end before they are read."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
    images = image_dataset.load_image_source(_image_data(tmp_path, name), resolution=resolution)
    examples = [images.source[i] for i in range(len(images))]
  return image_dataset.ImageSource(examples, images.key, images.resolution)


def test_appended_images_of_an_image_dataset_are_its_images_as_frames(builder, source_index,
                                                                        tmp_path):
  images = _mock_images(tmp_path, 'cifar10')  # 32x32 RGB, drawn onto the 16x16 videos.
  assert len(images) == 10 and images.key == 'image'
  stored = images.source[0]['image']
  assert stored.shape == (32, 32, 3)
  # 32 -> 16 averages 2x2 blocks exactly (box filter), within uint8 rounding.
  block_means = stored.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))
  assert np.abs(images[0].astype(np.float64) - block_means).max() <= 1.0
  table = {images[i].tobytes(): i for i in range(len(images))}
  plain = _iterator(builder)
  joint = _iterator(builder, num_images_per_video=K, image_source=images)
  drawn = set()
  for _ in range(3):
    want, got = next(plain), next(joint)
    video, appended = _split_batch(got)
    np.testing.assert_array_equal(video['video'], want['video'])  # Videos untouched.
    np.testing.assert_array_equal(got['tokens'], want['tokens'])
    _ids(video, source_index)
    for example_images in appended:
      chosen = [table[image.tobytes()] for image in example_images]  # KeyError: not an image.
      assert len(set(chosen)) == K  # K distinct images.
      drawn.add(tuple(chosen))
  assert len(set().union(*drawn)) == len(images)  # Over 24 examples every image is drawn,
  assert len(drawn) > 20  # in changing combinations.


def test_every_process_draws_images_of_its_own(builder, tmp_path):
  """grain seeds each example by its position in the process's shard, the same on every
  process: without a stream per process, all processes would append the same images."""
  images = _mock_images(tmp_path, 'cifar10')
  table = {images[i].tobytes(): i for i in range(len(images))}

  def drawn(process_index, source=images):
    batch = next(_iterator(builder, num_images_per_video=K, image_source=source,
                           process_index=process_index, process_count=2))
    return _as_uint8(batch['video'][:, T:])

  ids = lambda batch: [[table[image.tobytes()] for image in example] for example in batch]
  assert ids(drawn(0)) != ids(drawn(1))
  # The same holds for frames of other videos (the default source).
  assert not np.array_equal(drawn(0, None), drawn(1, None))


def test_grey_image_datasets_become_rgb_frames(tmp_path):
  images = _mock_images(tmp_path, 'mnist')  # 28x28x1.
  stored, frame = images.source[3]['image'], images[3]
  assert stored.shape == (28, 28, 1) and frame.shape == (16, 16, 3)
  np.testing.assert_array_equal(frame[..., 0], frame[..., 1])
  np.testing.assert_array_equal(frame[..., 0], frame[..., 2])
  assert abs(float(frame.mean()) - float(stored.mean())) < 3  # The box filter keeps the mean.


@pytest.mark.parametrize('name,images,message', [
    ('no_such_images', K, "config.data.image_dataset='no_such_images' is not a TFDS dataset: "
                          'check the name'),
    ('imdb_reviews', K, "config.data.image_dataset='imdb_reviews' has no image feature among its "
                        'features'),
    ('cifar10', 11, "config.data.num_images_per_video=11 needs as many images, and 'cifar10' "
                    "'train' has 10: lower it."),
])
def test_image_dataset_errors_are_one_line(tmp_path, name, images, message):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data = _image_data(tmp_path, name)
  data.num_images_per_video = images
  with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(UserError, match=re.escape(message)) as error:
      image_dataset.load_image_source(data, resolution=16)
  assert '\n' not in str(error.value)


def test_an_unprepared_image_dataset_says_how_to_prepare_it(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def offline(*args, **kwargs):
    raise ConnectionError('no network')  # As on a machine without internet, without waiting.

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', offline)
  with pytest.raises(UserError, match=r"^TFDS dataset 'mnist' is not prepared in .* prepare it "
                                      r'with `tfds build mnist --data_dir='):
    image_dataset.load_image_source(_image_data(tmp_path, 'mnist'), resolution=16)
  assert image_dataset.load_image_source(_image_data(tmp_path, ''), resolution=16) is None


def test_an_image_dataset_without_appended_images_is_refused():
  config = moving_shapes_experiment.get_config('smoke')
  config.data.image_dataset = 'cifar10'
  with pytest.raises(UserError, match=r"^config.data.image_dataset='cifar10' supplies images for "
                                      r'joint training, but config.data.num_images_per_video=0'):
    config_validation.validate(config)
  config.data.num_images_per_video = 2
  config_validation.validate(config)


def test_validation_refuses_a_negative_count_and_sampling_stays_video_only():
  config = moving_shapes_experiment.get_config('smoke')
  config.data.num_images_per_video = -1
  with pytest.raises(UserError, match=r'^config.data.num_images_per_video=-1 must be an integer '
                                      r'>= 0: set --config.data.num_images_per_video') as error:
    config_validation.validate(config)
  assert '\n' not in str(error.value)
  config.data.num_images_per_video = 2
  config_validation.validate(config)
  # Sampling, evaluation and the parameters' init use the video's shape: T frames, no images.
  frames = moving_shapes_experiment.get_config('smoke')
  assert config_validation.video_shape(config) == config_validation.video_shape(frames)


# ---------------------------------------------------------------- train step and model


class ImageAwareDenoiser(nn.Module):
  """A two-parameter stand-in for the U-Net: out = w_video z on the video frames and w_image z
  on the last `num_images` frames, so its gradients tell which frames the train step flagged as
  images and whether the loss covers them."""

  @nn.compact
  def __call__(self, z, *, logsnr, text_tokens, drop_text=None, train=False, num_images=0):
    del logsnr, text_tokens, drop_text, train
    w_video = self.param('w_video', nn.initializers.constant(0.5), ())
    w_image = self.param('w_image', nn.initializers.constant(0.5), ())
    image = jnp.arange(z.shape[1]) >= z.shape[1] - num_images
    return jnp.where(image[None, :, None, None, None], w_image, w_video) * z


def test_train_step_flags_the_images_and_its_loss_covers_them(tmp_path):
  video_shape = (T, 8, 8, 3)  # The state is initialised with the video alone, as in training.
  rng = np.random.default_rng(0)

  def one_step(num_images, video):
    config = smoke_config(tmp_path, 10)
    config.optim.warmup_steps = 0
    config.data.num_images_per_video = num_images
    state, step, mesh = stand_in_train_step(ImageAwareDenoiser(), config, video_shape)
    tokens = np.zeros((config.batch_size, 4), np.int32)
    state, metrics = step(state, mesh_lib.global_batch({'video': video, 'tokens': tokens}, mesh))
    return {k: float(v) for k, v in state.params.items()}, float(metrics['train/loss'])

  batch_size = smoke_config(tmp_path, 10).batch_size
  video = rng.uniform(-1, 1, (batch_size, T + K, 8, 8, 3)).astype(np.float32)
  params, loss = one_step(K, video)
  assert np.isfinite(loss)
  assert params['w_image'] != 0.5 and params['w_video'] != 0.5  # Both parts are in the loss.
  changed = video.copy()
  changed[:, -1] = rng.uniform(-1, 1, changed[:, -1].shape)
  assert one_step(K, changed)[1] != loss  # The loss sees the appended frames.
  # Without config.data.num_images_per_video the same frames are all video frames.
  assert one_step(0, video)[0]['w_image'] == 0.5


def test_model_keeps_the_pipelines_images_apart(builder):
  """On a batch as the pipeline makes it, a U-Net with temporal attention and the temporal conv
  gives the video frames the same output whatever the appended images, and each image the output
  it gets alone as a one-frame video."""
  batch = next(_iterator(builder, num_images_per_video=K, global_batch_size=2))
  z = jnp.asarray(batch['video'])  # [2, T + K, 16, 16, 3]
  model = VideoUNet(channels=8, channel_mult=(1,), num_res_blocks=1, attention_resolutions=(16,),
                    head_dim=8, text_width=8, text_layers=0, text_heads=1, max_text_length=64,
                    temporal_conv=True, frame_embedding=True)
  kw = dict(logsnr=jnp.array([0.5, -1.0]), text_tokens=jnp.asarray(batch['tokens']))
  params = host_params(model, z[:, :T], **kw)  # Initialised with the video alone, as in training.
  compile_fast = lambda f, z: jax.jit(f).lower(z).compile(FAST_COMPILE)
  joint = compile_fast(lambda z: model.apply(params, z, **kw, num_images=K), z)
  alone = compile_fast(lambda z: model.apply(params, z, **kw), z[:, :1])
  out = np.asarray(joint(z))
  other_images = z.at[:, T:].set(z[::-1, T:])  # The other example's images.
  changed = np.asarray(joint(other_images))
  assert max_diff(changed[:, :T], out[:, :T]) == 0
  assert max_diff(changed[:, T:], out[:, T:]) > 1e-3
  for j in range(T, T + K):
    np.testing.assert_allclose(out[:, j], np.asarray(alone(z[:, j:j + 1]))[:, 0], atol=1e-5,
                               rtol=1e-5)


def test_inspect_counts_the_appended_images():
  """--mode inspect compiles what a training step computes: the video and its images."""
  config = tiny_inspect_config()
  config.model.attention_resolutions = ()  # The cheapest compile.
  config.data.num_images_per_video = 2
  compiled, _ = inspect_model.compile_network_gradient(config)
  frames, *frame_shape = config_validation.video_shape(config)
  _, z, _, _ = compiled.args_info[0]  # (params, z, target, inputs)
  assert z.shape == (1, frames + 2, *frame_shape)
  report = inspect_model.Report(parameters=1, flops_per_example=1.0, activation_bytes_per_example=1,
                                state_bytes=1, video_shape=(frames, *frame_shape))
  assert f'video {frames}x32x32x3 + 2 images' in inspect_model.format_report(config, report)

"""Dataset registry and TFDS video preprocessing: frame skip, clip start, crop, flip, captions."""

from etils import epath
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import base
from vdm_jax import config_validation
from vdm_jax.data import pipeline
from vdm_jax.data import preprocess
from vdm_jax.data import registry
from vdm_jax.data import tokenizer
from vdm_jax.errors import UserError

_NUM_STORED = 12  # Frames per stored synthetic video.
_LABELS = ('ApplyEyeMakeup', 'jumping_jack', 'YoYo')


def encoded_video(num_frames: int, height: int, width: int, *, offset: int = 0) -> np.ndarray:
  """uint8 [N, H, W, 3]: channel 0 = 10 * frame index (+ offset), 1 = 10 * row, 2 = 10 * col."""
  t, y, x = np.meshgrid(np.arange(num_frames), np.arange(height), np.arange(width), indexing='ij')
  return np.stack([10 * t + offset, 10 * y, 10 * x], axis=-1).astype(np.uint8)


class TinyLabelledVideos(tfds.core.GeneratorBasedBuilder):
  """A TFDS video dataset with class labels, prepared for real (no mock) into a temp dir."""

  VERSION = tfds.core.Version('1.0.0')
  code_path = epath.Path(__file__)

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'video': tfds.features.Tensor(shape=(_NUM_STORED, 6, 10, 3), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES),
            'label': tfds.features.ClassLabel(names=_LABELS),
        }), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(6), 'test': self._generate_examples(2)}

  def _generate_examples(self, n):
    for i in range(n):  # Example i: frame values offset by i, label i % 3.
      yield i, {'video': encoded_video(_NUM_STORED, 6, 10, offset=i), 'label': i % 3}


class TinyManualVideos(TinyLabelledVideos):
  """Needs files the user must download by hand."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Put the videos in manual_dir.'

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(len(list(dl_manager.manual_dir.iterdir())))}


def data_config(name, data_dir, **fields):
  config = base.get_base_config()
  config.data.name = name
  config.data.data_dir = str(data_dir)
  config.data.update(fields)
  return config


# ----------------------------------------------------------------------------------
# preprocess: exact frames and pixels
# ----------------------------------------------------------------------------------


def test_clip_takes_every_kth_frame_and_crops_the_center():
  video = encoded_video(_NUM_STORED, 6, 10)
  clip = preprocess.take_clip(video, num_frames=4, frame_skip=3, start=1)
  np.testing.assert_array_equal(clip[:, 0, 0, 0], 10 * np.array([1, 4, 7, 10]))
  out = preprocess.resize_and_center_crop(clip, resolution=6)  # Shorter side already 6: crop only.
  assert out.shape == (4, 6, 6, 3)
  np.testing.assert_array_equal(out[0, :, 0, 1], 10 * np.arange(6))  # Every row kept.
  np.testing.assert_array_equal(out[0, 0, :, 2], 10 * np.arange(2, 8))  # Columns 2..7 of 0..9.
  with pytest.raises(ValueError, match='spans 13 stored frames'):
    preprocess.take_clip(video, num_frames=5, frame_skip=3, start=0)


def test_resize_averages_pixel_blocks_then_crops():
  video = encoded_video(2, 8, 12)  # -> 4 x 6 by 2x2 box means, then columns 1..4.
  out = preprocess.resize_and_center_crop(video, resolution=4)
  np.testing.assert_array_equal(out[1, :, 0, 0], [10] * 4)  # Frame index survives.
  np.testing.assert_array_equal(out[0, :, 0, 1], 20 * np.arange(4) + 5)  # mean(20i, 20i + 10)
  np.testing.assert_array_equal(out[0, 0, :, 2], 20 * np.arange(1, 5) + 5)


def test_random_view_draws_every_start_and_flips():
  p = preprocess.VideoPreprocessor(video_key='video', num_frames=4, frame_skip=3, resolution=6,
                                   random_flip=True)
  example = {'video': encoded_video(_NUM_STORED, 6, 10)}
  starts, flips = set(), set()
  for seed in range(64):
    out = p.random_map(example, np.random.default_rng(seed))['video']
    first = int(out[0, 0, 0, 0]) // 10
    np.testing.assert_array_equal(out[:, 0, 0, 0] // 10, first + 3 * np.arange(4))
    flipped = out[0, 0, 0, 2] > out[0, 0, -1, 2]
    np.testing.assert_array_equal(out[0, 0, :, 2], 10 * (np.arange(7, 1, -1) if flipped
                                                         else np.arange(2, 8)))
    starts.add(first)
    flips.add(bool(flipped))
  assert starts == {0, 1, 2}  # The span is 10 of 12 frames.
  assert flips == {True, False}
  np.testing.assert_array_equal(p.map(example)['video'], p.convert(example, start=0, flip=False)['video'])


def test_label_captions():
  p = preprocess.VideoPreprocessor(video_key='v', num_frames=1, frame_skip=1, resolution=2,
                                   label_key='label', label_names=_LABELS)
  assert [p.caption({'label': i}) for i in range(3)] == [
      'a video of apply eye makeup', 'a video of jumping jack', 'a video of yo yo']


# ----------------------------------------------------------------------------------
# TFDS datasets through the registry and the pipeline
# ----------------------------------------------------------------------------------


def test_labelled_tfds_dataset_through_the_pipeline(tmp_path):
  config = data_config('tiny_labelled_videos', tmp_path, num_frames=3, frame_skip=2, resolution=6,
                       random_flip=True)
  builder = registry.load_builder(config)
  assert config_validation.video_shape(config) == (3, 6, 6, 3)
  test = builder.as_data_source('test')
  assert len(test) == 2
  assert test[1]['caption'] == 'a video of jumping jack'
  np.testing.assert_array_equal(test[1]['video'][:, 0, 0, 0], [1, 21, 41])  # Frames 0, 2, 4.
  videos, captions = pipeline.make_eval_source(builder=builder, split='test')  # Evaluation's view.
  assert videos.shape == (2, 3, 6, 6, 3) and captions[0] == 'a video of apply eye makeup'
  np.testing.assert_array_equal(videos[1], test[1]['video'])

  def batches(process_index, num):
    ds = pipeline.make_train_dataset(builder=builder, split='train', global_batch_size=2, seed=3,
                                     max_text_length=32, process_index=process_index,
                                     process_count=2, num_epochs=1)
    return [ds[i] for i in range(num)]

  seen = []
  for process_index in (0, 1):
    for batch in batches(process_index, 3):
      video = batch['video']
      assert video.shape == (1, 3, 6, 6, 3) and video.dtype == np.float32
      values = np.rint((video[0] + 1) * 127.5).astype(int)
      offset, start = values[0, 0, 0, 0] % 10, values[0, 0, 0, 0] // 10
      np.testing.assert_array_equal(values[:, 0, 0, 0], 10 * (start + 2 * np.arange(3)) + offset)
      seen.append(offset)
  assert sorted(seen) == list(range(6))  # Two shards: disjoint, covering the split.


def test_restored_iterator_continues_exactly(tmp_path):
  config = data_config('tiny_labelled_videos', tmp_path, num_frames=3, resolution=6,
                       random_flip=True)
  builder = registry.load_builder(config)
  make = lambda: pipeline.make_train_iterator(
      builder=builder, split='train', global_batch_size=2, seed=0, max_text_length=8,
      process_index=0, process_count=1)
  it = make()
  for _ in range(4):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  restored = make()
  restored.set_state(state)
  for want in expected:
    got = next(restored)
    np.testing.assert_array_equal(got['video'], want['video'])
    np.testing.assert_array_equal(got['tokens'], want['tokens'])


def test_bair_on_mock_data():
  config = data_config('bair_robot_pushing_small', '/unused', num_frames=4, frame_skip=2,
                       resolution=16, random_flip=True)
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=4):
    builder = registry.load_builder(config)
    example = builder.as_data_source('train')[0]
    raw = builder.raw_data_source('train')[0]['image_main']  # [30, 64, 64, 3]
    ds = pipeline.make_train_dataset(builder=builder, split='train', global_batch_size=2, seed=0,
                                     max_text_length=8, process_index=0, process_count=1)
    batch = ds[0]
  assert example['video'].shape == (4, 16, 16, 3) and example['caption'] == ''
  expected = preprocess.resize_and_center_crop(raw[0:7:2], resolution=16)
  np.testing.assert_array_equal(example['video'], expected)
  assert batch['video'].shape == (2, 4, 16, 16, 3)


@pytest.mark.parametrize('name', ['moving_mnist', 'ucf101'])
def test_video_feature_datasets_need_tensorflow(name):
  """tfds.features.Video calls TensorFlow in its constructor, so even mock data needs it."""
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
    pytest.skip('TensorFlow is installed')
  except ImportError:
    pass
  config = data_config(name, '/unused')
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=2):
    with pytest.raises(UserError, match='needs tensorflow') as error:
      registry.load_builder(config)
  assert '\n' not in str(error.value)


def _expected_clip(stored, *, start, num_frames, frame_skip, resolution):
  """Frames start, start + k, ... of a stored [N, H, W, 1 or 3] video, gray -> RGB, resized."""
  frames = np.asarray(stored)[start:start + (num_frames - 1) * frame_skip + 1:frame_skip]
  if frames.shape[-1] == 1:
    frames = np.repeat(frames, 3, axis=-1)
  return preprocess.resize_and_center_crop(frames, resolution=resolution)


@pytest.mark.parametrize('name', ['moving_mnist', 'ucf101'])
def test_video_feature_datasets_with_tensorflow_on_mock_data(name, tmp_path):
  """With TensorFlow installed, moving_mnist (20 x 64x64x1, unlabelled) and ucf101 (N x 256x256x3,
  101 labels) load through the registry and the train pipeline at the configured shape."""
  pytest.importorskip('tensorflow', reason='tfds.features.Video (moving_mnist, ucf101) needs '
                      'TensorFlow even to build its features')
  frames, skip, res, n = 3, 2, 8, 3
  shape = dict(num_frames=frames, frame_skip=skip, resolution=res)
  config = data_config(name, '/unused', random_flip=False, **shape)
  labelled = name == 'ucf101'
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=n):
    builder = registry.load_builder(config)
    video_key = registry.TFDS_VIDEO_SPECS[name].video_key
    raw = [builder.raw_data_source('train')[i] for i in range(n)]  # The stored (mock) examples.
    examples = [builder.as_data_source('train')[i] for i in range(n)]
    ds = pipeline.make_train_dataset(builder=builder, split='train', global_batch_size=n, seed=0,
                                     max_text_length=32, process_index=0, process_count=1,
                                     num_epochs=1, labels=labelled)
    batch = ds[0]
  assert config_validation.video_shape(config) == (frames, res, res, 3)
  stored_shape = (20, 64, 64, 1) if name == 'moving_mnist' else (256, 256, 3)
  assert all(np.shape(r[video_key])[-len(stored_shape):] == stored_shape for r in raw)

  label_names = builder.info.features['label'].names if labelled else None
  for r, example in zip(raw, examples):
    assert example['video'].shape == (frames, res, res, 3) and example['video'].dtype == np.uint8
    np.testing.assert_array_equal(example['video'],
                                  _expected_clip(r[video_key], start=0, **shape))
    if labelled:
      assert example['label'] == int(r['label'])
      assert example['caption'] == (
          f'a video of {preprocess.label_to_text(label_names[int(r["label"])])}')
    else:
      assert example['caption'] == '' and 'label' not in example
  if labelled:  # The names come from TFDS's labels file, in its order.
    assert len(label_names) == 101
    assert builder.train_preprocessor.caption({'label': 0}) == 'a video of apply eye makeup'

  # Training: each example once (one epoch, one batch), a clip of every `skip`-th frame from some
  # start, its caption's tokens (and label).
  assert batch['video'].shape == (n, frames, res, res, 3) and batch['video'].dtype == np.float32
  seen = []
  for video, tokens in zip(np.rint((batch['video'] + 1) * 127.5).astype(np.uint8),
                           batch['tokens']):
    matches = [(i, start) for i, r in enumerate(raw)
               for start in range(len(r[video_key]) - (frames - 1) * skip)
               if np.array_equal(video, _expected_clip(r[video_key], start=start, **shape))]
    assert len(matches) == 1, matches
    i = matches[0][0]
    seen.append(i)
    np.testing.assert_array_equal(
        tokens, tokenizer.tokenize([examples[i]['caption']], max_length=32)[0])
  assert sorted(seen) == list(range(n))
  if labelled:
    np.testing.assert_array_equal(batch['label'], [examples[i]['label'] for i in seen])

  # Real (not mock) reading decodes the stored example into a list of frames: the preprocessor
  # takes that too (ucf101 stores JPEG frames, so compare with the decoded ones).
  features = tfds.builder(name, data_dir=str(tmp_path)).info.features
  decoded = features.deserialize_example_np(features.serialize_example(raw[0]))
  if not labelled:  # PNG frames: lossless.
    np.testing.assert_array_equal(np.asarray(decoded[video_key]), raw[0][video_key])
  np.testing.assert_array_equal(builder.train_preprocessor.map(decoded)['video'],
                                _expected_clip(decoded[video_key], start=0, **shape))
  assert builder.train_preprocessor.map(decoded)['caption'] == examples[0]['caption']


def test_ucf101_spec_maps_labels_to_captions():
  spec = registry.TFDS_VIDEO_SPECS['ucf101']
  p = preprocess.VideoPreprocessor(video_key=spec.video_key, num_frames=2, frame_skip=1,
                                   resolution=4, label_key=spec.label_key, label_names=_LABELS)
  out = p.map({'video': encoded_video(3, 4, 4), 'label': 2})
  assert out['caption'] == 'a video of yo yo' and out['video'].shape == (2, 4, 4, 3)


def test_unprepared_dataset_error_names_the_command(tmp_path):
  config = data_config('tiny_manual_videos', tmp_path / 'tfds', manual_dir=str(tmp_path / 'none'))
  with pytest.raises(UserError) as error:
    registry.load_builder(config)
  message = str(error.value)
  assert '\n' not in message
  assert 'tfds build tiny_manual_videos' in message and '--file_format=array_record' in message
  assert f'--manual_dir={tmp_path / "none"}' in message


def test_unknown_name_and_short_videos_are_one_line_errors(tmp_path):
  with pytest.raises(UserError, match='neither a built-in dataset'):
    registry.load_builder(data_config('no_such_dataset_xyz', tmp_path))
  with pytest.raises(UserError, match=r'spans 25 frames; .* have 12'):
    registry.load_builder(data_config('tiny_labelled_videos', tmp_path, num_frames=13,
                                      frame_skip=2))


def test_moving_shapes_is_unchanged(tmp_path):
  config = data_config('moving_shapes', tmp_path, builder_config='smoke')
  assert config_validation.video_shape(config) == (16, 32, 32, 3)
  assert registry.split_size(config, 'test') == 64


def test_caption_adherence_is_refused_for_other_datasets(tmp_path):
  config = data_config('tiny_labelled_videos', tmp_path)
  config.train.eval_at_end = True
  with pytest.raises(UserError, match='set --config.train.eval_at_end=False'):
    config_validation.validate(config)
  config.train.eval_at_end = False
  config_validation.validate(config)


def test_pool_factor_shows_a_built_in_dataset_at_a_lower_resolution(smoke_data_dir):
  """config.data.pool_factor: the same examples, each video the 2x2 means of the stored one, in
  the model's shape, in the training batches and in the evaluation source."""
  from vdm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  full = data_config('moving_shapes', smoke_data_dir, builder_config='smoke')
  pooled = data_config('moving_shapes', smoke_data_dir, builder_config='smoke', pool_factor=2)
  assert config_validation.video_shape(pooled) == (16, 16, 16, 3)
  videos, captions = pipeline.make_eval_source(builder=registry.load_builder(full), num_examples=3)
  small, small_captions = pipeline.make_eval_source(builder=registry.load_builder(pooled),
                                                    num_examples=3)
  assert small_captions == captions and small.shape == (3, 16, 16, 16, 3)
  means = videos.reshape(3, 16, 16, 2, 16, 2, 3).mean(axis=(3, 5))
  assert np.abs(small - means).max() <= 0.5  # rounded to uint8
  batch = next(iter(pipeline.make_train_dataset(
      builder=registry.load_builder(pooled), split='train', global_batch_size=2, seed=0,
      max_text_length=16, process_index=0, process_count=1)))
  assert batch['video'].shape == (2, 16, 16, 16, 3)
  with pytest.raises(UserError, match='pool_factor=3 must be an integer >= 1 dividing'):
    registry.check_dataset(data_config('moving_shapes', smoke_data_dir, builder_config='smoke',
                                       pool_factor=3).data)
  with pytest.raises(UserError, match='set config.data.resolution instead'):
    registry.check_dataset(data_config('tiny_labelled_videos', smoke_data_dir,
                                       pool_factor=2).data)


def test_frame_skip_shows_a_built_in_dataset_at_a_lower_frame_rate(smoke_data_dir):
  """config.data.frame_skip on a built-in dataset: the same examples, frames 0, s, 2s, ... of
  each stored video (with pool_factor, each also pooled), in batches and in the evaluation
  source; a skip that does not divide the frames is refused in one line."""
  from vdm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  full = data_config('moving_shapes', smoke_data_dir, builder_config='smoke')
  skipped = data_config('moving_shapes', smoke_data_dir, builder_config='smoke', frame_skip=2)
  both = data_config('moving_shapes', smoke_data_dir, builder_config='smoke', frame_skip=4,
                     pool_factor=2)
  assert config_validation.video_shape(skipped) == (8, 32, 32, 3)
  assert config_validation.video_shape(both) == (4, 16, 16, 3)
  videos, captions = pipeline.make_eval_source(builder=registry.load_builder(full), num_examples=3)
  half, half_captions = pipeline.make_eval_source(builder=registry.load_builder(skipped),
                                                  num_examples=3)
  assert half_captions == captions
  np.testing.assert_array_equal(half, videos[:, 0::2])
  quarter, _ = pipeline.make_eval_source(builder=registry.load_builder(both), num_examples=3)
  means = videos[:, 0::4].reshape(3, 4, 16, 2, 16, 2, 3).mean(axis=(3, 5))
  assert quarter.shape == (3, 4, 16, 16, 3) and np.abs(quarter - means).max() <= 0.5
  batch = next(iter(pipeline.make_train_dataset(
      builder=registry.load_builder(skipped), split='train', global_batch_size=2, seed=0,
      max_text_length=16, process_index=0, process_count=1)))
  assert batch['video'].shape == (2, 8, 32, 32, 3)
  with pytest.raises(UserError, match='frame_skip=3 must be an integer >= 1 dividing the 16 frames'):
    registry.check_dataset(data_config('moving_shapes', smoke_data_dir, builder_config='smoke',
                                       frame_skip=3).data)

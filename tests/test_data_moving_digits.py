"""Moving Digits: deterministic, disjoint scans per split, true captions, digits stay in frame."""

import numpy as np
import pytest

from experiments import base
from vdm_jax import config_validation
from vdm_jax.data import moving_digits
from vdm_jax.data import moving_shapes
from vdm_jax.data import registry

# One pytest-xdist worker runs this file: its module fixtures are built once.
pytestmark = pytest.mark.xdist_group('test_data_moving_digits')

TINY = moving_digits.MovingDigitsConfig(name='tiny', num_frames=5, resolution=32, digit_size=12,
                                        num_digits=2, num_train=6, num_test=3)


@pytest.fixture(scope='module')
def builder(tmp_path_factory):
  return moving_digits.load_builder(TINY, tmp_path_factory.mktemp('tfds'))


def examples(builder, split):
  source = builder.as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def test_deterministic(builder, tmp_path):
  again = moving_digits.load_builder(TINY, tmp_path)
  for split in ('train', 'test'):
    for a, b in zip(examples(builder, split), examples(again, split), strict=True):
      np.testing.assert_array_equal(a['video'], b['video'])
      assert a['caption'] == b['caption']
  first = examples(builder, 'train')
  assert len({e['video'].tobytes() for e in first}) == len(first)  # Not all the same video.


def test_splits_use_disjoint_scans(builder):
  train, test = moving_digits.split_scan_indices('train'), moving_digits.split_scan_indices('test')
  assert not set(train) & set(test)
  assert len(train) + len(test) == 1797
  for split, pool in (('train', train), ('test', test)):
    for e in examples(builder, split):
      assert set(e['scan_indices']) <= set(pool)


def test_captions_name_the_drawn_digits(builder):
  _, labels = moving_digits.load_scans()
  for split in ('train', 'test'):
    for e in examples(builder, split):
      digits = labels[e['scan_indices']]
      np.testing.assert_array_equal(e['digits'], digits)
      caption = e['caption'].decode() if isinstance(e['caption'], bytes) else e['caption']
      assert caption == f'digit {digits[0]} and digit {digits[1]}'


def test_video_is_the_scans_glyphs_at_their_corners():
  images, _ = moving_digits.load_scans()
  for index in range(5):
    video, caption, info = moving_digits.render_video(
        moving_shapes.example_rng(0, 'test', index), split='test', num_frames=6, resolution=32,
        num_digits=1, digit_size=12)
    (scan,), (corners,) = info['scan_indices'], info['corners']
    glyph = moving_digits.upscale(images[scan], 12)
    expected = np.zeros((6, 32, 32), np.uint8)
    for t, (x, y) in enumerate(corners):
      expected[t, y:y + 12, x:x + 12] = glyph
    np.testing.assert_array_equal(video, np.repeat(expected[..., None], 3, axis=-1))
    assert caption == f'digit {info["digits"][0]}'


def test_digits_bounce_and_stay_in_frame():
  bounced = 0
  for seed in range(50):
    corners = moving_digits.bounce_trajectory(np.random.default_rng(seed), num_frames=20,
                                              limit=36.0, speed_range=(3.0, 5.0))
    assert corners.min() >= 0 and corners.max() <= 36.0
    steps = np.diff(corners, axis=0)
    bounced += np.any(np.sign(steps[1:]) * np.sign(steps[:-1]) < 0)
  assert bounced > 40  # 57+ px of travel in a 36 px range: nearly every one turns.


def test_registry_opens_it(tmp_path):
  config = base.get_base_config()
  config.data.name = 'moving_digits'
  config.data.builder_config = 'two_digits'
  config.data.data_dir = str(tmp_path)
  assert config_validation.video_shape(config) == (16, 64, 64, 3)
  assert registry.split_size(config, 'test') == 1000


def test_split_over_tfds_memory_buffer_builds_without_tensorflow(tmp_path, monkeypatch):
  """TFDS spills a split larger than its in-memory buffer (1 GB; the default config's train split
  is 2 GB) to files it writes with TensorFlow, which is not installed: prepare keeps it in memory.
  A 1-byte buffer stands in for the 2 GB split."""
  from tensorflow_datasets.core import shuffle  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(shuffle, 'MAX_MEM_BUFFER_SIZE', 1)
  small = moving_digits.load_builder(TINY, tmp_path)
  assert len(small.as_data_source(split='train')) == TINY.num_train

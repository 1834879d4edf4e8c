"""Tests for vdm_jax.data.moving_shapes: renderer and TFDS builder (no TensorFlow)."""

import sys

import numpy as np
import pytest

from vdm_jax.data import moving_shapes as ms
from vdm_jax.data import tracker


def _tiny_config(name='tiny', seed=0, **kwargs):
  kwargs = dict(num_train=24, num_test=8, **kwargs)
  return ms.MovingShapesConfig(name=name, seed=seed, **kwargs)


@pytest.mark.parametrize('kwargs', [dict(), dict(num_objects=2), dict(resolution=64),
                                    dict(num_frames=8, resolution=16)])
def test_render_is_deterministic_and_seed_dependent(kwargs):
  v1, c1, _ = ms.render_video(np.random.default_rng(3), **kwargs)
  v2, c2, _ = ms.render_video(np.random.default_rng(3), **kwargs)
  np.testing.assert_array_equal(v1, v2)
  assert c1 == c2
  others = [ms.render_video(np.random.default_rng(s), **kwargs)[0] for s in range(4, 8)]
  assert not any(np.array_equal(v1, o) for o in others)


@pytest.mark.parametrize('kwargs', [dict(), dict(num_objects=2), dict(resolution=64)])
def test_objects_stay_wholly_inside_and_match_the_pixels(kwargs):
  for seed in range(200):
    video, caption, objects = ms.render_video(np.random.default_rng(seed), **kwargs)
    T, H, W, C = video.shape
    assert (T, H, W, C) == (16, kwargs.get('resolution', 32), kwargs.get('resolution', 32), 3)
    union = np.zeros((T, H, W), bool)
    for obj in objects:
      x0, y0, x1, y1 = obj['bbox'].T
      # The continuous extent of the shape lies inside the frame in every frame.
      assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= W).all() and (y1 <= H).all()
      mask = obj['mask']
      assert mask.any(axis=(1, 2)).all(), 'object missing from a frame'
      # Rendered pixels lie within the (continuous) bounding box.
      ts, ys, xs = np.nonzero(mask)
      assert (xs + 0.5 >= x0[ts]).all() and (xs + 0.5 <= x1[ts]).all()
      assert (ys + 0.5 >= y0[ts]).all() and (ys + 0.5 <= y1[ts]).all()
      # Pure color inside the mask.
      assert (video[mask] == ms.COLORS[obj['color']]).all()
      # Constant velocity along the named direction, 1-2 px/frame at 32x32 (clipped
      # so the object fits).
      step = np.diff(obj['centers'], axis=0)
      np.testing.assert_allclose(step, np.array(ms.DIRECTIONS[obj['direction']]) *
                                 obj['speed'] * np.ones_like(step), atol=1e-9)
      scale = W / 32
      assert scale * 1.0 - 1e-9 <= obj['speed'] <= scale * 2.0 + 1e-9
      assert 0.2 * W <= obj['size'] <= 0.3 * W
      assert not (union & mask).any(), 'objects overlap'
      union |= mask
    assert (video[~union] == 0).all(), 'background is not black'
    assert tracker.parse_caption(caption) == [
        (o['color'], o['shape'], o['direction']) for o in objects]
    if len(objects) == 2:
      assert objects[0]['color'] != objects[1]['color']


def test_caption_grammar():
  _, caption, objects = ms.render_video(np.random.default_rng(0), num_objects=2)
  o1, o2 = objects
  assert caption == (f'a {o1["color"]} {o1["shape"]} moving {o1["direction"]} and '
                     f'a {o2["color"]} {o2["shape"]} moving {o2["direction"]}')


def _read(builder, split):
  source = builder.as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def test_builder_is_deterministic_and_needs_no_tensorflow(tmp_path):
  config = _tiny_config()
  a = ms.load_builder(config, tmp_path / 'a')
  b = ms.load_builder(ms.MovingShapesConfig(**{**config.__dict__}), tmp_path / 'b')
  c = ms.load_builder(_tiny_config(seed=1), tmp_path / 'c')
  assert 'tensorflow' not in sys.modules
  for split, n in (('train', 24), ('test', 8)):
    ea, eb, ec = _read(a, split), _read(b, split), _read(c, split)
    assert len(ea) == len(eb) == len(ec) == n
    for x, y in zip(ea, eb):
      np.testing.assert_array_equal(x['video'], y['video'])
      assert x['caption'] == y['caption']
    assert not any(np.array_equal(x['video'], z['video']) for x, z in zip(ea, ec))
  # Stored in index order; example i is the render of rng (seed, split, i).
  train, test = _read(a, 'train'), _read(a, 'test')
  for split, examples in (('train', train), ('test', test)):
    for i in (0, 5):
      video, caption, _ = ms.render_video(ms.example_rng(0, split, i))
      np.testing.assert_array_equal(examples[i]['video'], video)
      caption_read = examples[i]['caption']
      assert (caption_read.decode() if isinstance(caption_read, bytes)
              else caption_read) == caption
      assert examples[i]['video'].dtype == np.uint8
  # Train and test use different seeds.
  assert not any(np.array_equal(x['video'], y['video']) for x, y in zip(train, test))


def test_load_builder_reuses_prepared_data(tmp_path):
  config = _tiny_config(name='tiny_reuse')
  builder = ms.load_builder(config, tmp_path)
  files = sorted(p for p in (tmp_path / 'moving_shapes').rglob('*') if p.is_file())
  mtimes = [p.stat().st_mtime_ns for p in files]
  again = ms.load_builder(config, tmp_path)
  assert again.info.splits['train'].num_examples == 24
  assert [p.stat().st_mtime_ns for p in files] == mtimes
  assert builder.data_dir == again.data_dir


def test_configs():
  configs = ms.MovingShapes.builder_configs
  assert {'default', 'two_objects', 'res64', 'smoke'} <= set(configs)
  d = configs['default']
  assert (d.num_frames, d.resolution, d.num_objects, d.num_train, d.num_test) == (
      16, 32, 1, 20_000, 1_000)
  assert configs['two_objects'].num_objects == 2
  assert configs['res64'].resolution == 64
  assert (configs['smoke'].num_train, configs['smoke'].num_test) == (256, 64)
  with pytest.raises(ValueError, match='default'):
    ms.load_builder('no_such_config', '/nonexistent')
  with pytest.raises(ValueError, match='train'):
    ms.example_rng(0, 'validation', 0)

"""Tests for vdm_jax.data.tracker: captions of ground-truth videos are verified."""

import numpy as np
import pytest

from vdm_jax.data import moving_shapes as ms
from vdm_jax.data import tracker


def _videos(n, seed=0, **kwargs):
  rendered = [ms.render_video(np.random.default_rng([seed, i]), **kwargs) for i in range(n)]
  return np.stack([r[0] for r in rendered]), [r[1] for r in rendered]


def test_parse_caption_inverts_the_renderer():
  assert tracker.parse_caption('a red circle moving left') == [('red', 'circle', 'left')]
  assert tracker.parse_caption(
      b'a white triangle moving up-left and a cyan square moving down') == [
          ('white', 'triangle', 'up-left'), ('cyan', 'square', 'down')]
  for bad in ('a red circle', 'a purple circle moving left', 'a red circle moving leftish'):
    with pytest.raises(ValueError):
      tracker.parse_caption(bad)


@pytest.mark.parametrize('kwargs', [dict(), dict(num_objects=2), dict(resolution=64)],
                         ids=['default', 'two_objects', 'res64'])
def test_ground_truth_captions_are_verified(kwargs):
  videos, captions = _videos(500, **kwargs)
  scores = tracker.score_caption_adherence(videos, captions)
  assert scores['all'] >= 0.99, scores
  assert min(scores['color'], scores['shape'], scores['direction']) >= scores['all']
  assert scores['count'] >= 0.99
  assert scores['consistency'] > 0.8


def test_wrong_captions_are_caught():
  videos, captions = _videos(60, seed=1, num_objects=2)
  opposite = {'left': 'right', 'right': 'left', 'up': 'down', 'down': 'up',
              'up-left': 'down-right', 'down-right': 'up-left',
              'up-right': 'down-left', 'down-left': 'up-right'}
  flipped = [' and '.join(f'a {c} {s} moving {opposite[d]}' for c, s, d in
                          tracker.parse_caption(cap)) for cap in captions]
  scores = tracker.score_caption_adherence(videos, flipped)
  assert scores['direction'] == 0 and scores['all'] == 0
  assert scores['color'] == 1 and scores['shape'] >= 0.99
  next_shape = {'circle': 'square', 'square': 'triangle', 'triangle': 'circle'}
  reshaped = [' and '.join(f'a {c} {next_shape[s]} moving {d}' for c, s, d in
                           tracker.parse_caption(cap)) for cap in captions]
  scores = tracker.score_caption_adherence(videos, reshaped)
  assert scores['shape'] == 0 and scores['all'] == 0 and scores['direction'] >= 0.99


def test_track_video_reads_the_metadata():
  for seed in range(20):
    video, _, objects = ms.render_video(np.random.default_rng(seed), num_objects=2)
    tracked = {o['color']: o for o in tracker.track_video(video)}
    assert set(tracked) == {o['color'] for o in objects}
    for obj in objects:
      found = tracked[obj['color']]
      assert (found['shape'], found['direction']) == (obj['shape'], obj['direction'])
      np.testing.assert_allclose(found['velocity'], np.diff(obj['centers'], axis=0)[0],
                                 atol=0.25)
      # Pixel centroids follow the shape's center (a triangle's centroid sits lower
      # than its box center, hence the offset is removed).
      offset = np.mean(found['centroids'] - obj['centers'], axis=0)
      assert np.all(np.abs(offset) <= [0.5, 0.2 * obj['size']])
      np.testing.assert_allclose(found['centroids'] - offset, obj['centers'], atol=0.8)


def test_empty_and_black_videos_count_as_wrong():
  black = np.zeros((3, 16, 32, 32, 3), np.uint8)
  assert tracker.track_video(black[0]) == []
  scores = tracker.score_caption_adherence(black, ['a red circle moving left'] * 3)
  assert all(v == 0 for v in scores.values()), scores
  # Specks only (isolated single pixels of color) are not objects either.
  specks = black[0].copy()
  rng = np.random.default_rng(0)
  specks[rng.integers(16, size=30), rng.integers(32, size=30), rng.integers(32, size=30)] = 255
  assert tracker.track_video(specks) == []


def test_static_and_flickering_objects():
  videos, captions = _videos(30, seed=2)
  static = np.repeat(videos[:, :1], videos.shape[1], axis=1)
  scores = tracker.score_caption_adherence(static, captions)
  assert scores['direction'] == 0 and scores['color'] == 1
  flicker = videos.copy()
  flicker[:, 1::2] = 0  # The object vanishes every other frame.
  base = tracker.score_caption_adherence(videos, captions)['consistency']
  assert tracker.score_caption_adherence(flicker, captions)['consistency'] < 0.5 * base


def test_robust_to_imperfect_generated_videos():
  """Noise, dimmed/shifted colors, blur-like halos and specks do not break it."""
  videos, captions = _videos(200, seed=3, num_objects=2)
  rng = np.random.default_rng(0)
  x = videos.astype(np.float32)
  x = x * rng.uniform(0.75, 1.0, size=(len(x), 1, 1, 1, 3))  # Dimmer, tinted colors.
  x += 30 * rng.standard_normal(x.shape)  # Pixel noise.
  halo = (np.roll(x, 1, axis=3) + np.roll(x, -1, axis=3)) / 2  # Smeared edges.
  x = np.where(x.max(-1, keepdims=True) < 128, 0.45 * halo, x)
  specks = rng.uniform(size=x.shape[:-1]) < 0.003
  x[specks] = rng.choice([0, 255], size=(specks.sum(), 3))
  noisy = np.clip(np.round(x), 0, 255).astype(np.uint8)
  assert not np.array_equal(noisy, videos)
  scores = tracker.score_caption_adherence(noisy, captions)
  assert scores['all'] >= 0.98, scores

"""Reference features kept between evaluations (vdm_jax/metrics/feature_cache.py)."""

import numpy as np

from vdm_jax.metrics import feature_cache


def test_cached_features_are_read_back_and_keyed_by_weights_and_videos(tmp_path):
  calls = []

  def compute(videos):
    calls.append(len(videos))
    return {'pool': videos.reshape(len(videos), -1).astype(np.float32).mean(1, keepdims=True),
            'logits': np.ones((len(videos), 3), np.float32)}

  weights = tmp_path / 'weights.npz'
  weights.write_bytes(b'first weights')
  videos = np.random.default_rng(0).integers(0, 256, (5, 2, 4, 4, 3), dtype=np.uint8)
  cache = str(tmp_path / 'cache')
  fetch = lambda v: feature_cache.cached_features(
      cache, name='inception', weights=feature_cache.path_digest(str(weights)), videos=v,
      compute=compute)
  first = fetch(videos)
  again = fetch(videos)
  assert calls == [5]  # the second call read the file
  assert set(again) == {'pool', 'logits'}
  np.testing.assert_array_equal(again['pool'], first['pool'])
  changed = videos.copy()
  changed[0, 0, 0, 0, 0] ^= 1  # one bit of one video
  fetch(changed)
  assert calls == [5, 5]
  weights.write_bytes(b'other weights')  # the same path, new contents
  fetch(videos)
  assert calls == [5, 5, 5]
  # No weights to key on, or no cache directory: always computed, nothing stored.
  feature_cache.cached_features(None, name='x', weights='w', videos=videos, compute=compute)
  feature_cache.cached_features(cache, name='x', weights=None, videos=videos, compute=compute)
  assert calls == [5, 5, 5, 5, 5]
  assert len(list((tmp_path / 'cache').iterdir())) == 3


def test_plain_array_features_and_directory_digests(tmp_path):
  directory = tmp_path / 'classifier'
  (directory / 'sub').mkdir(parents=True)
  (directory / 'sub' / 'params.bin').write_bytes(b'abc')
  before = feature_cache.path_digest(str(directory))
  (directory / 'sub' / 'params.bin').write_bytes(b'abd')
  assert feature_cache.path_digest(str(directory)) != before
  assert feature_cache.path_digest(str(tmp_path / 'absent')) is None
  videos = np.zeros((3, 1, 2, 2, 3), np.uint8)
  features = np.arange(6, dtype=np.float32).reshape(3, 2)
  for _ in range(2):
    out = feature_cache.cached_features(str(tmp_path / 'c'), name='fvd', weights=before,
                                        videos=videos, compute=lambda v: features)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, features)

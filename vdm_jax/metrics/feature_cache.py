"""Features of reference videos kept on disk between evaluations.

An FVD or FID compares generated videos with the features of a fixed set of true videos (the
reference, and the floor's other split). Those features depend only on the feature network's
weights and on the videos, not on the model being evaluated, so periodic evaluations during
training and repeated `--mode eval` runs need them once. Each entry is keyed by a SHA-256 digest
of the weights (the file or directory they are loaded from) and of the videos themselves (their
bytes, shape and dtype), so a changed dataset, preprocessing, count or weights file can never be
served stale features: it is another key. Entries are written atomically (a temporary file, then
a rename), by process 0 only; every process reads them.
"""

import hashlib
import os
from typing import Callable

import jax
import numpy as np
from absl import logging

Features = np.ndarray | dict[str, np.ndarray]


def path_digest(path: str) -> str | None:
  """SHA-256 of a file's bytes, or of a directory's files (relative paths and bytes, in sorted
  order); None if `path` does not exist (nothing to key a cache on)."""
  if not path or not os.path.exists(path):
    return None
  digest = hashlib.sha256()
  if os.path.isfile(path):
    files = [(os.path.basename(path), path)]
  else:
    files = sorted((os.path.relpath(os.path.join(root, name), path), os.path.join(root, name))
                   for root, _, names in os.walk(path) for name in names)
  for relative, full in files:
    digest.update(relative.encode() + b'\0')
    with open(full, 'rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        digest.update(block)
  return digest.hexdigest()


def array_digest(array: np.ndarray) -> str:
  """SHA-256 of an array's dtype, shape and bytes."""
  array = np.ascontiguousarray(array)
  digest = hashlib.sha256(f'{array.dtype.str}{array.shape}'.encode())
  digest.update(array.data)
  return digest.hexdigest()


def cached_features(cache_dir: str | None, *, name: str, weights: str | None, videos: np.ndarray,
                    compute: Callable[[np.ndarray], Features]) -> Features:
  """compute(videos), read from `cache_dir` if an earlier call stored it for the same `name` (the
  feature kind, e.g. 'fvd_i3d'), `weights` (path_digest of the feature network's weights) and
  videos; else computed and stored there. No cache (cache_dir or weights None): computed."""
  if cache_dir is None or weights is None:
    return compute(videos)
  key = hashlib.sha256(f'{name}\0{weights}\0{array_digest(videos)}'.encode()).hexdigest()[:32]
  path = os.path.join(cache_dir, f'{name}_{key}.npz')
  if os.path.isfile(path):
    with np.load(path) as stored:
      logging.info('Read %s features of %d videos from %s', name, len(videos), path)
      return stored['features'] if list(stored.keys()) == ['features'] else dict(stored)
  features = compute(videos)
  if jax.process_index() == 0:
    os.makedirs(cache_dir, exist_ok=True)
    arrays = features if isinstance(features, dict) else {'features': features}
    temporary = f'{path}.{os.getpid()}.tmp.npz'
    np.savez(temporary, **arrays)
    os.replace(temporary, path)
  return features

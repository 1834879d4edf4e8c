"""Frechet video distances of generated videos, with the floor that the sample size allows.

FVD (Unterthiner et al. 2018) = the Frechet distance (frechet.py) between Gaussian fits of a
network's features of two video sets: with I3D's logits (i3d.py, user-supplied weights) it is FVD
proper ('fvd_i3d'); with the penultimate features of a built-in dataset's caption classifier
(video_classifier.py) it is the learned-feature FVD for offline data ('fvd_learned').

The estimate is biased upwards at small sample sizes (the covariances' noise adds to the trace
term), so the generated videos are compared with `reference` (the test split) next to `floor`:
as many training videos as there are generated ones, against the same reference. A model that
matched the data distribution would score about the floor.
"""

from typing import Any, Callable

import jax
import numpy as np

from vdm_jax.metrics import frechet

FeatureFn = Callable[[np.ndarray], np.ndarray]  # uint8 videos [B, T, H, W, 3] -> [B, D]


def features_in_batches(feature_fn: Callable[[np.ndarray], Any], videos: np.ndarray, *,
                        batch_size: int) -> Any:
  """feature_fn over videos [N, T, H, W, 3] in batches of batch_size, the last one padded with
  repeats whose rows are dropped (one compilation serves all): float64 [N, D], or a tree of
  them when feature_fn returns a tree of arrays [B, ...] (e.g. a classifier's {head: logits})."""
  n = len(videos)
  pad = -n % batch_size
  padded = np.concatenate([videos, videos[np.arange(pad) % n]]) if pad else videos
  chunks = [feature_fn(padded[i:i + batch_size]) for i in range(0, len(padded), batch_size)]
  return jax.tree.map(lambda *c: np.concatenate([np.asarray(x, np.float64) for x in c])[:n],
                      *chunks)


def fvd_with_floor(feature_fn: FeatureFn, *, generated: np.ndarray, reference: np.ndarray,
                   floor: np.ndarray, batch_size: int, name: str) -> dict[str, float]:
  """{name/generated: FD(generated, reference), name/floor: FD(floor, reference), counts}; all
  videos uint8 [N, T, H, W, 3]; `floor` should hold as many videos as `generated`."""
  reference_features = features_in_batches(feature_fn, reference, batch_size=batch_size)
  distance = lambda videos: frechet.frechet_distance_of_features(
      features_in_batches(feature_fn, videos, batch_size=batch_size), reference_features)
  return {f'{name}/generated': distance(generated), f'{name}/floor': distance(floor),
          f'{name}/num_generated': len(generated), f'{name}/num_reference': len(reference)}

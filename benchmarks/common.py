"""What several benchmarks share: random parameters that exercise every layer, and the JSON record."""

import json
import os
import time
from typing import Any

import jax
import numpy as np


def perturbed_params(params: Any, scale: float = 0.01, seed: int = 1) -> Any:
  """params + scale * N(0, 1) noise: the U-Net's zero-initialised output layers would otherwise
  make outputs (and some gradients) identically zero, which is not the work a trained model does."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape, x.dtype)
                                   for x, k in zip(leaves, keys)])


def write_json(path: str, result: dict[str, Any]) -> None:
  """Writes a benchmark's result (creating the directory) and says where."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    json.dump(result, f, indent=2)
  print(f'wrote {path}')


def time_steps(step_fn, state: Any, batch: Any, steps: int, warmup: int = 2):
  """Runs `state, metrics = step_fn(state, batch)` warmup + steps times; returns the last state
  and metrics and the seconds of each of the `steps` timed calls (metrics awaited in each)."""
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return state, metrics, times


def synthetic_batch(config, model, batch_size: int, video_shape, seed: int = 0) -> dict[str, Any]:
  """A training batch of the config's shapes: videos in [-1, 1] with the appended images
  ([batch, frames + images, height, width, channels]) and every conditioning input the model
  reads, under the batch keys of the data pipeline (conditioning.BATCH_KEYS)."""
  from vdm_jax import conditioning  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  frames = video_shape[0] + config.data.num_images_per_video
  full_shape = (frames, *video_shape[1:])
  batch = {'video': rng.uniform(-1, 1, (batch_size, *full_shape)).astype(np.float32)}
  abstract = conditioning.abstract_inputs(config, model, batch_size=batch_size,
                                          video_shape=full_shape)
  for name, a in abstract.items():
    if name not in conditioning.BATCH_KEYS:
      continue  # Frame conditioning is made inside the step from the video.
    if name == 'text_tokens':
      value = rng.integers(1, min(model.text_vocab_size, 128), a.shape)  # 0 pads.
    elif a.dtype == np.bool_:
      value = np.ones(a.shape, bool)
    elif np.issubdtype(a.dtype, np.integer):
      value = np.zeros(a.shape)  # Class labels.
    else:
      value = rng.standard_normal(a.shape)
    batch[conditioning.BATCH_KEYS[name]] = value.astype(a.dtype)
  return batch

"""What several benchmarks share: random parameters that exercise every layer, and the JSON record."""

import json
import os
import time
from typing import Any

import jax


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

"""XLA compiler options for the compiled train step, by backend.

On CPU, XLA (jaxlib 0.10) hands dots, convolutions and reductions to YNNPACK ("YNN fusions").
A YNN reduction cannot compute a broadcast or an elementwise producer inside itself, so XLA
writes them out as full-size arrays first: the backward pass of each GroupNorm then stores
several arrays of its input's size (the broadcast 1/std and scale, x - mean, ...), many alive at
once. With `config.train.cpu_ynn_reductions=False` (dots and convolutions stay with YNNPACK),
XLA fuses those reductions with their producers itself: less memory, but slower. Measured
2026-12-06 side by side (README, Speed; benchmarks/train_step_ynn_reductions.json): benchmark
config S (batch 8 of 16 x 32x32, 14.3M parameters), XLA's estimate 6.25 -> 4.40 GiB, peak RSS
8.44 -> 6.95 GiB, 18.8 -> 21.7 s per step; the default experiment's network ~10% slower.
GPU and TPU options are left at XLA's defaults.
"""

import jax
import ml_collections

# XLA:CPU's default list (jaxlib 0.10.2) is INDIVIDUAL_DOT, INDIVIDUAL_CONVOLUTION and REDUCE.
_CPU_YNN_FUSION_TYPES_WITHOUT_REDUCE = (
    'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION')


def train_step_options(config: ml_collections.ConfigDict) -> dict[str, str]:
  """`compiler_options` for jax.jit of the train step on this process's default backend."""
  if jax.default_backend() == 'cpu' and not config.train.cpu_ynn_reductions:
    return {'xla_cpu_experimental_ynn_fusion_type': _CPU_YNN_FUSION_TYPES_WITHOUT_REDUCE}
  return {}

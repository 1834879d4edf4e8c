"""The GPU program, lowered on this CPU host (nothing runs): with model.dtype bfloat16 every
attention layer of a training step's gradient is cuDNN's flash attention kernel, forward and
backward. Needs JAX's CUDA plugin and cuDNN installed (`pip install "jax[cuda12]==0.10.2"`, no GPU
needed); skipped where they are not, as in CI."""

import re

import jax
import jax.numpy as jnp
import pytest

from experiments import moving_shapes
from vdm_jax import inspect_model


def _can_lower_cudnn_attention() -> bool:
  q = jax.ShapeDtypeStruct((1, 8, 1, 8), jnp.bfloat16)
  attend = lambda q: jax.nn.dot_product_attention(q, q, q, implementation='cudnn')
  try:
    jax.jit(attend).trace(q).lower(lowering_platforms=('cuda',))
  except Exception:  # pylint: disable=broad-except
    return False  # "cuDNN is not detected", or no CUDA lowering at all.
  return True


pytestmark = pytest.mark.skipif(not _can_lower_cudnn_attention(),
                                reason="needs JAX's CUDA plugin and cuDNN to lower for 'cuda'")


def attention_modules(params) -> int:
  """How many Attention modules (query/key/value/out projections) the parameters hold."""
  if not isinstance(params, dict):
    return 0
  if {'query', 'key', 'value', 'out'} <= set(params):
    return 1
  return sum(attention_modules(v) for v in params.values())


@pytest.mark.parametrize('dtype', ['bfloat16', 'float32'])
def test_every_attention_layer_lowers_to_cudnn_in_bfloat16(monkeypatch, dtype):
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')  # 'auto' resolves as on a GPU.
  config = moving_shapes.get_config()  # Spatial, temporal (bias), text (mask), text encoder.
  config.model.dtype = dtype
  lowered, params = inspect_model.lower_network_gradient(config, lowering_platforms=('cuda',))
  calls = re.findall(r'custom_call @__cudnn\$(fmha\w+)', lowered.as_text())
  forward = [c for c in calls if not c.endswith('Backward')]
  layers = attention_modules(params)
  assert layers >= 4, layers
  if dtype == 'float32':  # cuDNN's kernel needs 16-bit inputs: XLA's attention instead.
    assert not calls, calls
  else:
    assert len(forward) == layers and len(calls) == 2 * layers, (layers, calls)

"""On a GPU (skipped elsewhere, as in CI; benchmarks/gpu_check.sh runs it on a lent one): cuDNN's
flash attention ('cudnn') computes what the written-out einsum does in bfloat16, forward and
backward, with the biases and masks the U-Net passes it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.models import attention
from vdm_jax.models import layers

pytestmark = pytest.mark.skipif(jax.default_backend() != 'gpu', reason='needs a GPU with cuDNN')


def relative_error(a, b) -> float:
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize('case', ['spatial', 'temporal_bias_and_mask', 'text_padding_mask'])
def test_cudnn_attention_equals_einsum_in_bfloat16(case):
  """Outputs and gradients (q, k, v and the bias) of `cudnn_attention` against `einsum_attention`
  in float32 on the same bfloat16 inputs: within bfloat16 rounding (1-2% of the largest value),
  and closer to float32 than a result with the bias left out."""
  rng = np.random.default_rng(0)
  B, heads, d = 4, 2, 32
  N, M = {'spatial': (64, 64), 'temporal_bias_and_mask': (24, 24),
          'text_padding_mask': (96, 16)}[case]
  q, k, v = (jnp.asarray(rng.standard_normal((B, n, heads, d)), jnp.bfloat16) for n in (N, M, M))
  bias = mask = None
  if case == 'temporal_bias_and_mask':  # Relative-position bias; 8 appended images masked.
    bias = jnp.asarray(rng.standard_normal((1, heads, N, M)), jnp.bfloat16)
    mask = jnp.asarray(layers.frame_segment_mask(N, 8))[None, None]  # [1, 1, N, N]
  elif case == 'text_padding_mask':  # Key padding [B, 1, 1, M]; one row with every key masked.
    mask = jnp.asarray(rng.random((B, 1, 1, M)) < 0.7).at[1].set(False)
  assert attention.cudnn_unsupported(q, k, has_bias_or_mask=True) is None

  def loss(fn, dtype):
    def f(q, k, v, bias):
      cast = lambda a: None if a is None else a.astype(dtype)
      out = fn(cast(q), cast(k), cast(v), bias=cast(bias), mask=mask)
      return jnp.sum(jnp.sin(out.astype(jnp.float32))), out
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3) if bias is not None else (0, 1, 2),
                                      has_aux=True))

  args = (q, k, v, bias)
  (_, out), grads = loss(attention.cudnn_attention, jnp.bfloat16)(*args)
  (_, ref), ref_grads = loss(attention.einsum_attention, jnp.float32)(*args)
  assert relative_error(out, ref) < 2e-2, relative_error(out, ref)
  for g, r in zip(grads, ref_grads):
    assert relative_error(g, r) < 3e-2, relative_error(g, r)
  if bias is not None:  # The bias matters: leaving it out is far off.
    (_, unbiased), _ = loss(attention.einsum_attention, jnp.float32)(q, k, v, jnp.zeros_like(bias))
    assert relative_error(unbiased, ref) > 10 * relative_error(out, ref)

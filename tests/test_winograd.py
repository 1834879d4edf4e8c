"""Winograd F(m x m, 3 x 3) convolution (vdm_jax/models/winograd.py): its transform matrices
against direct correlation, the conv and both gradients against lax.conv (float64: only rounding
left; float32: the precision the CPU default trains with), in padded chunks of frames, and which
convs FrameConv('winograd') hands to it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.models import layers, winograd


@pytest.mark.parametrize('m', sorted(winograd.TRANSFORMS))
def test_transforms_give_m_outputs_of_a_1d_correlation(m):
  """The 1D identity the 2D algorithm nests: A^T [(G g) * (B^T d)] = the m outputs of correlating
  m + 2 inputs d with 3 taps g (what lax.conv computes along each axis)."""
  BT, G, AT = winograd.TRANSFORMS[m]
  rng = np.random.default_rng(m)
  for _ in range(5):
    d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
    direct = np.array([d[i:i + 3] @ g for i in range(m)])
    np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), direct, atol=1e-12)


@pytest.mark.parametrize('m,height,width', [(2, 6, 4), (4, 8, 12)])
def test_conv_in_padded_chunks_equals_xla_conv_and_its_gradients(m, height, width, x64,
                                                                  monkeypatch):
  """7 frames (non-square) in chunks of 3, the last padded with 2 zero frames: the same output,
  input gradient and kernel gradient as lax.conv."""
  x = jax.random.normal(jax.random.PRNGKey(0), (7, height, width, 5), jnp.float64)
  kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 5, 4), jnp.float64)
  frame_bytes = (m + 2) ** 2 * (height // m) * (width // m) * 5 * 8
  monkeypatch.setattr(winograd, 'CHUNK_BYTES', 3 * frame_bytes)
  assert winograd._frames_per_chunk(x, 4, m) == 3
  conv = jax.jit(lambda x, kernel: winograd.conv(x, kernel, m))
  xla = lambda x, kernel: layers._xla_conv(x, kernel, 1)
  assert 'while' in conv.lower(x, kernel).as_text()  # It does loop over chunks.
  np.testing.assert_allclose(conv(x, kernel), xla(x, kernel), atol=1e-11)
  loss = lambda conv: lambda x, kernel: jnp.sum(jnp.sin(conv(x, kernel)))
  grads = jax.grad(loss(conv), argnums=(0, 1))(x, kernel)
  ref_grads = jax.grad(loss(xla), argnums=(0, 1))(x, kernel)
  assert min(float(jnp.max(jnp.abs(g))) for g in ref_grads) > 1e-1
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-11), grads, ref_grads)


@pytest.mark.parametrize('m', [2, 4])
def test_float32_error_against_lax_conv_stays_near_rounding(m):
  """In float32, at a U-Net-like shape (64 channels, unit-variance input, fan-in scaled kernel):
  output and gradients within 1e-4 of their largest value (measured: F(2x2) ~1e-6, F(4x4)
  ~1e-5). A wrong coefficient or a transform applied in the wrong order gives errors of order 1."""
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 16, 16, 64))
  kernel = jax.random.normal(jax.random.PRNGKey(3), (3, 3, 64, 64)) / 24.
  conv = lambda x, kernel: winograd.conv(x, kernel, m)
  xla = lambda x, kernel: layers._xla_conv(x, kernel, 1)
  loss = lambda conv: lambda x, kernel: jnp.sum(jnp.sin(conv(x, kernel)))
  outputs = [(jax.jit(conv)(x, kernel), xla(x, kernel))]
  outputs += zip(jax.jit(jax.grad(loss(conv), argnums=(0, 1)))(x, kernel),
                 jax.grad(loss(xla), argnums=(0, 1))(x, kernel))
  for got, ref in outputs:
    scale = float(jnp.max(jnp.abs(ref)))
    assert float(jnp.max(jnp.abs(got - ref))) < 1e-4 * scale


def test_frame_conv_uses_winograd_where_it_applies(monkeypatch):
  """FrameConv('winograd'): F(4x4) on 16x16 frames, F(2x2) on 6x6 and 8x8; im2col_chunks for odd
  sizes, stride 2, bfloat16 and Upsample's conv; the same outputs as lax.conv in every case."""
  calls = []
  original = winograd.conv
  monkeypatch.setattr(winograd, 'conv', lambda x, k, m: calls.append(m) or original(x, k, m))
  cases = [((16, 16), {}, [4]), ((6, 6), {}, [2]), ((8, 8), {}, [2]), ((7, 7), {}, []),
           ((8, 8), dict(stride=2), []), ((8, 8), dict(dtype=jnp.bfloat16), []),
           ((4, 4), dict(upsample_input=True), [])]
  for (height, width), kw, expected in cases:
    x = jax.random.normal(jax.random.PRNGKey(height), (1, 2, height, width, 3))
    conv = layers.FrameConv(4, conv_impl='winograd', **kw)
    params = conv.init(jax.random.PRNGKey(4), x)
    calls.clear()
    out = conv.apply(params, x)
    assert calls == expected, ((height, width), kw, calls)
    ref = layers.FrameConv(4, conv_impl='xla', **kw).apply(params, x)
    tolerance = 3e-2 if kw.get('dtype') == jnp.bfloat16 else 1e-5
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                               atol=tolerance)

"""VideoUNet behaviour: zero-initialised output, frames interact only through temporal attention,
videos never mix, text conditioning and its null (classifier-free guidance), conv_impl
equivalence, bfloat16 compute with float32 params."""

import functools
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import moving_shapes
from vdm_jax.models import attention
from vdm_jax.models import layers
from vdm_jax.models.unet import VideoUNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

B, T, H, W = 2, 4, 8, 8
L = 8
TINY = dict(channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
            head_dim=8, text_width=16, text_layers=1, text_heads=2, max_text_length=L)

# Smallest U-Net that still has every kind of block (res blocks, attention, text encoder).
MINI = dict(channels=8, channel_mult=(1,), num_res_blocks=0, attention_resolutions=(), head_dim=8,
            text_width=8, text_layers=0, text_heads=1, max_text_length=4, dropout=0.1)
# Test-only compile options: a third of the compile time on this CPU, the same numbers.
CPU_ATTENTION_IMPLS = tuple(i for i in attention.ATTENTION_IMPLS if i != 'cudnn')  # cudnn: GPUs.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


@functools.lru_cache(maxsize=None)
def init_params():
  """Params of the tiny model and a perturbed copy (so no output layer is zero). Every variant
  below shares this tree (use_temporal_attention=False just leaves the attn_time params unused)."""
  z, kw = inputs()
  # unsafe_rbg: a cheaper PRNG to compile than threefry (init compiles in half the time).
  params = jax.jit(VideoUNet(**TINY).init)(jax.random.key(0, impl='unsafe_rbg'), z, **kw)
  rng = np.random.default_rng(1)  # Host-side noise: no per-leaf compiles.
  perturbed = jax.tree.map(
      lambda x: jnp.asarray(np.asarray(x) + 0.2 * rng.standard_normal(x.shape), x.dtype), params)
  return params, perturbed


@functools.lru_cache(maxsize=None)
def jitted_apply(**overrides):
  model = VideoUNet(**{**TINY, **overrides})
  return jax.jit(lambda p, z, tokens, drop: model.apply(
      p, z, logsnr=jnp.array([-2., 3.]), text_tokens=tokens, drop_text=drop))


def inputs():
  z = jax.random.normal(jax.random.PRNGKey(2), (B, T, H, W, 3))
  tokens = jnp.array([[10, 20, 30, 40, 0, 0, 0, 0], [50, 60, 0, 0, 0, 0, 0, 0]], jnp.int32)
  return z, dict(logsnr=jnp.array([-2., 3.]), text_tokens=tokens)


NO_DROP = jnp.array([False, False])


def run(z, tokens=None, drop=NO_DROP, **overrides):
  tokens = inputs()[1]['text_tokens'] if tokens is None else tokens
  return np.asarray(jitted_apply(**overrides)(init_params()[1], z, tokens, drop))


def max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


def test_untrained_output_is_exactly_zero():
  z, kw = inputs()
  out = jitted_apply()(init_params()[0], z, kw['text_tokens'], NO_DROP)
  assert out.shape == (B, T, H, W, 3) and out.dtype == jnp.float32
  assert np.all(np.asarray(out) == 0.)
  assert max_diff(run(z), 0.) > 1e-2


@pytest.mark.parametrize('temporal', [False, True])
def test_frames_interact_only_through_temporal_attention(temporal):
  z, _ = inputs()
  j = 1
  z2 = z.at[:, j].add(jax.random.normal(jax.random.PRNGKey(3), z[:, j].shape))
  out, out2 = run(z, use_temporal_attention=temporal), run(z2, use_temporal_attention=temporal)
  assert max_diff(out[:, j], out2[:, j]) > 1e-2  # The perturbed frame itself changes.
  others = [i for i in range(T) if i != j]
  change = max_diff(out[:, others], out2[:, others])
  if temporal:
    assert change > 1e-3
  else:
    assert change < 1e-6


def test_videos_in_a_batch_never_mix():
  z, kw = inputs()
  z2 = z.at[1].add(1.)
  tokens2 = kw['text_tokens'].at[1, :3].set(jnp.array([7, 8, 9]))
  out, out2 = run(z), run(z2, tokens2, drop=jnp.array([False, True]))
  assert max_diff(out[0], out2[0]) < 1e-6
  assert max_diff(out[1], out2[1]) > 1e-2


def test_text_changes_the_output_and_padding_is_masked():
  z, kw = inputs()
  tokens = kw['text_tokens']
  out = run(z, tokens)
  other = tokens.at[:, 0].set(99)  # Change one real token.
  assert max_diff(out, run(z, other)) > 1e-3
  # Same text padded to a different length: padding is masked everywhere, so no change.
  # (A separate compile at L=6; the positional table covers max_text_length.)
  assert max_diff(out, run(z, tokens[:, :6])) < 1e-5


def test_dropped_text_gives_the_null_output_whatever_the_tokens():
  z, kw = inputs()
  drop = jnp.array([True, True])
  out_a = run(z, kw['text_tokens'], drop)
  out_b = run(z, jnp.flip(kw['text_tokens'], 0).at[:, 1:3].set(77), drop)
  np.testing.assert_array_equal(out_a, out_b)
  assert max_diff(out_a, run(z, kw['text_tokens'])) > 1e-3  # Null text != real text.


@pytest.mark.parametrize('conv_impl', ['im2col', 'matmul_grad', 'im2col_chunks', 'winograd'])
@pytest.mark.parametrize('stride,size', [(1, 7), (1, 8), (2, 8), (2, 7)])
def test_conv_impls_equal_xla_conv_and_its_gradients(conv_impl, stride, size, x64):
  """Same output, input gradient and kernel gradient as lax.conv (float64: only rounding left)."""
  x = jax.random.normal(jax.random.PRNGKey(4), (2, 3, size, size, 5), jnp.float64)
  kw = dict(stride=stride, dtype=jnp.float64, param_dtype=jnp.float64)
  xla = layers.FrameConv(6, conv_impl='xla', **kw)
  params = xla.init(jax.random.PRNGKey(5), x)
  other = layers.FrameConv(6, conv_impl=conv_impl, **kw)
  # A non-linear loss, so that the output gradient dy is not constant across positions.
  loss = lambda module: lambda params, x: jnp.sum(jnp.sin(module.apply(params, x)))
  np.testing.assert_allclose(other.apply(params, x), xla.apply(params, x), atol=1e-12)
  grads = jax.grad(loss(other), argnums=(0, 1))(params, x)
  ref_grads = jax.grad(loss(xla), argnums=(0, 1))(params, x)
  assert max_diff(ref_grads[0]['params']['kernel'], 0.) > 1e-2
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-12), grads, ref_grads)


@pytest.mark.parametrize('stride', [1, 2])
def test_kernel_gradient_in_chunks_of_frames_equals_all_at_once(stride, x64):
  x = jax.random.normal(jax.random.PRNGKey(6), (6, 5, 5, 3), jnp.float64)
  dy = jax.random.normal(jax.random.PRNGKey(7), (6, 3 if stride == 2 else 5, 3 if stride == 2 else 5, 4),
                         jnp.float64)
  whole = layers._im2col_kernel_grad(x, dy, stride=stride)
  frame_bytes = dy.shape[1] * dy.shape[2] * 9 * 3 * 8
  chunked = layers._im2col_kernel_grad(x, dy, stride=stride, max_chunk_bytes=4 * frame_bytes)  # 2 chunks, 2 zero frames
  assert max_diff(whole, 0.) > 1e-1
  np.testing.assert_allclose(chunked, whole, atol=1e-12)


@pytest.mark.parametrize('stride', [1, 2])
def test_im2col_chunks_in_several_padded_chunks_equal_xla_conv_and_its_gradients(
    stride, x64, monkeypatch):
  """7 frames in chunks of 3 (the last padded with 2 zero frames): the same output, input
  gradient and kernel gradient as lax.conv."""
  x = jax.random.normal(jax.random.PRNGKey(8), (7, 6, 6, 5), jnp.float64)
  kernel = jax.random.normal(jax.random.PRNGKey(9), (3, 3, 5, 4), jnp.float64)
  out = 6 // stride
  monkeypatch.setattr(layers, 'CHUNK_BYTES', 3 * out * out * 9 * 5 * 8)  # 3 frames' columns.
  assert layers._frames_per_chunk(x, out, out, None) == 3
  loss = lambda conv: lambda x, kernel: jnp.sum(jnp.sin(conv(x, kernel)))
  chunked = lambda x, kernel: layers._conv_im2col_chunks(x, kernel, stride)
  xla = lambda x, kernel: layers._xla_conv(x, kernel, stride)
  np.testing.assert_allclose(chunked(x, kernel), xla(x, kernel), atol=1e-12)
  grads = jax.grad(loss(chunked), argnums=(0, 1))(x, kernel)
  ref_grads = jax.grad(loss(xla), argnums=(0, 1))(x, kernel)
  assert min(max_diff(g, 0.) for g in ref_grads) > 1e-2
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-12), grads, ref_grads)


def test_upsample_conv_at_low_resolution_equals_conv_of_the_upsampled_frames(x64, monkeypatch):
  """Upsample with 'im2col_chunks' (each output phase a 2x2 conv at low resolution, 5 frames in
  chunks of 2, the last padded) against nearest upsampling then lax.conv, on 3x4 frames: the
  same outputs and gradients for the input, kernel and bias."""
  x = jax.random.normal(jax.random.PRNGKey(10), (1, 5, 3, 4, 6), jnp.float64)
  monkeypatch.setattr(layers, 'CHUNK_BYTES', 2 * 3 * 4 * 16 * 6 * 8)  # 2 frames' columns.
  module = lambda impl: layers.Upsample(conv_impl=impl, dtype=jnp.float64, param_dtype=jnp.float64)
  params = host_params(module('xla'), x, scale=1.)
  loss = lambda impl: lambda p, x: jnp.sum(jnp.sin(module(impl).apply(p, x)))
  out, ref = module('im2col_chunks').apply(params, x), module('xla').apply(params, x)
  assert out.shape == (1, 5, 6, 8, 6) and max_diff(ref, 0.) > 1e-1
  np.testing.assert_allclose(out, ref, atol=1e-12)
  chunked_loss = jax.jit(loss('im2col_chunks'))
  assert 'while' in chunked_loss.lower(params, x).as_text()
  grads = jax.grad(chunked_loss, argnums=(0, 1))(params, x)
  ref_grads = jax.grad(loss('xla'), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-12), grads, ref_grads)


def test_im2col_chunks_falls_back_to_matmul_grad_where_one_frame_overflows_a_chunk(monkeypatch):
  x = jnp.zeros((1, 2, 64, 64, 64))
  assert not layers._fits_a_chunk(x[0], 1) and layers._fits_a_chunk(x[0, :, :32, :32], 1)
  monkeypatch.setattr(layers, 'CHUNK_BYTES', 1)  # No frame fits: every 3x3 conv falls back.
  conv = layers.FrameConv(4, conv_impl='im2col_chunks')
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 3, 6, 6, 5))
  params = conv.init(jax.random.PRNGKey(4), x)
  hlo = jax.jit(jax.grad(lambda p: jnp.sum(conv.apply(p, x) ** 2))).lower(params).as_text()
  assert 'while' in hlo  # matmul_grad's kernel-gradient loop over chunks (one frame each) ...
  assert 'convolution' in hlo  # ... beside lax.conv's forward pass.
  ref = layers.FrameConv(4, conv_impl='xla')
  np.testing.assert_allclose(conv.apply(params, x), ref.apply(params, x), atol=1e-5)


_SHARDED_CONV_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from vdm_jax.models import attention, layers, winograd
layers.CHUNK_BYTES = 2 * 6 * 6 * 9 * 5 * 4  # 2 frames a chunk: 3 chunks of each device's 6 frames.
winograd.CHUNK_BYTES = 2 * 16 * 3 * 3 * 5 * 4  # The same for F(2x2)'s 16 tile positions.
mesh = jax.make_mesh((4,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
x = jax.device_put(jax.random.normal(jax.random.PRNGKey(0), (4, 6, 6, 6, 5)),
                   NamedSharding(mesh, P('data')))
results = {}
for impl in ('xla', 'matmul_grad', 'im2col_chunks', 'winograd'):
  conv = layers.FrameConv(4, conv_impl=impl)
  params = conv.init(jax.random.PRNGKey(1), x[:1])
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(conv.apply(p, x))), argnums=(0, 1)),
                 in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))))
  hlo = grad.lower(params, x).compile().as_text()
  results[impl] = (hlo.count('all-gather'), jax.tree.leaves(grad(params, x)))
for impl in ('matmul_grad', 'im2col_chunks', 'winograd'):
  assert results[impl][0] == 0, (impl, results[impl][0])
  for a, b in zip(results[impl][1], results['xla'][1]):
    np.testing.assert_allclose(a, b, atol=1e-4)
attention.ATTENTION_CHUNK_BYTES = 2 * 2 * 6 * 6 * 4  # 2 of each device's 6 rows a chunk.
q = jax.device_put(jax.random.normal(jax.random.PRNGKey(2), (24, 6, 2, 4)),
                   NamedSharding(mesh, P('data')))
for impl in ('einsum', 'chunked'):
  attend = getattr(attention, impl + '_attention')
  grad = jax.jit(jax.grad(lambda q: jnp.sum(jnp.sin(attend(q, q, q)))),
                 in_shardings=NamedSharding(mesh, P('data')))
  hlo = grad.lower(q).compile().as_text()
  results[impl] = (hlo.count('all-gather'), grad(q))
assert 'while' in hlo and results['chunked'][0] == 0, results['chunked'][0]
np.testing.assert_allclose(results['chunked'][1], results['einsum'][1], atol=1e-5)
print('ok')
"""


def test_chunked_conv_and_attention_loops_keep_a_batch_sharded_input_on_its_devices():
  """On 4 devices with the frames split over them, the loops over chunks (of convs and of
  attention) run within each device's frames: no all-gather in the compiled step, and the same
  gradients as lax.conv and the einsum attention."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT,
             XLA_FLAGS=os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4')
  result = subprocess.run([sys.executable, '-c', _SHARDED_CONV_SCRIPT], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0 and result.stdout.strip().endswith('ok'), result.stderr[-2000:]


def test_auto_conv_impl_is_winograd_on_cpu_and_xla_elsewhere():
  assert layers.check_conv_impl('auto') == (
      'winograd' if jax.default_backend() == 'cpu' else 'xla')


def test_model_conv_impls_agree():
  z, _ = inputs()
  out_xla = run(z, conv_impl='xla')
  assert max_diff(out_xla, 0.) > 1e-2
  for conv_impl in ('im2col', 'matmul_grad', 'im2col_chunks', 'winograd', 'auto'):  # Same params.
    np.testing.assert_allclose(run(z, conv_impl=conv_impl), out_xla, atol=1e-4, rtol=1e-4)


def test_bfloat16_compute_with_float32_params():
  z, _ = inputs()
  _, kw = inputs()
  params = jax.eval_shape(VideoUNet(**TINY, dtype=jnp.bfloat16).init, jax.random.PRNGKey(0), z, **kw)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  out, ref = run(z, dtype=jnp.bfloat16), run(z)  # The same float32 params.
  assert out.dtype == np.float32 and np.all(np.isfinite(out))
  # Tolerance: 5% relative RMS error. bfloat16 keeps 8 significant bits (each rounding is off by
  # up to 2^-8 = 0.4%), and the tiny U-Net rounds activations and weights at ~25 matmuls and
  # convs in series, so errors of a few percent are expected; measured 1.8%. A float32-only
  # part computed in bfloat16 (e.g. GroupNorm statistics, below) costs far more than that.
  rms = lambda x: float(np.sqrt(np.mean(np.square(x))))
  assert rms(out - ref) < 0.05 * rms(ref)
  assert max_diff(out, ref) > 0  # bfloat16 was really used.


def _primitive_dtypes(jaxpr, names):
  """Output dtypes of every equation of a primitive in `names`, in `jaxpr` and its sub-jaxprs."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in names:
      found += [(eqn.primitive.name, v.aval.dtype) for v in eqn.outvars]
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else [param]:
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          found += _primitive_dtypes(sub.jaxpr, names)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          found += _primitive_dtypes(sub, names)
  return found


def test_bfloat16_model_keeps_softmax_norms_and_output_in_float32():
  """In the bfloat16 model every exp (softmax, embeddings) and rsqrt (GroupNorm, LayerNorm) is
  computed in float32, and so is the output (the loss reads it)."""
  x = jnp.zeros((1, 3, 8), jnp.float32)
  attn = attention.Attention(1, 8, attention_impl='einsum', dtype=jnp.bfloat16)
  attn_params = jax.eval_shape(attn.init, jax.random.PRNGKey(0), x)
  closed = jax.make_jaxpr(lambda p: attn.apply(p, x))(attn_params)
  assert {dtype for _, dtype in _primitive_dtypes(closed.jaxpr, ('exp',))} == {np.dtype('float32')}

  z = jnp.zeros((1, 2, 4, 4, 3), jnp.float32)
  kw = dict(logsnr=jnp.array([1.]), text_tokens=jnp.array([[5, 6, 0, 0]], jnp.int32))
  model = VideoUNet(**MINI, dtype=jnp.bfloat16)  # attention through jax.nn.dot_product_attention
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), z, **kw)
  closed = jax.make_jaxpr(lambda p: model.apply(p, z, **kw))(params)
  found = _primitive_dtypes(closed.jaxpr, ('exp', 'rsqrt', 'exp2'))
  assert {name for name, _ in found} >= {'exp', 'rsqrt'}
  assert all(dtype == jnp.float32 for _, dtype in found), found
  assert closed.out_avals[0].dtype == jnp.float32
  # ... while the matmuls do run in bfloat16.
  dots = _primitive_dtypes(closed.jaxpr, ('dot_general', 'conv_general_dilated'))
  assert any(dtype == jnp.bfloat16 for _, dtype in dots)


def test_group_norm_statistics_are_float32_in_a_bfloat16_model():
  """Small variations on a large offset (spacing of bfloat16 at 256: 2) survive normalisation."""
  x = 256. + 0.1 * jnp.asarray(np.random.default_rng(3).standard_normal((1, 1, 4, 4, 8)), jnp.float32)
  norm = lambda dtype: layers.GroupNorm(dtype=dtype)
  params = norm(jnp.float32).init(jax.random.PRNGKey(0), x)
  out = norm(jnp.bfloat16).apply(params, x)
  assert out.dtype == jnp.bfloat16
  ref = norm(jnp.float32).apply(params, x)
  assert max_diff(out, ref) < 0.05 * float(np.max(np.abs(ref)))  # bfloat16 output rounding only


def test_invalid_conv_impl_names_allowed_values():
  z, kw = inputs()
  with pytest.raises(ValueError, match="'auto', 'xla', 'im2col', 'matmul_grad'"):
    VideoUNet(**TINY, conv_impl='fft').init(jax.random.PRNGKey(0), z, **kw)


def test_relative_position_buckets():
  rel = np.arange(-200, 201)
  buckets = attention.relative_position_bucket(rel, num_buckets=32, max_distance=64)
  assert buckets.min() == 0 and buckets.max() == 31
  past, future = buckets[rel <= 0][::-1], buckets[rel > 0]  # ordered by distance
  assert np.all(np.diff(past) >= 0) and np.all(np.diff(future) >= 0)
  np.testing.assert_array_equal(past[:8], np.arange(8))  # exact small distances
  assert set(past).isdisjoint(future)  # direction matters
  assert past[64] == past[-1] == 15 and future[-1] == 31  # far distances share the last bucket


def test_space_to_depth_groups_each_patch_and_inverts():
  from vdm_jax.models.unet import depth_to_space, space_to_depth
  x = np.arange(1 * 2 * 4 * 6 * 3, dtype=np.float32).reshape(1, 2, 4, 6, 3)
  y = np.asarray(space_to_depth(jnp.asarray(x), 2))
  assert y.shape == (1, 2, 2, 3, 12)
  # Position (i, j) holds exactly the 2x2 pixels (2i + a, 2j + b), row-major, channels last.
  np.testing.assert_array_equal(y[0, 1, 1, 2].reshape(2, 2, 3), x[0, 1, 2:4, 4:6])
  np.testing.assert_array_equal(np.asarray(depth_to_space(jnp.asarray(y), 2)), x)


def test_patched_model_keeps_frames_and_videos_apart():
  """With patch_size=2 and no temporal attention, perturbing one frame of one video changes
  only that frame of that video."""
  model = VideoUNet(**{**TINY, 'patch_size': 2, 'attention_resolutions': (2,),
                       'use_temporal_attention': False})
  z, kw = inputs()
  params = host_params(model, z, **kw)  # random everywhere: no zero output layer
  apply = compile_apply(model, params, z, **kw)
  base = np.asarray(apply(params, z))
  changed = np.asarray(apply(params, z.at[0, 1].add(1.0)))
  diff = np.abs(changed - base).max(axis=(2, 3, 4))  # [B, T]
  assert diff[0, 1] > 1e-4
  diff[0, 1] = 0
  assert diff.max() == 0


def test_temporal_conv_sees_only_neighbouring_frames():
  conv = layers.TemporalConv(4, kernel_init=nn.initializers.normal(1.0))
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, 2, 2, 3))
  params = conv.init(jax.random.PRNGKey(1), x)
  base = np.asarray(conv.apply(params, x))
  changed = np.asarray(conv.apply(params, x.at[:, 3].add(1.0)))
  touched = np.abs(changed - base).max(axis=(0, 2, 3, 4)) > 1e-6  # per output frame
  np.testing.assert_array_equal(touched, [False, False, True, True, True, False])


def test_temporal_conv_starts_as_the_paper_block():
  """Zero-initialised, the temporal conv adds nothing: a fresh block with it equals one without."""
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 4, 4, 8))
  emb = jnp.ones((1, 16))
  with_time = layers.ResBlock(8, temporal_conv=True)
  params = with_time.init(jax.random.PRNGKey(1), x, emb, train=False)
  params = jax.tree.map(lambda p: p + 0.1 * (p == 0), params)  # un-zero conv_2 ...
  params['params']['conv_time'] = jax.tree.map(jnp.zeros_like, params['params']['conv_time'])
  without = {'params': {k: v for k, v in params['params'].items() if k != 'conv_time'}}
  np.testing.assert_allclose(
      np.asarray(with_time.apply(params, x, emb, train=False)),
      np.asarray(layers.ResBlock(8).apply(without, x, emb, train=False)), rtol=1e-6, atol=1e-6)


def assert_frame_affects_only_itself(apply, params, z):
  """Changing frame 2 of video 0 changes the output of that frame and of no other frame or video."""
  base, changed = np.asarray(apply(params, z)), np.asarray(apply(params, z.at[0, 2].add(1.0)))
  diff = np.abs(changed - base).max(axis=(2, 3, 4))
  assert diff[0, 2] > 1e-4
  diff[0, 2] = 0
  assert diff.max() == 0


def test_frame_embedding_tells_frames_apart_without_mixing_them():
  """With the frame-index embedding, identical frames get different outputs (each knows its
  place in the clip), yet with no temporal layers a frame's content still affects only itself."""
  model = VideoUNet(**{**TINY, 'frame_embedding': True, 'use_temporal_attention': False})
  z, kw = inputs()
  same = jnp.broadcast_to(z[:, :1], z.shape)  # every frame identical
  params = host_params(model, z, **kw)
  apply = compile_apply(model, params, z, **kw)
  out = np.asarray(apply(params, same))
  assert np.abs(out[:, 1:] - out[:, :1]).max() > 1e-4
  assert_frame_affects_only_itself(apply, params, z)


def test_coordinate_channels_hold_frame_row_and_column():
  grid = np.asarray(layers.coordinate_channels(2, 5, 3, 4, num_images=1))
  assert grid.shape == (2, 5, 3, 4, 3)
  np.testing.assert_allclose(grid[0, :, 0, 0, 0], [-1, -1 / 3, 1 / 3, 1, -1], rtol=1e-6)  # last: an image
  np.testing.assert_allclose(grid[1, 2, :, 0, 1], [-1, 0, 1], rtol=1e-6)
  np.testing.assert_allclose(grid[1, 2, 1, :, 2], [-1, -1 / 3, 1 / 3, 1], rtol=1e-6)


def test_coord_channels_tell_frames_apart_without_mixing_them():
  """Without coordinates, a uniform video's output is the same in every frame (no temporal
  layers: nothing tells frames apart); with them, outputs differ across frames, and a frame's
  content still affects only itself (the rows and columns: the test above)."""
  z, kw = inputs()
  uniform = jnp.full_like(z, 0.3)
  for coords in (False, True):
    model = VideoUNet(**{**TINY, 'coord_channels': coords, 'use_temporal_attention': False})
    params = host_params(model, z, **kw)
    apply = compile_apply(model, params, z, **kw)
    out = np.asarray(apply(params, uniform))
    across_frames = np.abs(out[:, 1:] - out[:, :1]).max()
    if not coords:
      assert across_frames < 1e-5
      continue
    assert across_frames > 1e-4
    assert_frame_affects_only_itself(apply, params, z)


def test_layout_embedding_lets_the_text_place_content_per_frame():
  """On a uniform video with no temporal layers, what the text changes in the output is the same
  in every frame without the layout embedding (nothing tells frames apart), and differs between
  frames with it; a frame's content still affects only itself."""
  z, kw = inputs()
  uniform = jnp.full_like(z, 0.3)
  other_text = {**kw, 'text_tokens': kw['text_tokens'].at[:, 1].set(99)}
  for layout in (False, True):
    model = VideoUNet(**{**TINY, 'layout_embedding': layout, 'use_temporal_attention': False})
    params = host_params(model, z, **kw)
    text_effect = (np.asarray(compile_apply(model, params, z, **kw)(params, uniform)) -
                   np.asarray(compile_apply(model, params, z, **other_text)(params, uniform)))
    assert np.abs(text_effect).max() > 1e-4
    across_frames = np.abs(text_effect[:, 1:] - text_effect[:, :1]).max()
    if not layout:
      assert across_frames < 1e-5
      continue
    assert across_frames > 1e-4
    apply = compile_apply(model, params, z, **kw)
    assert_frame_affects_only_itself(apply, params, z)


def test_conditional_layout_embedding_starts_at_zero_and_reads_its_coordinates():
  """Zero at initialisation (the network is unchanged); with trained coefficients each frame,
  row and conditioning vector gets its own embedding, and an appended image (joint training) is
  embedded as a clip's first frame."""
  module = layers.ConditionalLayoutEmbedding(8, num_frequencies=16)
  emb = jnp.asarray(np.random.default_rng(0).standard_normal((2, 12)), jnp.float32)
  out, params = module.init_with_output(jax.random.PRNGKey(0), emb, 3, 4, 4, num_images=1)
  assert out.shape == (2, 3, 4, 4, 8) and np.all(np.asarray(out) == 0)
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda x: jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype), params)
  out = np.asarray(module.apply(params, emb, 3, 4, 4, num_images=1))
  np.testing.assert_array_equal(out[:, 2], out[:, 0])
  assert np.abs(out[:, 1] - out[:, 0]).max() > 1e-3  # frames
  assert np.abs(out[:, 0, 1:] - out[:, 0, :1]).max() > 1e-3  # rows
  assert np.abs(out[1] - out[0]).max() > 1e-3  # conditioning


def test_layout_embedding_frequencies_and_scale_come_from_the_config():
  """model.layout_embedding_frequencies / _scale reach the module: [3, F] trainable frequencies
  drawn with std = scale (a smoother layout for a lower scale)."""
  from vdm_jax import train  # pylint: disable=g-import-not-at-top
  config = moving_shapes.get_config('smoke')
  config.model.layout_embedding = True
  config.model.layout_embedding_frequencies, config.model.layout_embedding_scale = 96, 0.5
  model = train.create_model(config)
  assert (model.layout_embedding_frequencies, model.layout_embedding_scale) == (96, 0.5)
  params = jax.jit(lambda: train.init_params(model, config, (4, 16, 16, 3),
                                             jax.random.PRNGKey(0)))()
  frequencies = np.asarray(params['layout_embedding']['frequencies'])
  assert frequencies.shape == (3, 96)
  assert 0.4 < frequencies.std() < 0.6, frequencies.std()


def test_sigma2_gate_scales_the_layout_embedding_by_the_noise_variance():
  """gate='sigma2' (same parameters) gives sigmoid(-logsnr) times the ungated embedding, per
  example: the full embedding at high noise, almost none where the video is visible."""
  emb = jnp.asarray(np.random.default_rng(0).standard_normal((3, 12)), jnp.float32)
  logsnr = jnp.array([-8.0, 0.0, 6.0])
  ungated = layers.ConditionalLayoutEmbedding(8, num_frequencies=16)
  gated = layers.ConditionalLayoutEmbedding(8, num_frequencies=16, gate='sigma2')
  params = ungated.init(jax.random.PRNGKey(0), emb, 3, 4, 4)
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda x: jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype), params)
  full = np.asarray(ungated.apply(params, emb, 3, 4, 4))
  out = np.asarray(gated.apply(params, emb, 3, 4, 4, logsnr=logsnr))
  sigma2 = 1.0 / (1.0 + np.exp(np.asarray(logsnr)))
  np.testing.assert_allclose(out, sigma2[:, None, None, None, None] * full, rtol=1e-5, atol=1e-7)
  assert np.abs(out[0]).max() > 0.99 * np.abs(full[0]).max() > 1e-3
  assert np.abs(out[2]).max() < 0.003 * np.abs(full[2]).max()
  shifted = layers.ConditionalLayoutEmbedding(8, num_frequencies=16, gate='sigma2', gate_center=-4.0)
  out = np.asarray(shifted.apply(params, emb, 3, 4, 4, logsnr=logsnr))
  np.testing.assert_allclose(out, (1.0 / (1.0 + np.exp(np.asarray(logsnr) + 4.0)))[:, None, None, None, None]
                             * full, rtol=1e-5, atol=1e-6)
  sharp = layers.ConditionalLayoutEmbedding(8, num_frequencies=16, gate='sigma2', gate_center=-4.0,
                                            gate_sharpness=3.0)
  logsnr = jnp.array([-5.0, -4.0, -2.0])
  out = np.asarray(sharp.apply(params, emb, 3, 4, 4, logsnr=logsnr))
  gate = 1.0 / (1.0 + np.exp(3.0 * (np.asarray(logsnr) + 4.0)))  # 0.95, 1/2, 0.0025
  np.testing.assert_allclose(out, gate[:, None, None, None, None] * full, rtol=1e-5, atol=1e-6)
  assert np.abs(out[2]).max() < 0.003 * np.abs(full[2]).max()


def test_layout_embedding_gate_sharpness_reaches_the_layout_embedding():
  """model.layout_embedding_gate_sharpness flows from the config through the U-Net into its
  layout embedding (traced abstractly: nothing compiles)."""
  from vdm_jax import train  # pylint: disable=g-import-not-at-top
  config = moving_shapes.get_config('smoke')
  config.model.layout_embedding = True
  config.model.layout_embedding_gate = 'sigma2'
  config.model.layout_embedding_gate_center, config.model.layout_embedding_gate_sharpness = -4.0, 3.0
  model = train.create_model(config)
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, layers.ConditionalLayoutEmbedding):
      seen.append((context.module.gate, context.module.gate_center, context.module.gate_sharpness))
    return next_fun(*args, **kwargs)

  z = jnp.zeros((2, 4, 16, 16, 3))
  tokens = jnp.zeros((2, config.data.max_text_length), jnp.int32)
  with nn.intercept_methods(record):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), z, logsnr=jnp.zeros(2), text_tokens=tokens)
  assert seen and set(seen) == {('sigma2', -4.0, 3.0)}, seen



def test_detached_layout_embedding_trains_itself_but_not_the_text_encoder_through_it():
  """layout_embedding_detach=True: the same outputs and the same gradient of the layout
  embedding's own parameters; the text encoder's gradient loses the part that came through it."""
  z, kw = inputs()
  grads = {}
  for detach in (False, True):
    model = VideoUNet(**{**TINY, 'layout_embedding': True, 'layout_embedding_detach': detach})
    params = host_params(model, z, **kw)
    loss = lambda p: jnp.mean(model.apply(p, z, **kw) ** 2)
    grads[detach] = jax.jit(jax.value_and_grad(loss)).lower(params).compile(FAST_COMPILE)(params)
  (loss_a, a), (loss_b, b) = grads[False], grads[True]
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
  for x, y in zip(jax.tree.leaves(a['params']['layout_embedding']),
                  jax.tree.leaves(b['params']['layout_embedding'])):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-7)
  text = [k for k in a['params'] if 'text' in k]
  assert text
  difference = max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for k in text for x, y in
                   zip(jax.tree.leaves(a['params'][k]), jax.tree.leaves(b['params'][k])))
  assert difference > 1e-6


# ------------------------------------------------- attention implementations, remat, precision


def compile_apply(model, params, z, **kwargs):
  """(params, z) -> model.apply(params, z, **kwargs), compiled once with the test-only options."""
  return jax.jit(lambda p, z: model.apply(p, z, **kwargs)).lower(params, z).compile(FAST_COMPILE)


def host_params(module, *args, scale=0.3, seed=0, **kwargs):
  """Random parameters of `module` without compiling its init: eval_shape, then host noise."""
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args, **kwargs)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes)


def test_attention_impls_agree_with_bias_and_masks():
  """jax.nn.dot_product_attention (cuDNN or XLA) equals the written-out einsum, with a logits
  bias and a key mask, including a query row whose keys are all masked."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 5, 16)), jnp.float32)
  context = jnp.asarray(rng.standard_normal((2, 7, 12)), jnp.float32)
  bias = jnp.asarray(rng.standard_normal((1, 2, 5, 7)), jnp.float32)
  mask = jnp.asarray(rng.random((2, 1, 5, 7)) < 0.6).at[1, 0, 3].set(False)
  module = lambda impl: attention.Attention(2, 8, zero_init_output=False, attention_impl=impl)
  params = host_params(module('einsum'), x, context, bias=bias, mask=mask)
  out = {impl: np.asarray(module(impl).apply(params, x, context, bias=bias, mask=mask))
         for impl in CPU_ATTENTION_IMPLS}
  assert max_diff(out['einsum'], 0.) > 1e-2
  for impl in ('auto', 'dot_product_attention', 'chunked'):
    np.testing.assert_allclose(out[impl], out['einsum'], atol=1e-5, rtol=1e-5)
  with pytest.raises(ValueError, match="'cudnn', 'dot_product_attention', 'chunked', 'einsum'"):
    module('flash').apply(params, x, context)
  with pytest.raises(ValueError, match="'cudnn': cuDNN attention needs a GPU .this backend: cpu."):
    module('cudnn').apply(params, x, context)


def fake_cudnn(calls):
  """A stand-in for jax.nn.dot_product_attention on a CPU: records each call's implementation,
  bias and mask shapes, and checks what cuDNN requires of them (16-bit inputs; a bias spanning
  all [N, M] positions) before computing XLA's result."""
  real = jax.nn.dot_product_attention

  def dot_product_attention(q, k, v, *, bias=None, mask=None, implementation=None):
    calls.append(dict(implementation=implementation, q=q.shape, k=k.shape,
                      bias=None if bias is None else bias.shape,
                      mask=None if mask is None else mask.shape))
    if implementation == 'cudnn':
      assert q.dtype in (jnp.bfloat16, jnp.float16), q.dtype
      for a in (bias, mask):
        assert a is None or a.shape[-2:] == (q.shape[1], k.shape[1]), (a.shape, q.shape, k.shape)
    return real(q, k, v, bias=bias, mask=mask, implementation='xla')

  return dot_product_attention


def test_auto_attention_on_gpus_takes_cudnn_where_it_applies(monkeypatch):
  """'auto' on a GPU (the backend mocked): cuDNN's kernel for 16-bit inputs with a head
  dimension that is a multiple of 8 (<= 128) and, with a bias or mask, even lengths; XLA's
  otherwise. The cuDNN call gets a key-padding mask broadcast over the queries (cuDNN adds a
  mask as a bias spanning [N, M]), and returns what the written-out einsum does, including a
  query whose keys are all masked."""
  calls = []
  monkeypatch.setattr(jax.nn, 'dot_product_attention', fake_cudnn(calls))
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  rng = np.random.default_rng(4)

  def run(dtype, head_dim, N, M, masked):
    x = jnp.asarray(rng.standard_normal((2, N, 16)), dtype)
    context = jnp.asarray(rng.standard_normal((2, M, 12)), dtype)
    mask = None
    if masked:  # Key padding [B, 1, 1, M]; the second row's keys are all masked.
      mask = jnp.asarray(rng.random((2, 1, 1, M)) < 0.6).at[1].set(False)
    module = lambda impl: attention.Attention(2, head_dim, zero_init_output=False,
                                              attention_impl=impl, dtype=dtype)
    params = host_params(module('einsum'), x, context, mask=mask)
    calls.clear()
    out = module('auto').apply(params, x, context, mask=mask)
    assert len(calls) == 1, calls
    expected = module('einsum').apply(params, x, context, mask=mask)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(expected, np.float32),
                               atol=tol, rtol=tol)
    return calls[0]

  call = run(jnp.bfloat16, 8, 6, 4, masked=True)
  assert call['implementation'] == 'cudnn' and call['mask'] == (2, 1, 6, 4), call
  assert run(jnp.bfloat16, 16, 5, 3, masked=False)['implementation'] == 'cudnn'
  assert run(jnp.float32, 8, 6, 4, masked=False)['implementation'] == 'xla'  # Not 16-bit.
  assert run(jnp.bfloat16, 12, 6, 4, masked=False)['implementation'] == 'xla'  # 12 % 8 != 0.
  assert run(jnp.bfloat16, 8, 5, 4, masked=True)['implementation'] == 'xla'  # Odd, with a mask.
  monkeypatch.setattr(jax, 'default_backend', lambda: 'tpu')
  assert run(jnp.bfloat16, 8, 6, 4, masked=False)['implementation'] == 'xla'


@pytest.mark.parametrize('per_row', [False, True])
def test_chunked_attention_in_padded_chunks_equals_all_at_once(monkeypatch, per_row):
  """Chunks of 2 of 5 rows (the last chunk padded with a zero row): the same outputs and
  gradients (for q, k, v and the bias) as the written-out einsum, with a bias and a mask that
  are shared by all rows or have one entry per row."""
  rng = np.random.default_rng(3)
  B, N, M, heads, d = 5, 4, 6, 2, 8
  q, k, v = (jnp.asarray(rng.standard_normal((B, n, heads, d)), jnp.float32) for n in (N, M, M))
  rows = B if per_row else 1
  bias = jnp.asarray(rng.standard_normal((rows, heads, N, M)), jnp.float32)
  mask = jnp.asarray(rng.random((rows, 1, N, M)) < 0.7)
  monkeypatch.setattr(attention, 'ATTENTION_CHUNK_BYTES', 2 * heads * N * M * 4)  # 2 rows a chunk.
  grads = {}
  for name, fn in (('chunked', attention.chunked_attention), ('einsum', attention.einsum_attention)):
    loss = lambda q, k, v, bias: jnp.sum(jnp.sin(fn(q, k, v, bias=bias, mask=mask)))
    grads[name] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))(q, k, v, bias)
    assert 'while' in jax.jit(loss).lower(q, k, v, bias).as_text() or name == 'einsum'
  for a, b in zip(jax.tree.leaves(grads['chunked']), jax.tree.leaves(grads['einsum'])):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_space_time_attention_impls_agree_on_a_clip_longer_than_max_distance():
  """Temporal attention with the bucketed relative-position bias and text cross-attention with
  a padding mask: both implementations agree, and a clip of 12 frames runs with
  max_distance=4 (beyond it, offsets share their direction's last bucket, so any length works)."""
  T = 12
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((1, T, 2, 2, 16)), jnp.float32)
  text = jnp.asarray(rng.standard_normal((1, 3, 8)), jnp.float32)
  text_mask = jnp.array([[True, True, False]])
  module = lambda impl: attention.SpaceTimeAttention(
      head_dim=8, rel_pos_buckets=8, rel_pos_max_distance=4, attention_impl=impl)
  params = host_params(module('einsum'), x, text=text, text_mask=text_mask)
  both = lambda p: {impl: module(impl).apply(p, x, text=text, text_mask=text_mask)
                    for impl in CPU_ATTENTION_IMPLS}
  out = jax.tree.map(np.asarray, jax.jit(both).lower(params).compile(FAST_COMPILE)(params))
  assert np.all(np.isfinite(out['einsum'])) and max_diff(out['einsum'], x) > 1e-2
  for impl in ('auto', 'dot_product_attention', 'chunked'):
    np.testing.assert_allclose(out[impl], out['einsum'], atol=1e-5, rtol=1e-5)

  bias = np.asarray(attention.RelativePositionBias(2, 8, 4).apply(
      {'params': params['params']['rel_pos']}, T))[0]  # [heads, query, key]
  future, past = bias[:, 0, 4:], bias[:, T - 1, :T - 4]  # |offset| >= max_distance
  np.testing.assert_array_equal(future, np.broadcast_to(bias[:, 0, -1:], future.shape))
  np.testing.assert_array_equal(past, np.broadcast_to(bias[:, T - 1, :1], past.shape))
  assert np.all(bias[:, 0, 1] != bias[:, 0, -1])  # near offsets have their own buckets


def test_remat_outputs_and_gradients_equal_no_remat():
  """'block' and 'full' rematerialisation change what the backward pass stores, never the
  parameters, the loss or the gradients (dropout on: its masks are recomputed identically)."""
  z = jnp.asarray(np.random.default_rng(2).standard_normal((1, 2, 4, 4, 3)), jnp.float32)
  kw = dict(logsnr=jnp.array([1.]), text_tokens=jnp.array([[5, 6, 0, 0]], jnp.int32))
  params = host_params(VideoUNet(**MINI), z, **kw)
  for mode in ('block', 'full'):  # The same parameter tree.
    shapes = jax.eval_shape(VideoUNet(**MINI, remat=mode).init, jax.random.PRNGKey(0), z, **kw)
    assert jax.tree.structure(shapes) == jax.tree.structure(params)

  def loss_and_grads(p):
    def loss(p, mode):
      out = VideoUNet(**MINI, remat=mode).apply(p, z, **kw, train=True,
                                                rngs={'dropout': jax.random.PRNGKey(1)})
      return jnp.sum(out ** 2)
    return {mode: jax.value_and_grad(loss)(p, mode) for mode in ('none', 'block', 'full')}

  result = jax.jit(loss_and_grads).lower(params).compile(FAST_COMPILE)(params)
  ref_loss, ref_grads = result['none']
  assert float(ref_loss) > 0
  # Equal up to float32 summation order (XLA may fuse the recomputed graph differently):
  # within 1e-5 of the largest gradient entry.
  scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(ref_grads))
  for mode in ('block', 'full'):
    loss, grads = result[mode]
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    for g, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
      np.testing.assert_allclose(g, ref, rtol=0, atol=1e-5 * scale)
  with pytest.raises(ValueError, match="'none', 'block', 'full'"):
    VideoUNet(**MINI, remat='some').init(jax.random.PRNGKey(0), z, **kw)


def test_block_remat_lowers_the_unet_gradient_memory():
  """model.remat='block' on a small U-Net (a video of 4x16x16): the compiled gradient keeps less
  than 3/4 of the temporaries of remat='none' (measured 0.39 of 15 MiB; with nn.remat: all)."""
  z = jnp.asarray(np.random.default_rng(2).standard_normal((1, 4, 16, 16, 3)), jnp.float32)
  kw = dict(logsnr=jnp.array([1.]), text_tokens=jnp.zeros((1, TINY['max_text_length']), jnp.int32))
  params = host_params(VideoUNet(**TINY), z, **kw)
  temp = {}
  for mode in ('none', 'block'):
    loss = lambda p, mode=mode: jnp.sum(VideoUNet(**TINY, remat=mode).apply(p, z, **kw) ** 2)
    compiled = jax.jit(jax.grad(loss)).lower(params).compile(FAST_COMPILE)
    temp[mode] = compiled.memory_analysis().temp_size_in_bytes
  assert temp['block'] < 0.75 * temp['none'], temp


def test_appended_images_equal_one_frame_videos_and_leave_the_video_alone():
  """Joint image-video training (Ho et al. 2022, sec. 3): with 2 images appended to a 2-frame
  video, temporal attention and the temporal conv are masked so that each image's output equals
  its output run alone as a one-frame video, and the video frames never see the images."""
  model = VideoUNet(**{**MINI, 'temporal_conv': True, 'frame_embedding': True, 'dropout': 0.})
  rng = np.random.default_rng(4)
  z = jnp.asarray(rng.standard_normal((1, 4, 4, 4, 3)), jnp.float32)
  kw = dict(logsnr=jnp.array([0.5]), text_tokens=jnp.array([[5, 6, 0, 0]], jnp.int32))
  params = host_params(model, z, **kw)
  compile_fast = lambda f, z: jax.jit(f).lower(z).compile(FAST_COMPILE)
  joint = compile_fast(lambda z: model.apply(params, z, **kw, num_images=2), z)
  alone = compile_fast(lambda z: model.apply(params, z, **kw), z[:, :1])
  out = np.asarray(joint(z))
  for j in (2, 3):
    np.testing.assert_allclose(out[:, j], np.asarray(alone(z[:, j:j + 1]))[:, 0], atol=1e-5,
                               rtol=1e-5)
  # Changing an image changes only that image; the video frames still see each other.
  changed = np.asarray(joint(z.at[:, 3].add(1.)))
  assert max_diff(changed[:, 3], out[:, 3]) > 1e-3
  assert max_diff(changed[:, :3], out[:, :3]) == 0
  video_changed = np.asarray(joint(z.at[:, 0].add(1.)))
  assert max_diff(video_changed[:, 1], out[:, 1]) > 1e-4


def test_word_ids_beyond_the_byte_range_get_rows_of_their_own():
  from vdm_jax import train  # pylint: disable=g-import-not-at-top
  from vdm_jax.data import tokenizer  # pylint: disable=g-import-not-at-top
  from vdm_jax.models.text_encoder import TextEncoder  # pylint: disable=g-import-not-at-top
  from experiments import base  # pylint: disable=g-import-not-at-top
  config = base.get_base_config()
  config.model.text_tokenizer = 'words'
  assert train.create_model(config).text_vocab_size == tokenizer.vocab_size('words') == 8193
  ids = jnp.array([[tokenizer.word_id('left'), 0], [tokenizer.word_id('right'), 0]], jnp.int32)
  assert int(ids[:, 0].min()) >= tokenizer.VOCAB_SIZE  # Both hash buckets lie past the 257 byte ids.

  def encode(vocab_size):
    encoder = TextEncoder(width=8, num_layers=0, num_heads=1, max_length=2, vocab_size=vocab_size)
    params = encoder.init(jax.random.PRNGKey(0), ids)
    return params['params']['token_embedding']['embedding'].shape, encoder.apply(params, ids)[0]

  shape, out = encode(tokenizer.vocab_size('words'))
  assert shape == (8193, 8)
  assert max_diff(out[0, 0], out[1, 0]) > 1e-3  # 'left' and 'right' read different rows.
  # A byte-sized table has no row for them: flax's Embed reads NaN, so the table must follow
  # the tokenizer (train.create_model sizes it from config.model.text_tokenizer).
  _, outside = encode(tokenizer.VOCAB_SIZE)
  assert np.isnan(np.asarray(outside[:, 0])).all()

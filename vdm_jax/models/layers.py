"""Building blocks of the video U-Net: per-frame convolution, GroupNorm, residual block,
resampling and the noise-level embedding.

Videos are [batch, frames, height, width, channels] throughout. Every layer here acts on each
frame separately ("space-only" 1x3x3 convolutions, per-frame GroupNorm), so frames can exchange
information only through temporal attention (Ho et al. 2022, sec. 3: the factorized space-time
U-Net, which also lets the same network train on images by masking temporal attention).
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax.models import chunks, winograd

Dtype = Any

CONV_IMPLS = ('auto', 'xla', 'im2col', 'matmul_grad', 'im2col_chunks', 'winograd')

# 'im2col_chunks' builds the columns (9 shifted copies) of this many bytes of frames at a time, so
# that building and multiplying them stays in the CPU's caches. On the 2-core EPYC of 2026-12-04,
# forward + both gradients of a 3x3 conv on [128, 32, 32, 64]: ~195 GFLOP/s in 5 MiB chunks,
# ~165 in 8, ~150 in 12, ~85 as lax.conv; the forward alone ~50 with all columns at once
# (benchmarks/conv_impl.py --passes).
CHUNK_BYTES = 5 * 2 ** 20


def check_conv_impl(conv_impl: str) -> str:
  """The one place that validates `conv_impl`; returns it with 'auto' resolved for this backend:
  'winograd' on CPU (where XLA's convolutions run far below its matmuls), 'xla' elsewhere."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'conv_impl={conv_impl!r}; allowed values: {CONV_IMPLS}.')
  if conv_impl == 'auto':
    return 'winograd' if jax.default_backend() == 'cpu' else 'xla'
  return conv_impl


def _im2col(x: jax.Array, *, stride: int) -> jax.Array:
  """The 9 shifted copies a SAME 3x3 window sees: [N, H, W, C] -> [N, H', W', 9 C].

  Channels are ordered (i, j, c), so `cols @ kernel.reshape(9 C, Cout)` is the convolution.
  """
  _, H, W, _ = x.shape
  # SAME padding for a 3x3 window: 1 each side, except stride 2 on even sizes pads (0, 1).
  out_h, out_w = -(-H // stride), -(-W // stride)
  pad_h = max((out_h - 1) * stride + 3 - H, 0)
  pad_w = max((out_w - 1) * stride + 3 - W, 0)
  xp = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                   (0, 0)))
  cols = jnp.concatenate([
      xp[:, i:i + (out_h - 1) * stride + 1:stride, j:j + (out_w - 1) * stride + 1:stride]
      for i in range(3) for j in range(3)], axis=-1)
  return cols


def _im2col_conv(x: jax.Array, kernel: jax.Array, *, stride: int) -> jax.Array:
  """SAME 3x3 convolution as one matmul over 9 shifted copies of the input.

  x: [N, H, W, Cin]; kernel: [3, 3, Cin, Cout] (HWIO, as lax.conv). Equals
  `lax.conv_general_dilated(x, kernel, (stride, stride), 'SAME')` up to float rounding.
  """
  assert kernel.shape[:3] == (3, 3, x.shape[-1]), (kernel.shape, x.shape)
  return jnp.dot(_im2col(x, stride=stride), kernel.reshape(-1, kernel.shape[-1]))


def _xla_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_matmul_kernel_grad(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """lax.conv forward and input gradient; the kernel gradient as one im2col matmul.

  XLA's CPU kernel-gradient convolution is the slow one of the three: ~6 GFLOP/s at
  [128, 32, 32, 64] on the 2-core CPU against ~55 for the forward and input-gradient convs and
  ~30 for cols^T @ dy (benchmarks/conv_impl.py measures the whole training step). Same shapes
  and values as `_xla_conv`; x: [N, H, W, Cin], kernel: [3, 3, Cin, Cout].
  """
  return _xla_conv(x, kernel, stride)


def _conv_matmul_kernel_grad_fwd(x, kernel, stride):
  return _xla_conv(x, kernel, stride), (x, kernel)


def _conv_matmul_kernel_grad_bwd(stride, residuals, dy):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x: _xla_conv(x, kernel, stride), x)
  (dx,) = input_vjp(dy)
  return dx, _im2col_kernel_grad(x, dy, stride=stride).reshape(kernel.shape).astype(kernel.dtype)


_conv_matmul_kernel_grad.defvjp(_conv_matmul_kernel_grad_fwd, _conv_matmul_kernel_grad_bwd)


def _column_bytes_per_frame(x: jax.Array, out_h: int, out_w: int) -> int:
  """Bytes of one frame's im2col columns [out_h, out_w, 9 C] for x [N, H, W, C]."""
  return out_h * out_w * 9 * x.shape[3] * x.dtype.itemsize


def _frames_per_chunk(x: jax.Array, out_h: int, out_w: int, max_chunk_bytes: int | None) -> int:
  """How many frames of each device's share of x [N, H, W, C] have im2col columns
  [out_h, out_w, 9 C] within `max_chunk_bytes` (None: CHUNK_BYTES, read at trace time)."""
  max_chunk_bytes = CHUNK_BYTES if max_chunk_bytes is None else max_chunk_bytes
  frame_bytes = _column_bytes_per_frame(x, out_h, out_w)
  return int(min(chunks.rows_per_device(x.shape[0]), max(1, max_chunk_bytes // frame_bytes)))


def _fits_a_chunk(x: jax.Array, stride: int) -> bool:
  """Do one frame's im2col columns fit CHUNK_BYTES? Where they do not (64x64 frames of 64
  channels: 9.4 MiB), 'im2col_chunks' falls back to 'matmul_grad': columns that leave the cache
  lose to lax.conv (config M: 30.7 against 27.0 s per step, 2026-12-04)."""
  _, H, W, _ = x.shape
  return _column_bytes_per_frame(x, -(-H // stride), -(-W // stride)) <= CHUNK_BYTES


def _im2col_kernel_grad(x: jax.Array, dy: jax.Array, *, stride: int,
                        max_chunk_bytes: int | None = None) -> jax.Array:
  """sum over frames of im2col(x)^T @ dy: [9 Cin, Cout], from x [N, H, W, Cin] and dy [N, H', W',
  Cout]. The 9x-wide columns are built for a chunk of frames at a time (at most
  `max_chunk_bytes`), not for all N at once: that keeps them in cache (2-4x faster here) and
  keeps the columns of every conv of a U-Net's backward pass from being alive together (+70%
  peak memory at benchmark config S). Each device group sums its own frames; the groups' sums
  are added once, after the loop (see chunks.py).

  Computed as (dy^T @ cols)^T. The matmul contracts over pixel positions, the major axis of
  both operands, and XLA:CPU transposes its left operand to make that axis minor: here dy,
  9 Cin / Cout times smaller than the columns that cols^T @ dy had it transpose in every chunk
  (the kernel gradient alone 5-27% faster, the S train step 1.034x; 2026-12-07, README Speed).
  """
  chunk = _frames_per_chunk(x, dy.shape[1], dy.shape[2], max_chunk_bytes)
  accumulate = jnp.promote_types(x.dtype, jnp.float32)  # bfloat16 inputs sum in float32.

  def grad_transposed(x, dy):  # [Cout, 9 Cin], summed over these frames.
    return jnp.einsum('nhwk,nhwc->kc', dy, _im2col(x, stride=stride),
                      preferred_element_type=accumulate)

  return chunks.sum_in_chunks(grad_transposed, (x, dy), chunk).T


def _chunked_im2col_conv(x: jax.Array, kernel: jax.Array, *, stride: int) -> jax.Array:
  """`_im2col_conv` a chunk of frames at a time (a loop over chunks within each device group,
  see chunks.py): x [N, H, W, Cin] -> [N, H', W', Cout]."""
  _, H, W, _ = x.shape
  chunk = _frames_per_chunk(x, -(-H // stride), -(-W // stride), None)
  return chunks.map_in_chunks(lambda x: _im2col_conv(x, kernel, stride=stride), (x,), chunk)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_im2col_chunks(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """SAME 3x3 convolution with every pass an im2col matmul over cache-sized chunks of frames.

  Forward: columns of x times the kernel. Input gradient (stride 1): the same convolution of dy
  with the kernel flipped in space and its channel axes swapped (the transpose of a SAME 3x3
  convolution with symmetric padding); stride 2 keeps lax.conv's transpose (the only strided
  convs are the few downsamplers). Kernel gradient: `_im2col_kernel_grad`. Same values as
  `_xla_conv`; x: [N, H, W, Cin], kernel: [3, 3, Cin, Cout].
  """
  return _chunked_im2col_conv(x, kernel, stride=stride)


def _conv_im2col_chunks_fwd(x, kernel, stride):
  return _chunked_im2col_conv(x, kernel, stride=stride), (x, kernel)


def _conv_im2col_chunks_bwd(stride, residuals, dy):
  x, kernel = residuals
  if stride == 1:
    transposed = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)  # [3, 3, Cout, Cin]
    dx = _chunked_im2col_conv(dy.astype(x.dtype), transposed.astype(x.dtype), stride=1)
  else:
    _, input_vjp = jax.vjp(lambda x: _xla_conv(x, kernel, stride), x)
    (dx,) = input_vjp(dy)
  dkernel = _im2col_kernel_grad(x, dy, stride=stride).reshape(kernel.shape).astype(kernel.dtype)
  return dx.astype(x.dtype), dkernel


_conv_im2col_chunks.defvjp(_conv_im2col_chunks_fwd, _conv_im2col_chunks_bwd)


# Which of a 2x nearest-upsampled row's 3 kernel taps (columns) fall on which of the 2 low-res
# rows it reads (rows): output row 2i + a reads upsampled rows 2i + a - 1 .. 2i + a + 1, i.e.
# low-res rows i - 1, i, i (a = 0) or i, i, i + 1 (a = 1). [phase a, low-res tap r, kernel tap i].
_UPSAMPLE_TAPS = np.array([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], np.float32)


def _upsample_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """SAME 3x3 conv of x upsampled 2x (nearest) in height and width, computed at low resolution.

  Each of the 4 output phases (row parity a, column parity b) is a 2x2 conv of x with the kernel
  taps that fall on the same low-res pixel summed: 16 taps per low-res pixel where the conv at
  high resolution does 4 x 9 = 36, so 2.25x fewer FLOPs for the same values (the resize-conv /
  sub-pixel-conv equivalence; Shi et al. 2016, Odena et al. 2016). Each phase is one im2col
  matmul. x: [N, h, w, Cin]; kernel: [3, 3, Cin, Cout] (HWIO) -> [N, 2h, 2w, Cout].
  """
  N, h, w, C = x.shape
  taps = jnp.asarray(_UPSAMPLE_TAPS, kernel.dtype)
  phase_kernels = jnp.einsum('ari,bsj,ijco->abrsco', taps, taps, kernel).reshape(2, 2, 4 * C, -1)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows = []
  for a in (0, 1):
    phases = []
    for b in (0, 1):
      cols = jnp.concatenate([xp[:, a + r:a + r + h, b + t:b + t + w]
                              for r in (0, 1) for t in (0, 1)], axis=-1)  # [N, h, w, 4 Cin]
      phases.append(jnp.dot(cols, phase_kernels[a, b]))
    rows.append(jnp.stack(phases, axis=3))  # [N, h, w, 2 (b), Cout]
  return jnp.stack(rows, axis=2).reshape(N, 2 * h, 2 * w, -1)  # [N, h, 2 (a), w, 2 (b), Cout]


def _chunked_upsample_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`_upsample_conv` a chunk of frames at a time (each chunk's columns of the 4 phases at most
  CHUNK_BYTES), recomputed in the backward pass: ~2x faster than the high-resolution
  'im2col_chunks' conv at [128, 16, 16, 128] and [128, 8, 8, 256] (2026-12-05)."""
  _, h, w, C = x.shape
  chunk = max(1, CHUNK_BYTES // (h * w * 16 * C * x.dtype.itemsize))
  return chunks.map_in_chunks(jax.checkpoint(lambda x: _upsample_conv(x, kernel)), (x,), chunk)


def _upsample_nearest(x: jax.Array) -> jax.Array:
  """[N, H, W, C] -> [N, 2H, 2W, C], each pixel repeated 2x2 (guidance.upsample does the same
  for whole videos, at sampling time; models do not depend on the samplers)."""
  *lead, H, W, C = x.shape
  x = jnp.broadcast_to(x[..., :, None, :, None, :], (*lead, H, 2, W, 2, C))
  return x.reshape(*lead, 2 * H, 2 * W, C)


class FrameConv(nn.Module):
  """Space-only convolution (kernel 1 x k x k): the same 2D conv applied to every frame.

  `conv_impl` picks how it is computed, never what: 'xla' (lax.conv, forward and both gradients),
  'matmul_grad' (lax.conv forward and input gradient, the kernel gradient as im2col matmuls),
  'im2col' (shifted copies + one matmul, forward and backward, by autodiff), 'im2col_chunks'
  (every pass an im2col matmul over cache-sized chunks of frames), 'winograd' (stride-1 convs
  as Winograd F(4x4, 3x3) or F(2x2, 3x3) over chunks of frames, winograd.py: 1/4 or 4/9 of the
  multiplies; strided convs, odd frame sizes and 16-bit inputs as 'im2col_chunks') or 'auto'
  (winograd on CPU, xla elsewhere). All use the same parameters ('kernel' [k, k, Cin, Cout],
  'bias' [Cout]) and give the same outputs and gradients up to float rounding, so checkpoints
  are interchangeable; only 3x3 kernels have the alternatives. Why not lax.conv on CPU: XLA's
  CPU convolutions run at a quarter to a half of its matmul rate at the U-Net's high-resolution
  shapes, its kernel gradient slower still, while matmuls over data that stays in cache run near
  it; Winograd then needs fewer of them (benchmarks/conv_impl.py). With `upsample_input` (the
  U-Net's Upsample), 'im2col_chunks' and 'winograd' convolve at low resolution
  (`_upsample_conv`: 2.25x fewer FLOPs, the same values); the others upsample, then convolve.
  """
  features: int
  kernel_size: int = 3
  stride: int = 1
  conv_impl: str = 'auto'
  upsample_input: bool = False  # Convolve x upsampled 2x (nearest) in height and width.
  kernel_init: Any = nn.initializers.lecun_normal()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, T, H, W, Cin] -> [B, T, H', W', features] (H' = H / stride, or 2H with
    upsample_input)."""
    B, T, H, W, C = x.shape
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init, (k, k, C, self.features), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    frames = x.reshape(B * T, H, W, C)  # Frames are independent images here.
    conv_impl = check_conv_impl(self.conv_impl)
    tile = winograd.tile_size(H, W)
    if conv_impl == 'winograd' and (k != 3 or self.stride != 1 or self.upsample_input
                                    or tile is None or jnp.finfo(frames.dtype).bits < 32):
      # Strided convs, odd sizes and Upsample's low-resolution phases have no Winograd form
      # here; 16-bit inputs would lose too much to its transforms' rounding.
      conv_impl = 'im2col_chunks'
    at_low_res = (self.upsample_input and conv_impl == 'im2col_chunks' and k == 3
                  and self.stride == 1)
    if self.upsample_input and not at_low_res:
      frames = _upsample_nearest(frames)
    if at_low_res:
      y = _chunked_upsample_conv(frames, kernel)
    elif k == 1 and self.stride == 1:
      y = jnp.dot(frames, kernel.reshape(C, self.features))
    elif conv_impl == 'winograd':
      y = winograd.conv(frames, kernel, tile)
    elif conv_impl == 'im2col' and k == 3:
      y = _im2col_conv(frames, kernel, stride=self.stride)
    elif conv_impl == 'im2col_chunks' and k == 3 and _fits_a_chunk(frames, self.stride):
      y = _conv_im2col_chunks(frames, kernel, self.stride)
    elif conv_impl in ('matmul_grad', 'im2col_chunks') and k == 3:
      y = _conv_matmul_kernel_grad(frames, kernel, self.stride)
    else:
      y = _xla_conv(frames, kernel, self.stride)
    y = y + bias
    return y.reshape(B, T, *y.shape[1:])


def num_groups(channels: int, max_groups: int = 32) -> int:
  """Largest group count <= max_groups dividing `channels` (32 as in DDPM when possible)."""
  return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


class GroupNorm(nn.Module):
  """Per-frame GroupNorm computed in float32 (statistics over height, width and the group).

  Normalising each frame separately keeps frames independent outside temporal attention.
  """
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., H, W, C] -> same shape, in `dtype`."""
    C = x.shape[-1]
    y = nn.GroupNorm(num_groups=num_groups(C), epsilon=1e-6, reduction_axes=(-3, -2, -1),
                     dtype=jnp.float32, param_dtype=self.param_dtype)(x.astype(jnp.float32))
    return y.astype(self.dtype)


def frame_segment_mask(num_frames: int, num_images: int) -> np.ndarray:
  """bool [T, T]: may frame t (row) see frame s (column)? The first T - num_images frames are one
  video and see each other; each of the last num_images frames is an independent image that
  sees only itself (joint image-video training, Ho et al. 2022 sec. 3)."""
  assert 0 <= num_images <= num_frames, (num_images, num_frames)
  video = num_frames - num_images
  segment = np.concatenate([np.zeros(video, np.int32), 1 + np.arange(num_images)])
  return segment[:, None] == segment[None, :]


def sinusoidal_embedding(positions: jax.Array, dim: int, max_period: float = 10_000.) -> jax.Array:
  """Transformer sinusoids (Vaswani et al. 2017): positions [N] float -> [N, dim] float32."""
  assert dim % 2 == 0, dim
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = positions.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def coordinate_channels(B: int, T: int, H: int, W: int, *, num_images: int = 0,
                        dtype=jnp.float32) -> jax.Array:
  """[B, T, H, W, 3]: (frame index, row, column) of each pixel, each scaled linearly to [-1, 1]
  (first to last). The last `num_images` frames are independent images (joint training): they
  get the frame coordinate of a video's first frame, -1."""
  frames = T - num_images
  f = jnp.concatenate([jnp.linspace(-1.0, 1.0, frames) if frames > 1 else -jnp.ones(frames),
                       -jnp.ones(num_images)])
  y, x = jnp.linspace(-1.0, 1.0, H), jnp.linspace(-1.0, 1.0, W)
  grid = jnp.stack(jnp.broadcast_arrays(f[:, None, None], y[None, :, None], x[None, None, :]), -1)
  return jnp.broadcast_to(grid[None], (B, T, H, W, 3)).astype(dtype)


# 'none': the layout embedding acts at every noise level; 'sigma2': scaled by sigma^2.
LAYOUT_EMBEDDING_GATES = ('none', 'sigma2')


class ConditionalLayoutEmbedding(nn.Module):
  """An embedding of each position's (frame, row, column) whose coefficients are a function of
  the conditioning embedding (noise level and text): out[b, p] = sum_k f_k(p) A_k(emb_b).

  f: Fourier features (Tancik et al. 2020) of the coordinates p in [-1, 1]^3 of
  `coordinate_channels`, [sin, cos](pi p B) with trainable frequencies B [3, num_frequencies]
  ~ N(0, scale^2); joint in the three coordinates, so a linear read-out can single out a
  diagonal in (frame, column), such as an object's trajectory. A(emb) = Dense(silu(emb)),
  zero-initialised: the network's function is unchanged at initialisation, and the gradient of
  A is first order in the loss from the first step (f is not zero), so the caption can place
  content at absolute positions and times early in training ("moving left": on the right in the
  first frame, on the left in the last), which translation-equivariant convolutions and
  relative-position attention cannot express from a noise input.

  gate='sigma2' multiplies the embedding by sigmoid(gate_sharpness * (gate_center - logsnr))
  (sigma^2 for center 0 and sharpness 1):
  it acts at high noise, where the caption alone decides the layout, and fades where the object is
  visible (center 0: 0.12 at log-SNR 2, 0.018 at 4; center -4: 0.12 at -2, 0.018 at 0), so it
  cannot disturb the lower-noise levels that the rest of the network handles (ungated, trained
  over all levels, it did: README, Results). A sharper gate confines it further: with sharpness 3
  and center -4 it is 0.95 at log-SNR -5 and 0.0025 at -2. (At sharpness 1 the rest of the network
  comes to lean on the embedding: switching it off at log-SNR 0, where its gate is 1/2, nearly
  doubled the x-error of a trained model; README, Results.)
  """
  features: int
  num_frequencies: int = 64
  scale: float = 3.0
  gate: str = 'none'  # See LAYOUT_EMBEDDING_GATES.
  gate_center: float = 0.0  # The log-SNR where the gate is 1/2.
  gate_sharpness: float = 1.0  # The gate's slope in log-SNR (1: sigma^2 shifted by the center).
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, emb: jax.Array, T: int, H: int, W: int, num_images: int = 0,
               logsnr: jax.Array | None = None) -> jax.Array:
    """emb: [B, E] -> [B, T, H, W, features]; the last `num_images` frames are images (see
    coordinate_channels); logsnr: float32 [B], needed by gate='sigma2'."""
    if self.gate not in LAYOUT_EMBEDDING_GATES:
      raise ValueError(f'Unknown layout embedding gate {self.gate!r}; allowed: '
                       f'{LAYOUT_EMBEDDING_GATES}.')
    B = emb.shape[0]
    coords = coordinate_channels(1, T, H, W, num_images=num_images)[0]
    frequencies = self.param('frequencies', nn.initializers.normal(self.scale),
                             (3, self.num_frequencies), self.param_dtype)
    angles = jnp.pi * jnp.einsum('thwc,cf->thwf', coords, frequencies.astype(jnp.float32))
    fourier = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # [T, H, W, K]
    K = fourier.shape[-1]
    coefficients = nn.Dense(K * self.features, kernel_init=nn.initializers.zeros, name='coefficients',
                            dtype=self.dtype, param_dtype=self.param_dtype)(nn.silu(emb))
    coefficients = coefficients.reshape(B, K, self.features)
    if self.gate == 'sigma2':
      coefficients = coefficients * jax.nn.sigmoid(
          self.gate_sharpness * (self.gate_center - logsnr.astype(jnp.float32)))[:, None, None].astype(
          coefficients.dtype)
    out = jnp.einsum('thwk,bkc->bthwc', fourier.astype(self.dtype), coefficients)
    assert out.shape == (B, T, H, W, self.features), out.shape
    return out


def logsnr_embedding(logsnr: jax.Array, dim: int, max_period: float = 10_000.) -> jax.Array:
  """Sinusoidal embedding of the noise level: logsnr [B] -> [B, dim] float32.

  As in google-research/diffusion_distillation, logsnr is first mapped to t in [0, 1] of the
  cosine schedule, t = arctan(exp(-logsnr / 2)) / (pi / 2), then embedded like a DDPM timestep
  (Vaswani et al. 2017 frequencies) at t * 1000.
  """
  logsnr = jnp.clip(logsnr.astype(jnp.float32), -20., 20.)
  t = jnp.arctan(jnp.exp(-0.5 * logsnr)) / (0.5 * jnp.pi) * 1000.
  return sinusoidal_embedding(t, dim, max_period)


class TemporalConv(nn.Module):
  """Convolution over frames only (kernel k x 1 x 1), zero-padded at the clip's ends.

  The temporal half of a factorised (2+1)D convolution (Tran et al. 2018, "R(2+1)D"), as used in
  Imagen Video (Ho et al. 2022b). Written as k time-shifted copies concatenated on channels and
  one matmul: a 1-D conv over T is a small matmul, which runs far faster than lax.conv on CPU.
  """
  features: int
  kernel_size: int = 3
  kernel_init: Any = nn.initializers.zeros
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, num_images: int = 0) -> jax.Array:
    """x: [B, T, H, W, C] -> [B, T, H, W, features]; frame t sees frames t - k//2 .. t + k//2.

    num_images: the last `num_images` frames are independent images (joint image-video
    training, Ho et al. 2022 sec. 3): each sees only itself and the video frames never see
    them, exactly as if each were run alone as a one-frame clip (zero padding both sides)."""
    B, T, H, W, C = x.shape
    k, pad = self.kernel_size, self.kernel_size // 2
    padded = jnp.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0), (0, 0)))
    copies = [padded[:, i:i + T] for i in range(k)]
    if num_images:
      keep = frame_segment_mask(T, num_images)  # [T, T]: frame t may see frame s
      for i in range(k):
        source = np.arange(T) + i - pad
        valid = (source >= 0) & (source < T)
        tap = np.where(valid, keep[np.arange(T), np.clip(source, 0, T - 1)], False)
        copies[i] = copies[i] * jnp.asarray(tap, x.dtype)[None, :, None, None, None]
    shifted = jnp.concatenate(copies, axis=-1)
    return nn.Dense(self.features, kernel_init=self.kernel_init, name='dense', dtype=self.dtype,
                    param_dtype=self.param_dtype)(shifted)


class ResBlock(nn.Module):
  """DDPM-style residual block with FiLM conditioning (Ho et al. 2020; Dhariwal & Nichol 2021).

  GroupNorm -> SiLU -> conv -> norm * (1 + scale) + shift -> SiLU -> dropout -> conv (zero-init);
  the skip is a 1x1 conv when the channel count changes. With `temporal_conv`, the first conv is
  followed by a residual temporal conv (zero-initialised, so the block starts as the paper's).
  """
  features: int
  dropout: float = 0.0
  temporal_conv: bool = False
  conv_impl: str = 'auto'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array, train: bool = False,
               num_images: int = 0) -> jax.Array:
    """x: [B, T, H, W, Cin]; emb: [B, E] conditioning -> [B, T, H, W, features].

    `train` (dropout on) and `num_images` (the last frames are independent images, see
    TemporalConv) may be passed positionally, so that nn.remat can treat them as static
    (static_argnums=(3, 4), counting self)."""
    B, T, H, W, C = x.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = nn.silu(GroupNorm(name='norm_1', **kw)(x))
    h = FrameConv(self.features, conv_impl=self.conv_impl, name='conv_1', **kw)(h)
    if self.temporal_conv:
      h = h + TemporalConv(self.features, name='conv_time', **kw)(h, num_images)
    scale_shift = nn.Dense(2 * self.features, name='film', **kw)(nn.silu(emb))
    scale, shift = jnp.split(scale_shift[:, None, None, None, :], 2, axis=-1)
    h = GroupNorm(name='norm_2', **kw)(h) * (1. + scale) + shift
    h = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(h))
    h = FrameConv(self.features, conv_impl=self.conv_impl, kernel_init=nn.initializers.zeros,
                  name='conv_2', **kw)(h)
    if C != self.features:
      x = FrameConv(self.features, kernel_size=1, name='skip', **kw)(x)
    assert x.shape == h.shape == (B, T, H, W, self.features), (x.shape, h.shape)
    return x + h


class Downsample(nn.Module):
  """Halves height and width (never time) with a stride-2 3x3 conv."""
  conv_impl: str = 'auto'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, T, H, W, C] -> [B, T, H/2, W/2, C]."""
    B, T, H, W, C = x.shape
    y = FrameConv(C, stride=2, conv_impl=self.conv_impl, name='conv', dtype=self.dtype,
                  param_dtype=self.param_dtype)(x)
    assert y.shape == (B, T, H // 2, W // 2, C), y.shape
    return y


class Upsample(nn.Module):
  """Doubles height and width (never time): nearest neighbour, then a 3x3 conv."""
  conv_impl: str = 'auto'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, T, H, W, C] -> [B, T, 2H, 2W, C]."""
    return FrameConv(x.shape[-1], conv_impl=self.conv_impl, upsample_input=True, name='conv',
                     dtype=self.dtype, param_dtype=self.param_dtype)(x)

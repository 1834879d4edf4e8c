"""Winograd minimal-filtering 3x3 convolution, F(m x m, 3 x 3), for the CPU (Lavin & Gray 2016,
"Fast Algorithms for Convolutional Neural Networks").

A SAME 3x3 convolution, cut into output tiles of m x m pixels, each computed from a
(m + 2) x (m + 2) input tile:

    Y_tile = A^T [ (G g G^T) * (B^T d_tile B) ] A     (* elementwise, summed over input channels)

Summing over input channels turns the elementwise product into (m + 2)^2 matmuls of
[tiles, Cin] @ [Cin, Cout], one per tile position: (m + 2)^2 / (9 m^2) of the direct
convolution's multiplies, 4/9 for m = 2 and 1/4 for m = 4. The transforms B^T, A^T and G are small
fixed matrices of adds (and a few multiplies by 2, 4, 5, 8), applied to whole frames at once with
strided slices. The two gradients are the same kind of computation: the input gradient is the
Winograd convolution of dy with the kernel flipped in space and its channel axes swapped, the
kernel gradient (m + 2)^2 matmuls [Cout, tiles] @ [tiles, Cin] of the transformed dy and input.

Why: on the 2-core CPU (2026-12-07, forward + both gradients over 128 frames on 2 devices), F(4x4)
was 1.4-2.0x faster than the im2col-matmul convolution at the U-Net's shapes, and config S's whole
train step 1.18x (README Speed). Its float32 error against lax.conv is ~1e-5 of the output's
largest value (F(2x2): ~1e-6): the transforms' coefficients amplify rounding, which is why
16-bit inputs keep the im2col path (layers.py).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax.models import chunks

# (B^T [t, t], G [t, 3], A^T [m, t]) for t = m + 2, with interpolation points 0, +-1 (m = 2) and
# 0, +-1, +-2 (m = 4), plus the point at infinity (Lavin & Gray 2016, sec. 4.1-4.2).
TRANSFORMS = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
        np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]]),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]])),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]])),
}

# Each chunk of frames has its transformed input [(m + 2)^2, tiles, C] within this many bytes:
# 2.5 MiB was within 10% of the best of 1 / 2.5 / 5 MiB at every shape of config S measured
# (2026-12-07), 5 MiB up to 1.3x slower at 32x32.
CHUNK_BYTES = 5 * 2 ** 19


def tile_size(height: int, width: int) -> int | None:
  """The output tile m for frames of this size: 4 where both sides are multiples of 4 and at
  least 16 (on 8x8 frames F(4x4)'s 2x2 tiles per frame were no faster than F(2x2)), 2 where
  both are even, None where Winograd does not apply (odd sizes)."""
  if height % 4 == 0 and width % 4 == 0 and min(height, width) >= 16:
    return 4
  if height % 2 == 0 and width % 2 == 0:
    return 2
  return None


def _combine(planes: list[jax.Array], coefficients: np.ndarray) -> jax.Array:
  """sum_i coefficients[i] * planes[i], skipping zeros and multiplies by +-1."""
  total = None
  for c, plane in zip(coefficients, planes):
    if c == 0:
      continue
    term = plane if c == 1 else -plane if c == -1 else plane * np.asarray(c, plane.dtype)
    total = term if total is None else total + term
  return total


def transform_kernel(kernel: jax.Array, m: int) -> jax.Array:
  """G g G^T for each channel pair: kernel [3, 3, Cin, Cout] -> [(m + 2)^2, Cin, Cout]."""
  G = jnp.asarray(TRANSFORMS[m][1], kernel.dtype)
  return jnp.einsum('xi,yj,ijco->xyco', G, G, kernel).reshape(-1, *kernel.shape[2:])


def _kernel_from_transformed_grad(dU: jax.Array, m: int) -> jax.Array:
  """The transpose of `transform_kernel`: dU [(m + 2)^2, Cin, Cout] -> [3, 3, Cin, Cout]."""
  G = jnp.asarray(TRANSFORMS[m][1], dU.dtype)
  t = m + 2
  return jnp.einsum('xi,yj,xyco->ijco', G, G, dU.reshape(t, t, *dU.shape[1:]))


def _separable(x: jax.Array, matrix: np.ndarray, step: int, width: int) -> list[jax.Array]:
  """Apply `matrix` [rows, width] along H then W to every tile of x [N, H, W, C] whose `width`
  pixels start every `step` pixels: rows^2 planes [N, tiles_h, tiles_w, C], row-major."""
  tiles_h = (x.shape[1] - width) // step + 1
  tiles_w = (x.shape[2] - width) // step + 1
  along_h = [x[:, r:r + step * tiles_h:step] for r in range(width)]
  planes = []
  for row in (_combine(along_h, coefficients) for coefficients in matrix):
    along_w = [row[:, :, c:c + step * tiles_w:step] for c in range(width)]
    planes += [_combine(along_w, coefficients) for coefficients in matrix]
  return planes


def transform_input(x: jax.Array, m: int) -> jax.Array:
  """B^T d B for each overlapping (m + 2)^2 tile of the SAME-padded frames (a tile every m
  pixels): x [N, H, W, C] -> [(m + 2)^2, N * H/m * W/m, C]."""
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  planes = _separable(xp, TRANSFORMS[m][0], step=m, width=m + 2)
  return jnp.stack(planes).reshape(len(planes), -1, x.shape[3])


def _inverse_transform(M: jax.Array, m: int, frames: int, height: int, width: int) -> jax.Array:
  """A^T M A for each tile: M [(m + 2)^2, frames * tiles, Cout] -> [frames, H, W, Cout]."""
  AT = TRANSFORMS[m][2]
  t = m + 2
  M = M.reshape(t, t, frames, height // m, width // m, -1)
  rows = [_combine(list(M), coefficients) for coefficients in AT]  # m of [t, frames, h, w, C]
  tiles = [jnp.stack([_combine(list(row), coefficients) for coefficients in AT], axis=3)
           for row in rows]  # m of [frames, h, w, m (column in tile), C]
  return jnp.stack(tiles, axis=2).reshape(frames, height, width, -1)  # [frames, h, m, w, m, C]


def _transpose_inverse_transform(dy: jax.Array, m: int) -> jax.Array:
  """The transpose of `_inverse_transform` (A dy_tile A^T; output tiles do not overlap):
  dy [N, H, W, Cout] -> [(m + 2)^2, N * H/m * W/m, Cout]."""
  planes = _separable(dy, TRANSFORMS[m][2].T, step=m, width=m)
  return jnp.stack(planes).reshape(len(planes), -1, dy.shape[3])


def _conv(x: jax.Array, U: jax.Array, m: int) -> jax.Array:
  """x [N, H, W, Cin], U = transform_kernel(kernel) [(m + 2)^2, Cin, Cout] -> [N, H, W, Cout]."""
  N, H, W, _ = x.shape
  M = jnp.einsum('tpc,tco->tpo', transform_input(x, m), U)
  return _inverse_transform(M, m, N, H, W)


def _frames_per_chunk(x: jax.Array, channels_out: int, m: int) -> int:
  """Frames of each device's share of x [N, H, W, C] whose transformed input (and output)
  fit CHUNK_BYTES, read at trace time."""
  N, H, W, C = x.shape
  frame_bytes = (m + 2) ** 2 * (H // m) * (W // m) * max(C, channels_out) * x.dtype.itemsize
  return int(min(chunks.rows_per_device(N), max(1, CHUNK_BYTES // frame_bytes)))


def _chunked_conv(x: jax.Array, U: jax.Array, m: int) -> jax.Array:
  """`_conv` a chunk of frames at a time within each device's frames (chunks.py)."""
  chunk = _frames_per_chunk(x, U.shape[-1], m)
  return chunks.map_in_chunks(lambda x: _conv(x, U, m), (x,), chunk)


def _kernel_grad(x: jax.Array, dy: jax.Array, m: int) -> jax.Array:
  """d loss / d kernel [3, 3, Cin, Cout] from x [N, H, W, Cin] and dy [N, H, W, Cout]: per tile
  position, transformed dy^T @ transformed x, summed over chunks of frames (each device its own
  frames, the devices' sums added once after the loop), then G^T (.) G."""
  chunk = _frames_per_chunk(x, dy.shape[-1], m)
  accumulate = jnp.promote_types(x.dtype, jnp.float32)

  def grad_U_transposed(x, dy):  # [(m + 2)^2, Cout, Cin]: dy^T, the smaller operand, transposed.
    return jnp.einsum('tpo,tpc->toc', _transpose_inverse_transform(dy, m), transform_input(x, m),
                      preferred_element_type=accumulate)

  dUt = chunks.sum_in_chunks(grad_U_transposed, (x, dy), chunk)
  return _kernel_from_transformed_grad(dUt.transpose(0, 2, 1), m)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(x: jax.Array, kernel: jax.Array, m: int) -> jax.Array:
  """SAME 3x3 convolution, stride 1, as Winograd F(m x m, 3 x 3) over cache-sized chunks of
  frames, forward and both gradients. x: [N, H, W, Cin] with H, W multiples of m; kernel:
  [3, 3, Cin, Cout] (HWIO, as lax.conv) -> [N, H, W, Cout]. Saves only x for the backward pass."""
  return _chunked_conv(x, transform_kernel(kernel, m), m)


def _conv_fwd(x, kernel, m):
  return conv(x, kernel, m), (x, kernel)


def _conv_bwd(m, residuals, dy):
  x, kernel = residuals
  dy = dy.astype(x.dtype)
  flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)  # [3, 3, Cout, Cin]
  dx = _chunked_conv(dy, transform_kernel(flipped, m), m)
  return dx, _kernel_grad(x, dy, m).astype(kernel.dtype)


conv.defvjp(_conv_fwd, _conv_bwd)

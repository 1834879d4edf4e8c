"""Loops over cache-sized chunks of a batch axis that keep a batch-sharded array on its devices.

The CPU paths of the 3x3 convolution (layers.py, 'im2col_chunks'; winograd.py) and of attention
(attention.py, 'chunked') run a large batched op a chunk of frames at a time, so that its
intermediates (im2col columns, attention logits) stay in cache. Such a loop must not run over
chunks of the whole batch axis: that axis is sharded over the devices, and XLA would gather it
onto every device. So the axis is split into one group per device first, [groups, per device],
and the loop runs over chunks of each group's part, the group axis kept as a batch axis:
[num_chunks, groups, chunk, ...].
"""

import jax
import jax.numpy as jnp


def device_groups(n: int) -> int:
  """Into how many equal groups of rows a loop splits an axis of length n: one per device
  (jax.device_count()) when that divides n, else 1. A batch-sharded array holds each device's
  rows contiguously, so each group is one device's."""
  devices = jax.device_count()
  return devices if n % devices == 0 else 1


def rows_per_device(n: int) -> int:
  """Rows of an axis of length n in each group of `device_groups(n)`."""
  return n // device_groups(n)


def in_chunks(x: jax.Array, chunk: int) -> jax.Array:
  """[N, ...] -> [num_chunks, groups, chunk, ...]: each device group's N / groups rows in
  chunks, zero rows appended to each group where chunk does not divide them (they add 0 to a
  sum; `from_chunks` drops them)."""
  groups = device_groups(x.shape[0])
  local = x.shape[0] // groups
  padded = -(-local // chunk) * chunk
  x = x.reshape(groups, local, *x.shape[1:])
  x = jnp.pad(x, ((0, 0), (0, padded - local)) + ((0, 0),) * (x.ndim - 2))
  return jnp.swapaxes(x.reshape(groups, padded // chunk, chunk, *x.shape[2:]), 0, 1)


def from_chunks(y: jax.Array, n: int) -> jax.Array:
  """The inverse of `in_chunks` for N = n rows: [num_chunks, groups, chunk, ...] -> [n, ...]."""
  num_chunks, groups, chunk = y.shape[:3]
  y = jnp.swapaxes(y, 0, 1).reshape(groups, num_chunks * chunk, *y.shape[3:])
  return y[:, :n // groups].reshape(n, *y.shape[2:])


def map_in_chunks(fn, xs: tuple[jax.Array, ...], chunk: int) -> jax.Array:
  """fn over chunks of the rows of xs (arrays [N, ...] with the same N), one chunk at a time
  (lax.map), within each device group: the same as fn(*xs) for an fn that treats rows
  independently. fn maps arrays [rows, ...] to one array [rows, ...]."""
  n = xs[0].shape[0]
  if chunk >= rows_per_device(n):
    return fn(*xs)

  def chunk_fn(chunk_xs):  # Each [groups, chunk, ...]: the groups' rows side by side.
    flat = [x.reshape(-1, *x.shape[2:]) for x in chunk_xs]
    y = fn(*flat)
    return y.reshape(*chunk_xs[0].shape[:2], *y.shape[1:])

  return from_chunks(jax.lax.map(chunk_fn, tuple(in_chunks(x, chunk) for x in xs)), n)


def sum_in_chunks(fn, xs: tuple[jax.Array, ...], chunk: int) -> jax.Array:
  """fn(*xs) for an fn that sums over the rows of xs (arrays [N, ...] with the same N), e.g. a
  kernel gradient summed over frames, computed a chunk of rows at a time (lax.scan): each device
  group sums its own rows' chunks, and the groups' totals are added once, after the loop (adding
  them in every iteration would be a cross-device reduction per chunk). fn maps arrays
  [rows, ...] to their total (any shape) and must map zero rows to zero, as a sum of products
  does: in_chunks pads each group with zero rows."""
  if chunk >= rows_per_device(xs[0].shape[0]):
    return fn(*xs)
  group_totals = jax.vmap(fn)  # [groups, chunk, ...] -> [groups, ...]
  chunked = tuple(in_chunks(x, chunk) for x in xs)  # Each [num_chunks, groups, chunk, ...].
  total = jax.eval_shape(group_totals, *(c[0] for c in chunked))
  add_chunk = lambda total, chunk_xs: (total + group_totals(*chunk_xs), None)
  return jax.lax.scan(add_chunk, jnp.zeros(total.shape, total.dtype), chunked)[0].sum(0)

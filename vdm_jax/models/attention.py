"""Factorized space-time attention (Ho et al. 2022, sec. 3) and text cross-attention.

One multi-head `Attention` module is reused along each axis; small reshape helpers move the
axis being attended over into the sequence position and everything else into the batch, as in
scenic's ViViT factorised encoder (`attn_space`, `attn_time`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax.models import chunks
from vdm_jax.models import layers

Dtype = Any


# ------------------------------------------------------------------------ reshape helpers


def space_to_seq(x: jax.Array) -> jax.Array:
  """[B, T, H, W, C] -> [B*T, H*W, C]: each frame is one sequence."""
  B, T, H, W, C = x.shape
  return x.reshape(B * T, H * W, C)


def seq_to_space(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Inverse of `space_to_seq`; `shape` is the video shape [B, T, H, W, C]."""
  B, T, H, W, C = shape
  assert x.shape == (B * T, H * W, C), (x.shape, shape)
  return x.reshape(B, T, H, W, C)


def time_to_seq(x: jax.Array) -> jax.Array:
  """[B, T, H, W, C] -> [B*H*W, T, C]: each pixel's trajectory over frames is one sequence."""
  B, T, H, W, C = x.shape
  return x.transpose(0, 2, 3, 1, 4).reshape(B * H * W, T, C)


def seq_to_time(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Inverse of `time_to_seq`; `shape` is the video shape [B, T, H, W, C]."""
  B, T, H, W, C = shape
  assert x.shape == (B * H * W, T, C), (x.shape, shape)
  return x.reshape(B, H, W, T, C).transpose(0, 3, 1, 2, 4)


def video_to_seq(x: jax.Array) -> jax.Array:
  """[B, T, H, W, C] -> [B, T*H*W, C]: the whole video is one sequence (text cross-attention)."""
  B, T, H, W, C = x.shape
  return x.reshape(B, T * H * W, C)


# ------------------------------------------------------------------------------ attention


ATTENTION_IMPLS = ('auto', 'cudnn', 'dot_product_attention', 'chunked', 'einsum')

# 'chunked' attends for this many bytes of float32 logits [rows, heads, queries, keys] at a time.
# Forward + backward of attention on the 2-core EPYC of 2026-12-05 (ms, whole batch at once ->
# chunks of 4 MiB): spatial 16x16 [128 frames, 256 tokens, 4 heads] 327 -> 172; spatial 8x8
# [128, 64, 8] 41 -> 24; text [8 videos, 4096 positions, 64 tokens, 4 heads] 88 -> 53; 1-8 MiB
# were all within 15% of the best at every shape, whole-batch logits up to 2x slower.
ATTENTION_CHUNK_BYTES = 4 * 2 ** 20


def check_attention_impl(attention_impl: str) -> str:
  """The one place that validates `attention_impl`; returns it with 'auto' resolved for this
  backend: 'chunked' on CPU, 'cudnn' on GPUs (each call falls back to 'dot_product_attention'
  where cuDNN's kernel does not apply: `cudnn_unsupported`), 'dot_product_attention' elsewhere."""
  if attention_impl not in ATTENTION_IMPLS:
    raise ValueError(f'attention_impl={attention_impl!r}; allowed values: {ATTENTION_IMPLS}.')
  if attention_impl == 'auto':
    return {'cpu': 'chunked', 'gpu': 'cudnn'}.get(jax.default_backend(), 'dot_product_attention')
  return attention_impl


def cudnn_unsupported(q: jax.Array, k: jax.Array, *, has_bias_or_mask: bool) -> str | None:
  """Why cuDNN's flash attention cannot run this call (None: it can), by the conditions that
  jax.nn.dot_product_attention(implementation='cudnn') checks (JAX 0.10): a GPU, 16-bit
  inputs, a head dimension that is a multiple of 8 and at most 128 (256 on Hopper; 128 keeps
  one rule for every GPU), and even sequence lengths where a bias is trained through.
  q: [B, N, heads, d]; k: [B, M, heads, d]."""
  if jax.default_backend() != 'gpu':
    return f'cuDNN attention needs a GPU (this backend: {jax.default_backend()})'
  if q.dtype not in (jnp.bfloat16, jnp.float16):
    return f'cuDNN attention needs bfloat16 or float16 inputs, not {q.dtype} (model.dtype)'
  d = q.shape[-1]
  if d % 8 or d > 128:
    return f'cuDNN attention needs a head dimension that is a multiple of 8 and <= 128, not {d}'
  N, M = q.shape[1], k.shape[1]
  if has_bias_or_mask and (N % 2 or M % 2):
    return f'cuDNN attention with a bias or mask needs even sequence lengths, not {N} and {M}'
  return None


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, bias: jax.Array | None = None,
                    mask: jax.Array | None = None) -> jax.Array:
  """jax.nn.dot_product_attention with cuDNN's flash attention kernel (Dao et al. 2022), which
  never writes the [B, heads, N, M] logits to memory. cuDNN takes a mask as an additive bias
  and needs every bias to span all [N, M] positions, so a key-padding mask [B, 1, 1, M] is
  broadcast over the queries first (a bool per position, small beside the logits).
  Same arguments and result as `einsum_attention`."""
  N, M = q.shape[1], k.shape[1]
  full = lambda a: None if a is None else jnp.broadcast_to(a, (*a.shape[:-2], N, M))
  return jax.nn.dot_product_attention(q, k, v, bias=full(bias), mask=full(mask),
                                      implementation='cudnn')


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, bias: jax.Array | None = None,
                      mask: jax.Array | None = None) -> jax.Array:
  """jax.nn.dot_product_attention a chunk of rows (the batch axis) at a time, each chunk's
  [chunk, heads, N, M] logits at most ATTENTION_CHUNK_BYTES, recomputed in the backward pass.

  The flash-attention idea (Dao et al. 2022) for a CPU and a batch of many short sequences: the
  whole batch's logits and probabilities (128 MiB for spatial attention at 16x16 in benchmark
  config S) go through memory several times and are kept for the backward pass; a chunk's stay
  in cache and are recomputed (jax.checkpoint). Same arguments and result as `einsum_attention`;
  the loop runs within each device's rows (chunks.py).
  """
  B, N, heads, _ = q.shape
  M = k.shape[1]
  chunk = max(1, ATTENTION_CHUNK_BYTES // (heads * N * M * 4))
  # A bias or mask with one entry per row is chunked with q, k, v; a broadcast one is shared.
  per_row = {name: a for name, a in (('bias', bias), ('mask', mask))
             if a is not None and a.shape[0] == B > 1}
  shared = {name: a for name, a in (('bias', bias), ('mask', mask)) if name not in per_row}

  @jax.checkpoint
  def attend(q, k, v, *rows):
    return jax.nn.dot_product_attention(q, k, v, **dict(zip(per_row, rows)), **shared,
                                        implementation=None)

  return chunks.map_in_chunks(attend, (q, k, v, *per_row.values()), chunk)


def einsum_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, bias: jax.Array | None = None,
                     mask: jax.Array | None = None) -> jax.Array:
  """softmax(q k^T / sqrt(d) + bias) v, written out (Vaswani et al. 2017, eq. 1).

  q: [B, N, heads, d]; k, v: [B, M, heads, d]; bias: float broadcastable to [B, heads, N, M];
  mask: bool, same broadcasting, True = attend. Logits and softmax in float32; a masked logit is
  the same large negative number jax.nn.dot_product_attention uses (so a query with every key
  masked attends uniformly in both). Returns [B, N, heads, d] in v's dtype.
  """
  logits = jnp.einsum('bnhd,bmhd->bhnm', q, k, preferred_element_type=jnp.float32)
  logits = logits * jnp.float32(1. / np.sqrt(q.shape[-1]))
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.float32(-0.7 * np.finfo(np.float32).max))
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum('bhnm,bmhd->bnhd', probs, v)


class Attention(nn.Module):
  """Multi-head dot-product attention with zero-initialised output projection.

  `attention_impl`: 'cudnn' runs cuDNN's flash attention kernel (`cudnn_attention`: GPUs,
  16-bit inputs; an error where it does not apply); 'dot_product_attention' calls
  jax.nn.dot_product_attention with XLA's implementation (written-out logits; JAX's own default,
  implementation=None, also picks XLA's and never cuDNN's); 'chunked' calls that on cache-sized
  chunks of the batch and recomputes them in the backward pass (`chunked_attention`: ~2x faster
  on CPU); 'einsum' is the same maths written out (`einsum_attention`), kept to check the others
  against; 'auto' is 'chunked' on CPU, on GPUs 'cudnn' where it applies and
  'dot_product_attention' where not, 'dot_product_attention' elsewhere. All take the same
  parameters; logits accumulate and the softmax runs in float32 in all.
  """
  num_heads: int
  head_dim: int
  zero_init_output: bool = True
  attention_impl: str = 'auto'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array | None = None, *,
               bias: jax.Array | None = None, mask: jax.Array | None = None) -> jax.Array:
    """x: [B, N, C] queries; context: [B, M, D] keys/values (None: self-attention);
    bias: float logits bias broadcastable to [B, heads, N, M]; mask: bool, same broadcasting,
    True = attend. Returns [B, N, C]."""
    B, N, C = x.shape
    context = x if context is None else context
    M = context.shape[1]
    assert context.shape[0] == B, (x.shape, context.shape)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dense = lambda name: nn.DenseGeneral((self.num_heads, self.head_dim), name=name, **kw)
    q, k, v = dense('query')(x), dense('key')(context), dense('value')(context)
    assert q.shape == (B, N, self.num_heads, self.head_dim), q.shape
    assert k.shape == v.shape == (B, M, self.num_heads, self.head_dim), k.shape
    if bias is not None:
      bias = bias.astype(q.dtype)  # cuDNN wants the bias in the inputs' dtype.
    attention_impl = check_attention_impl(self.attention_impl)
    if attention_impl == 'cudnn':
      reason = cudnn_unsupported(q, k, has_bias_or_mask=bias is not None or mask is not None)
      if reason and self.attention_impl == 'cudnn':
        raise ValueError(f"model.attention_impl='cudnn': {reason}. Use 'auto' (cuDNN where it "
                         "applies, XLA elsewhere) or 'dot_product_attention'.")
      attention_impl = 'dot_product_attention' if reason else 'cudnn'
    if attention_impl == 'einsum':
      out = einsum_attention(q, k, v, bias=bias, mask=mask)
    elif attention_impl == 'chunked':
      out = chunked_attention(q, k, v, bias=bias, mask=mask)
    elif attention_impl == 'cudnn':
      out = cudnn_attention(q, k, v, bias=bias, mask=mask)
    else:
      out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, implementation='xla')
    init = nn.initializers.zeros if self.zero_init_output else nn.initializers.lecun_normal()
    return nn.DenseGeneral(C, axis=(-2, -1), kernel_init=init, name='out', **kw)(out)


def relative_position_bucket(relative_position: np.ndarray, *, num_buckets: int,
                             max_distance: int) -> np.ndarray:
  """Bidirectional T5 bucketing (Raffel et al. 2020) of key_pos - query_pos.

  Half the buckets per direction; within each half, the first half are exact distances and the
  rest grow logarithmically up to `max_distance`, beyond which distances share the last bucket,
  so clips longer than those seen in training still get a sensible bias.
  """
  num_buckets //= 2
  bucket = (relative_position > 0).astype(np.int32) * num_buckets
  n = np.abs(relative_position)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  safe_n = np.maximum(n, 1)  # log(0) is masked out by is_small anyway.
  large = max_exact + (np.log(safe_n / max_exact) / np.log(max_distance / max_exact) *
                       (num_buckets - max_exact)).astype(np.int32)
  large = np.minimum(large, num_buckets - 1)
  return bucket + np.where(is_small, n, large)


class RelativePositionBias(nn.Module):
  """Learned per-head attention bias indexed by bucketed relative frame offset.

  Ho et al. 2022 use relative position embeddings (Shaw et al. 2018) in temporal attention so
  the network does not need absolute frame time; here in T5's scalar-per-head form.
  """
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 64
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, length: int) -> jax.Array:
    """Returns float32 [1, heads, length, length] logits bias."""
    pos = np.arange(length)
    buckets = relative_position_bucket(pos[None, :] - pos[:, None], num_buckets=self.num_buckets,
                                       max_distance=self.max_distance)  # [query, key]
    table = self.param('rel_embedding', nn.initializers.normal(0.02),
                       (self.num_buckets, self.num_heads), self.param_dtype)
    bias = jnp.take(table.astype(jnp.float32), buckets, axis=0)  # [T, T, heads]
    return bias.transpose(2, 0, 1)[None]


class SpaceTimeAttention(nn.Module):
  """Spatial self-attention within each frame, temporal self-attention across frames at each
  pixel, then cross-attention from every video position to the text tokens (each pre-norm with
  a residual). Ho et al. 2022, sec. 3; the text conditioning as in Imagen (Saharia et al. 2022).
  """
  head_dim: int = 32
  use_temporal_attention: bool = True
  rel_pos_buckets: int = 32
  rel_pos_max_distance: int = 64
  attention_impl: str = 'auto'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, num_images: int = 0, *, text: jax.Array | None = None,
               text_mask: jax.Array | None = None) -> jax.Array:
    """x: [B, T, H, W, C]; text: [B, L, D]; text_mask: bool [B, L] (True = real token).

    num_images: the last `num_images` frames are independent images (joint image-video
    training): temporal attention is masked so that each attends only to itself and the video
    frames never to them (Ho et al. 2022, sec. 3). Positional, so nn.remat can keep it static."""
    shape = x.shape
    B, T, H, W, C = shape
    assert C % self.head_dim == 0, (C, self.head_dim)
    heads = C // self.head_dim
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    attention = lambda name: Attention(heads, self.head_dim, attention_impl=self.attention_impl,
                                       name=name, **kw)

    h = layers.GroupNorm(name='norm_space', **kw)(x)
    x = x + seq_to_space(attention('attn_space')(space_to_seq(h)), shape)

    if self.use_temporal_attention:
      h = layers.GroupNorm(name='norm_time', **kw)(x)
      bias = RelativePositionBias(heads, self.rel_pos_buckets, self.rel_pos_max_distance,
                                  param_dtype=self.param_dtype, name='rel_pos')(T)
      mask = None
      if num_images:
        mask = jnp.asarray(layers.frame_segment_mask(T, num_images))[None, None]  # [1, 1, T, T]
      x = x + seq_to_time(attention('attn_time')(time_to_seq(h), bias=bias, mask=mask), shape)

    if text is not None:
      assert text.shape[0] == B and text_mask.shape == text.shape[:2], (text.shape, text_mask.shape)
      h = layers.GroupNorm(name='norm_text', **kw)(x)
      out = attention('attn_text')(video_to_seq(h), text, mask=text_mask[:, None, None, :])
      x = x + out.reshape(shape)
    assert x.shape == shape, (x.shape, shape)
    return x

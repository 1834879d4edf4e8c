"""A small pre-LN Transformer over byte or word tokens (vdm_jax.data.tokenizer), trained from scratch
with the diffusion model; Ho et al. 2022 condition on a frozen BERT-large instead, which the
template captions of this project do not need."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdm_jax.data.tokenizer import PAD_ID, VOCAB_SIZE
from vdm_jax.models.attention import Attention

Dtype = Any


class TextEncoder(nn.Module):
  """Token embedding + learned positions + `num_layers` pre-LN Transformer layers + final LN."""
  width: int = 128
  num_layers: int = 2
  num_heads: int = 4
  max_length: int = 64
  vocab_size: int = VOCAB_SIZE  # tokenizer.vocab_size(kind) of the tokens it reads.
  mlp_ratio: int = 4
  attention_impl: str = 'auto'  # See attention.ATTENTION_IMPLS.
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """tokens: int32 [B, L] (PAD_ID = padding) -> (embeddings [B, L, width], mask bool [B, L])."""
    B, L = tokens.shape
    if L > self.max_length:
      raise ValueError(f'{L} text tokens > max_text_length={self.max_length}.')
    assert self.width % self.num_heads == 0, (self.width, self.num_heads)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    layer_norm = lambda name: nn.LayerNorm(dtype=jnp.float32, param_dtype=self.param_dtype,
                                           name=name)
    mask = tokens != PAD_ID
    x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                 name='token_embedding', **kw)(tokens)
    pos = self.param('position_embedding', nn.initializers.normal(0.02),
                     (self.max_length, self.width), self.param_dtype)
    x = (x + pos[None, :L]).astype(self.dtype)
    attn_mask = mask[:, None, None, :]  # Keys only: padded queries are ignored downstream.
    for i in range(self.num_layers):
      h = layer_norm(f'ln_attn_{i}')(x).astype(self.dtype)
      x = x + Attention(self.num_heads, self.width // self.num_heads, zero_init_output=False,
                        attention_impl=self.attention_impl, name=f'attn_{i}', **kw)(h, mask=attn_mask)
      h = layer_norm(f'ln_mlp_{i}')(x).astype(self.dtype)
      h = nn.gelu(nn.Dense(self.mlp_ratio * self.width, name=f'mlp_in_{i}', **kw)(h))
      x = x + nn.Dense(self.width, name=f'mlp_out_{i}', **kw)(h)
      assert x.shape == (B, L, self.width), x.shape
    x = layer_norm('ln_final')(x).astype(self.dtype)
    return x, mask

"""The factorized space-time U-Net of Ho et al. 2022 ("Video Diffusion Models", sec. 3).

A 2D DDPM U-Net (Ho et al. 2020) whose convolutions act on each frame (1x3x3), which resamples
height and width but never time, and which at the resolutions in `attention_resolutions` (and
in the middle) follows each residual block with spatial self-attention, temporal self-attention
with relative positions, and cross-attention to the text. Conditioning: sinusoidal noise-level
embedding -> MLP, plus the pooled text embedding ('text', from the built-in TextEncoder or from
precomputed embeddings of an external encoder), or a class embedding ('class'), or nothing
('none'); classifier-free guidance replaces the text (the class) by learned null embeddings (a
learned null class) where `drop_text` is True (Ho & Salimans 2022). With `frame_conditioning`,
given frames enter by channel concatenation with a 0/1 mask channel, and their noise-augmentation
log-SNR is embedded and added to the conditioning embedding (Ho et al. 2022b, Imagen Video).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdm_jax.data import tokenizer
from vdm_jax.models import layers
from vdm_jax.models import remat as remat_lib
from vdm_jax.models.attention import SpaceTimeAttention
from vdm_jax.models.attention import check_attention_impl
from vdm_jax.models.text_encoder import TextEncoder

Dtype = Any

# What the network is conditioned on besides the noise level: 'text' (captions, cross-attention
# and a pooled embedding), 'class' (an integer label through an embedding) or 'none'.
CONDITIONINGS = ('text', 'class', 'none')
# Where the text embeddings come from: 'builtin' (TextEncoder over word or byte tokens, trained with the
# model) or 'precomputed' (the dataset's [L, D] embeddings of any frozen encoder, e.g. T5).
TEXT_ENCODERS = ('builtin', 'precomputed')


def check_conditioning(conditioning: str) -> str:
  """The one place that validates `conditioning`."""
  if conditioning not in CONDITIONINGS:
    raise ValueError(f'conditioning={conditioning!r}; allowed values: {CONDITIONINGS}.')
  return conditioning


def check_text_encoder(text_encoder: str) -> str:
  """The one place that validates `text_encoder`."""
  if text_encoder not in TEXT_ENCODERS:
    raise ValueError(f'text_encoder={text_encoder!r}; allowed values: {TEXT_ENCODERS}.')
  return text_encoder

REMAT_MODES = ('none', 'block', 'full')


def check_remat(remat: str) -> str:
  """The one place that validates `remat`."""
  if remat not in REMAT_MODES:
    raise ValueError(f'remat={remat!r}; allowed values: {REMAT_MODES}.')
  return remat


class VideoUNet(nn.Module):
  """Text-conditioned video denoiser: (z, logsnr, text) -> eps or v prediction."""
  channels: int = 64
  channel_mult: tuple[int, ...] = (1, 2, 2)
  num_res_blocks: int = 1
  attention_resolutions: tuple[int, ...] = (8,)
  head_dim: int = 32
  dropout: float = 0.0
  text_width: int = 128
  text_layers: int = 2
  text_heads: int = 4
  max_text_length: int = 64
  text_vocab_size: int = tokenizer.VOCAB_SIZE  # tokenizer.vocab_size(config.model.text_tokenizer).
  temporal_rel_pos_buckets: int = 32
  temporal_rel_pos_max_distance: int = 64
  out_channels: int = 3
  use_temporal_attention: bool = True  # False (and no temporal_conv): frames processed independently.
  # A 3x1x1 temporal conv after the first spatial conv of every residual block ((2+1)D, as in
  # Imagen Video); not in Ho et al. 2022's base model, where frames meet only in temporal attention.
  temporal_conv: bool = False
  conv_impl: str = 'auto'  # See layers.CONV_IMPLS.
  # Space-to-depth of p x p pixels before the first conv and back after the last (Hoogeboom et
  # al. 2023, "simple diffusion"): the U-Net runs at H/p x W/p, p^2 times cheaper per conv, while
  # the output stays full resolution. Still space-only: time is never resampled.
  patch_size: int = 1
  # Add a (sinusoidal -> Dense) embedding of each frame's index to the features after the first
  # conv, so that every layer knows where in the clip a frame is (relative positions in temporal
  # attention give only order and distance). Not in Ho et al. 2022.
  frame_embedding: bool = False
  # CoordConv (Liu et al. 2018): 3 input channels holding each pixel's frame index, row and column
  # scaled to [-1, 1], concatenated to z, so that the network can place things at absolute
  # positions that depend on the frame (a caption's direction says where an object is in each
  # frame, which translation-equivariant convolutions find hard to express). Not in Ho et al. 2022.
  coord_channels: bool = False
  # Add a conditional layout embedding after the first conv: Fourier features of each position's
  # (frame, row, column) read out with coefficients computed from the conditioning embedding
  # (noise level + text), so the caption can say where and when content is
  # (layers.ConditionalLayoutEmbedding). Not in Ho et al. 2022.
  layout_embedding: bool = False
  # 'sigma2': the layout embedding scaled by sigma^2, so it acts at high noise only (see
  # layers.LAYOUT_EMBEDDING_GATES).
  layout_embedding_gate: str = 'none'
  layout_embedding_gate_center: float = 0.0  # The log-SNR where the 'sigma2' gate is 1/2.
  layout_embedding_gate_sharpness: float = 1.0  # Its slope in log-SNR (1: sigma^2 when centered at 0).
  # The layout embedding reads the conditioning embedding through stop_gradient: its gradients
  # then train only itself, not the text encoder and noise-level MLP that every block shares.
  layout_embedding_detach: bool = False
  # Its Fourier features: how many frequencies, and their scale (the std of the trainable
  # frequencies, in cycles per half frame side: lower is smoother, closer to an object's size).
  layout_embedding_frequencies: int = 64
  layout_embedding_scale: float = 3.0
  # A layout residual head: a ConditionalLayoutEmbedding at the output (its own Fourier features
  # at full resolution, scale `layout_head_scale`, gated by sigma^2) that adds an x-space
  # correction, converted to the output's `parameterization`. Trained on what the rest of the
  # network leaves (diffusion.denoising_terms: the network's own loss is unchanged by it), meant
  # to supply the caption's direction-dependent layout at high noise (measured: on a trained
  # model it did not learn the direction word; README, Results). Not in Ho et al. 2022.
  layout_head: bool = False
  layout_head_scale: float = 1.0
  parameterization: str = 'eps'  # What the output predicts: needed by layout_head only.
  attention_impl: str = 'auto'  # See attention.ATTENTION_IMPLS.
  # Rematerialisation (gradient checkpointing, models/remat.py), see REMAT_MODES: 'none';
  # 'block': every residual block and attention block keeps only its inputs for the backward
  # pass and recomputes the rest there (config S's network gradient: temporaries 5.95 -> 2.94 GiB
  # on XLA:CPU); 'full': the whole network keeps only its inputs, which lowers memory only
  # outside the network (its backward pass recomputes every activation at once). Same outputs,
  # gradients and parameters; more compute (benchmarks/remat_memory.py).
  remat: str = 'none'
  conditioning: str = 'text'  # See CONDITIONINGS.
  num_classes: int = 0  # 'class': number of labels (the embedding has one more row: the null class).
  text_encoder: str = 'builtin'  # 'text': see TEXT_ENCODERS.
  # Width of the conditioning embedding (noise level + text/class, added in every residual block
  # by FiLM); 0: 4 * channels (the DDPM default). Ho et al. 2022 Appendix A: 1024.
  cond_embedding_dim: int = 0
  cond_mlp_layers: int = 2  # Dense layers of the noise-level MLP (Ho et al. 2022: 2 or 4).
  # Given frames (cond_frames, cond_mask, cond_logsnr) concatenated to z as C + 1 more input
  # channels: the frames (zero where not given) and a 0/1 mask channel.
  frame_conditioning: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def __call__(self, z: jax.Array, *, logsnr: jax.Array, text_tokens: jax.Array | None = None,
               labels: jax.Array | None = None, text_embedding: jax.Array | None = None,
               text_embedding_mask: jax.Array | None = None,
               cond_frames: jax.Array | None = None, cond_mask: jax.Array | None = None,
               cond_logsnr: jax.Array | None = None,
               drop_text: jax.Array | None = None, train: bool = False,
               num_images: int = 0, layout_head_parts: bool = False):
    """z: [B, T, H, W, C]; logsnr: float32 [B]; drop_text: bool [B] or None (True: use the null
    text, or the null class, for classifier-free guidance; ignored by conditioning 'none');
    train: enables dropout (rng 'dropout'); num_images: the last `num_images` of the T frames
    are independent images appended to a video of T - num_images frames (joint image-video
    training, Ho et al. 2022 sec. 3): every temporal layer is masked so that each image sees
    only itself, and its output equals that of the image run alone as a one-frame video.

    Conditioning, by `conditioning` / `text_encoder`:
      'text', 'builtin':     text_tokens int32 [B, L] (0 = padding);
      'text', 'precomputed': text_embedding [B, L, D] and text_embedding_mask bool [B, L];
      'class':               labels int32 [B] in [0, num_classes);
      'none':                nothing.
    With frame_conditioning: cond_frames [B, T, H, W, C] (the given frames, noise-augmented;
    ignored where not given), cond_mask bool [B, T] (True: frame given) and cond_logsnr float32
    [B] (the log-SNR of their noise augmentation). Inputs the configuration does not use are
    ignored. Returns float32 [B, T, H, W, out_channels]; with layout_head and
    layout_head_parts=True, the pair (network output, layout head's correction), whose sum is
    the output (the loss trains the two on different targets)."""
    if not 0 <= num_images < z.shape[1]:
      raise ValueError(f'num_images={num_images} must lie in [0, {z.shape[1]}) for {z.shape[1]} frames.')
    cond = dict(text_tokens=text_tokens, labels=labels, text_embedding=text_embedding,
                text_embedding_mask=text_embedding_mask, cond_frames=cond_frames,
                cond_mask=cond_mask, cond_logsnr=cond_logsnr)
    needed = self.conditioning_inputs()
    missing = [k for k in needed if cond[k] is None]
    if missing:
      raise ValueError(f'conditioning={self.conditioning!r}, text_encoder={self.text_encoder!r}, '
                       f'frame_conditioning={self.frame_conditioning} needs {missing}.')
    cond = {k: cond[k] for k in needed}
    if check_remat(self.remat) == 'full':
      # static_argnums counts the module: (self, z, logsnr, cond, drop_text, train, num_images,
      # layout_head_parts).
      forward = remat_lib.remat(VideoUNet._forward, static_argnums=(5, 6, 7))
      return forward(self, z, logsnr, cond, drop_text, train, num_images, layout_head_parts)
    return self._forward(z, logsnr, cond, drop_text, train, num_images, layout_head_parts)

  def conditioning_inputs(self) -> tuple[str, ...]:
    """Names of the keyword inputs (besides z, logsnr) this configuration reads."""
    names = {'text': ('text_tokens',) if check_text_encoder(self.text_encoder) == 'builtin'
                     else ('text_embedding', 'text_embedding_mask'),
             'class': ('labels',), 'none': ()}[check_conditioning(self.conditioning)]
    if self.frame_conditioning:
      names += ('cond_frames', 'cond_mask', 'cond_logsnr')
    return names

  @nn.compact
  def _forward(self, z, logsnr, cond, drop_text, train, num_images, layout_head_parts=False):
    B, T, H, W, C = z.shape
    assert logsnr.shape == (B,), logsnr.shape
    num_levels = len(self.channel_mult)
    p = self.patch_size
    if H % (p * 2 ** (num_levels - 1)) or W % (p * 2 ** (num_levels - 1)):
      raise ValueError(f'Frame size {H}x{W} is not divisible by patch_size * 2^{num_levels - 1} '
                       f'(patch_size={p}, channel_mult={self.channel_mult}).')
    layers.check_conv_impl(self.conv_impl)
    check_attention_impl(self.attention_impl)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    conv_kw = dict(conv_impl=self.conv_impl, **kw)
    if drop_text is not None:
      assert drop_text.shape == (B,), drop_text.shape

    # ---------------------------------------------------------------- conditioning
    emb_dim = self.cond_embedding_dim or 4 * self.channels
    text = text_mask = None
    if self.conditioning == 'text':
      if self.text_encoder == 'builtin':
        text, text_mask = TextEncoder(self.text_width, self.text_layers, self.text_heads,
                                      self.max_text_length, self.text_vocab_size,
                                      attention_impl=self.attention_impl,
                                      name='text_encoder', **kw)(cond['text_tokens'])
      else:  # Precomputed by a frozen external encoder: a linear map D -> text_width (as Imagen).
        embedding, text_mask = cond['text_embedding'], cond['text_embedding_mask']
        if embedding.shape[1] > self.max_text_length:
          raise ValueError(f'{embedding.shape[1]} text embedding positions > max_text_length='
                           f'{self.max_text_length}.')
        text = nn.Dense(self.text_width, name='text_embedding_proj', **kw)(embedding)
        text_mask = text_mask.astype(bool)
      assert text.shape[0] == B and text_mask.shape == text.shape[:2], (text.shape, text_mask.shape)
      L = text.shape[1]
      maskf = text_mask[..., None].astype(jnp.float32)
      pooled = jnp.sum(text.astype(jnp.float32) * maskf, 1) / jnp.maximum(jnp.sum(maskf, 1), 1.)
      # Null text for classifier-free guidance: a learned sequence (all positions attended) and
      # a learned pooled vector. Created unconditionally so params do not depend on drop_text.
      null_text = self.param('null_text', nn.initializers.normal(0.02),
                             (self.max_text_length, self.text_width), self.param_dtype)
      null_pooled = self.param('null_pooled', nn.initializers.normal(0.02), (self.text_width,),
                               self.param_dtype)
      if drop_text is not None:
        text = jnp.where(drop_text[:, None, None], null_text[None, :L].astype(text.dtype), text)
        text_mask = jnp.where(drop_text[:, None], True, text_mask)
        pooled = jnp.where(drop_text[:, None], null_pooled[None].astype(jnp.float32), pooled)

    emb = layers.logsnr_embedding(logsnr, self.channels)
    for i in range(self.cond_mlp_layers):  # Dense, then (SiLU, Dense) per further layer.
      emb = nn.Dense(emb_dim, name=f'logsnr_mlp_{i}', **kw)(nn.silu(emb) if i else emb)
    if self.conditioning == 'text':
      emb = emb + nn.Dense(emb_dim, name='text_pooled_proj', **kw)(pooled)
    elif self.conditioning == 'class':
      labels = cond['labels']
      assert labels.shape == (B,), labels.shape
      if drop_text is not None:  # Row num_classes is the learned null class.
        labels = jnp.where(drop_text, self.num_classes, labels)
      emb = emb + nn.Embed(self.num_classes + 1, emb_dim, embedding_init=nn.initializers.normal(0.02),
                           name='class_embedding', **kw)(labels)
    if self.frame_conditioning:
      # Noise conditioning augmentation (Ho et al. 2022b, Imagen Video sec. 2.5): the network is
      # told how noisy the given frames are, through its own embedding MLP.
      cond_logsnr = cond['cond_logsnr']
      assert cond_logsnr.shape == (B,), cond_logsnr.shape
      aug = nn.Dense(emb_dim, name='cond_logsnr_mlp_0', **kw)(
          layers.logsnr_embedding(cond_logsnr, self.channels))
      emb = emb + nn.Dense(emb_dim, name='cond_logsnr_mlp_1', **kw)(nn.silu(aug))
      z = concat_cond_frames(z, cond_frames=cond['cond_frames'], cond_mask=cond['cond_mask'])

    block_remat = self.remat == 'block'
    # static_argnums count self: ResBlock(x, emb, train, num_images), SpaceTimeAttention(x, num_images).
    res_block_cls = (remat_lib.remat(layers.ResBlock, static_argnums=(3, 4)) if block_remat
                     else layers.ResBlock)
    attention_cls = (remat_lib.remat(SpaceTimeAttention, static_argnums=(2,)) if block_remat
                     else SpaceTimeAttention)

    def res_block(h, features, name):
      return res_block_cls(features, dropout=self.dropout, temporal_conv=self.temporal_conv,
                           name=name, **conv_kw)(h, emb, train, num_images)

    def attention(h, name):
      return attention_cls(self.head_dim, self.use_temporal_attention,
                           self.temporal_rel_pos_buckets, self.temporal_rel_pos_max_distance,
                           attention_impl=self.attention_impl, name=name, **kw)(
                               h, num_images, text=text, text_mask=text_mask)

    # ------------------------------------------------------------------- down path
    if self.coord_channels:
      z = jnp.concatenate([z, layers.coordinate_channels(B, T, H, W, num_images=num_images,
                                                  dtype=z.dtype)], axis=-1)
    h = layers.FrameConv(self.channels, name='conv_in', **conv_kw)(space_to_depth(z, p))
    if self.frame_embedding:
      # Appended images are frame 0 of their own one-frame clips.
      index = jnp.concatenate([jnp.arange(T - num_images), jnp.zeros(num_images, jnp.int32)])
      frames = layers.sinusoidal_embedding(index.astype(jnp.float32), self.channels)
      h = h + nn.Dense(self.channels, name='frame_embedding', **kw)(frames)[None, :, None, None, :]
    if self.layout_embedding:
      h = h + layers.ConditionalLayoutEmbedding(
          self.channels, num_frequencies=self.layout_embedding_frequencies,
          scale=self.layout_embedding_scale, gate=self.layout_embedding_gate,
          gate_center=self.layout_embedding_gate_center,
          gate_sharpness=self.layout_embedding_gate_sharpness, name='layout_embedding', **kw)(
              jax.lax.stop_gradient(emb) if self.layout_embedding_detach else emb,
              T, H // p, W // p, num_images, logsnr=logsnr)
    skips = [h]
    for level, mult in enumerate(self.channel_mult):
      for i in range(self.num_res_blocks):
        h = res_block(h, self.channels * mult, f'down_{level}_res_{i}')
        if h.shape[2] in self.attention_resolutions:
          h = attention(h, f'down_{level}_attn_{i}')
        skips.append(h)
      if level != num_levels - 1:
        h = layers.Downsample(name=f'down_{level}_downsample', **conv_kw)(h)
        skips.append(h)

    # ---------------------------------------------------------------------- middle
    # Attention in the middle always, as in DDPM: it is at the lowest resolution, so cheap.
    h = res_block(h, h.shape[-1], 'mid_res_0')
    h = attention(h, 'mid_attn')
    h = res_block(h, h.shape[-1], 'mid_res_1')

    # --------------------------------------------------------------------- up path
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      for i in range(self.num_res_blocks + 1):
        skip = skips.pop()
        assert skip.shape[:4] == h.shape[:4], (skip.shape, h.shape)
        h = res_block(jnp.concatenate([h, skip], axis=-1), self.channels * mult,
                      f'up_{level}_res_{i}')
        if h.shape[2] in self.attention_resolutions:
          h = attention(h, f'up_{level}_attn_{i}')
      if level != 0:
        h = layers.Upsample(name=f'up_{level}_upsample', **conv_kw)(h)
    assert not skips and h.shape == (B, T, H // p, W // p, self.channels), (len(skips), h.shape)

    # ---------------------------------------------------------------------- output
    h = nn.silu(layers.GroupNorm(name='norm_out', **kw)(h))
    out = layers.FrameConv(self.out_channels * p * p, kernel_init=nn.initializers.zeros,
                           name='conv_out', **conv_kw)(h)
    out = depth_to_space(out, p).astype(jnp.float32)
    if not self.layout_head:
      return out
    # Reads the conditioning embedding through stop_gradient: its loss trains only itself.
    dx = layers.ConditionalLayoutEmbedding(
        self.out_channels, scale=self.layout_head_scale, gate='sigma2', name='layout_head',
        param_dtype=self.param_dtype)(jax.lax.stop_gradient(emb), T, H, W, num_images,
                                      logsnr=logsnr)
    correction = layout_correction(dx.astype(jnp.float32), logsnr, self.parameterization)
    return (out, correction) if layout_head_parts else out + correction


def layout_correction(dx: jax.Array, logsnr: jax.Array, parameterization: str) -> jax.Array:
  """The change of the output of a `parameterization` network, at fixed z, that changes its x
  prediction by dx [B, ...]: eps = (z - alpha x) / sigma gives -(alpha / sigma) dx; v =
  alpha eps - sigma x = (alpha z - x) / sigma gives -dx / sigma; x gives dx."""
  shape = (-1,) + (1,) * (dx.ndim - 1)
  logsnr = logsnr.astype(jnp.promote_types(dx.dtype, jnp.float32)).reshape(shape)
  if parameterization == 'eps':
    return -jnp.exp(0.5 * logsnr) * dx
  if parameterization == 'v':
    return -jnp.sqrt(1.0 + jnp.exp(logsnr)) * dx  # 1 / sigma, sigma^2 = sigmoid(-logsnr).
  if parameterization == 'x':
    return dx
  raise ValueError(f'Unknown parameterization {parameterization!r}.')


def concat_cond_frames(z: jax.Array, *, cond_frames: jax.Array, cond_mask: jax.Array) -> jax.Array:
  """[z, m * cond_frames, m] on channels: z, cond_frames [B, T, H, W, C], cond_mask bool [B, T]
  -> [B, T, H, W, 2C + 1], m = 1 on given frames, 0 elsewhere (frames not given are zeros)."""
  B, T, H, W, C = z.shape
  assert cond_frames.shape == z.shape and cond_mask.shape == (B, T), (cond_frames.shape,
                                                                      cond_mask.shape, z.shape)
  m = cond_mask.astype(z.dtype)[:, :, None, None, None]
  return jnp.concatenate([z, cond_frames.astype(z.dtype) * m, jnp.broadcast_to(m, (B, T, H, W, 1))],
                         axis=-1)


def space_to_depth(x: jax.Array, p: int) -> jax.Array:
  """[B, T, H, W, C] -> [B, T, H/p, W/p, p*p*C]: each p x p patch of pixels becomes one position."""
  if p == 1:
    return x
  B, T, H, W, C = x.shape
  x = x.reshape(B, T, H // p, p, W // p, p, C).transpose(0, 1, 2, 4, 3, 5, 6)
  return x.reshape(B, T, H // p, W // p, p * p * C)


def depth_to_space(x: jax.Array, p: int) -> jax.Array:
  """Inverse of space_to_depth: [B, T, h, w, p*p*C] -> [B, T, h*p, w*p, C]."""
  if p == 1:
    return x
  B, T, h, w, D = x.shape
  C = D // (p * p)
  x = x.reshape(B, T, h, w, p, p, C).transpose(0, 1, 2, 4, 3, 5, 6)
  return x.reshape(B, T, h * p, w * p, C)

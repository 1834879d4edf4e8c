"""Frame conditioning: which frames of a clip are given, and their noise conditioning augmentation.

A frame-conditioned denoiser (models/unet.py, `frame_conditioning`) sees the given frames
concatenated to z on channels, with a 0/1 mask channel (Ho et al. 2022, "Video Diffusion
Models", sec. 3.1 and 5: video prediction as conditional generation; Ho et al. 2022b, "Imagen
Video", sec. 2.3: spatial and temporal super-resolution by channel concatenation). The given
frames are noised first (noise conditioning augmentation, Imagen Video sec. 2.5; Ho et al. 2021,
"Cascaded Diffusion Models", sec. 3.2): to a random log-SNR during training, to a fixed one at
sampling, and that log-SNR is passed to the network.

With `cond_frames='low_res'` every frame is given, at 1/f of the resolution: the network is a
spatial super-resolution stage of a cascade (Imagen Video sec. 2.3), trained on the data's own
videos average-pooled f x f, and sees them upsampled back to its resolution (nearest neighbour,
so pooling gives them back exactly), noise-augmented like given frames. With
`cond_frames='low_frame_rate'` every s-th frame is given (frames 0, s, 2s, ...): the network is a
temporal super-resolution stage (Imagen Video sec. 2.3: it raises the frame rate s-fold),
trained on the data's own videos, and generates the frames between the given ones.

Pure functions of arrays and keys; this module knows nothing of networks. Shapes: videos
[batch, frames, height, width, channels], masks bool [batch, frames].
"""

import jax
import jax.numpy as jnp

from vdm_jax import diffusion
from vdm_jax import guidance

# Which frames are given during training:
#   'first':  frames 0 .. k-1 of every video (video prediction from its first k frames);
#   'random': k distinct frames of each video, drawn anew for every example (infilling,
#             interpolation, prediction: any subset the sampler may be asked to complete);
#   'low_res': every frame, at 1/f of the resolution (spatial super-resolution; f is
#             config.train.cond_low_res_factor); the loss covers every frame;
#   'low_frame_rate': frames 0, s, 2s, ... (temporal super-resolution; s is
#             config.train.cond_frame_stride); the loss covers the frames between them.
COND_FRAMES = ('first', 'random', 'low_res', 'low_frame_rate')


def check_cond_frames(cond_frames: str) -> str:
  """The one place that validates `cond_frames`."""
  if cond_frames not in COND_FRAMES:
    raise ValueError(f'cond_frames={cond_frames!r}; allowed values: {COND_FRAMES}.')
  return cond_frames


def given_frames_mask(rng: jax.Array, *, batch_size: int, num_frames: int, num_given: int,
                      mode: str, num_images: int = 0) -> jax.Array:
  """bool [batch_size, num_frames]: True where a frame is given (see COND_FRAMES).

  The last `num_images` frames are appended independent images (joint image-video training):
  never given; the k given frames are among the first num_frames - num_images (the video).
  """
  video = num_frames - num_images
  if not 0 <= num_given <= video:
    raise ValueError(f'num_given={num_given} must lie in [0, {video}] for {video} video frames.')
  if check_cond_frames(mode) == 'first':
    given = jnp.arange(num_frames) < num_given
    return jnp.broadcast_to(given, (batch_size, num_frames))
  if mode in ('low_res', 'low_frame_rate'):
    raise ValueError(f'cond_frames={mode!r} does not draw k given frames: see low_res / '
                     'low_frame_rate_mask.')
  # k distinct frames per example: the k smallest of i.i.d. uniform keys.
  keys = jax.random.uniform(rng, (batch_size, video))
  rank = jnp.argsort(jnp.argsort(keys, axis=1), axis=1)
  given = rank < num_given
  return jnp.concatenate([given, jnp.zeros((batch_size, num_images), bool)], axis=1)


def low_res(video: jax.Array, *, factor: int) -> jax.Array:
  """The low-resolution video a super-resolution stage is given: [B, T, H, W, C] average-pooled
  f x f -> [B, T, H/f, W/f, C] (what the cascade's base stage generates)."""
  return guidance.downsample(video, factor=factor)


def low_res_input(frames: jax.Array, *, factor: int) -> jax.Array:
  """[B, T, H/f, W/f, C] -> [B, T, H, W, C]: the low-resolution frames as the network sees them,
  upsampled by nearest neighbour (so `low_res` of it is `frames` again, exactly)."""
  return guidance.upsample(frames, factor=factor)


def low_frame_rate_mask(num_frames: int, *, stride: int) -> jax.Array:
  """bool [num_frames]: True at frames 0, s, 2s, ... (the frames a temporal super-resolution
  stage is given; s = stride divides num_frames)."""
  if stride < 2 or num_frames % stride:
    raise ValueError(f'stride={stride} must be > 1 and divide num_frames={num_frames}.')
  return jnp.arange(num_frames) % stride == 0


def low_frame_rate(video: jax.Array, *, stride: int) -> jax.Array:
  """The low-frame-rate video a temporal super-resolution stage is given: [B, T, H, W, C] ->
  [B, T / s, H, W, C], frames 0, s, 2s, ... (what the cascade's stage before it generates)."""
  return video[:, ::stride]


def low_frame_rate_input(frames: jax.Array, *, stride: int) -> jax.Array:
  """[B, T / s, H, W, C] -> [B, T, H, W, C]: the given frames at their places 0, s, 2s, ... of
  the full-rate clip, zeros between them (masked out: frame_conditioning's mask channel is 0
  there)."""
  B, t, H, W, C = frames.shape
  out = jnp.zeros((B, t, stride, H, W, C), frames.dtype).at[:, :, 0].set(frames)
  return out.reshape(B, t * stride, H, W, C)


def sample_aug_logsnr(rng: jax.Array, batch_size: int, *, logsnr_min: float,
                      logsnr_max: float) -> jax.Array:
  """Training-time log-SNR of the augmentation: lambda' ~ U[logsnr_min, logsnr_max], [batch_size]."""
  return jax.random.uniform(rng, (batch_size,), minval=logsnr_min, maxval=logsnr_max)


def augment(x: jax.Array, *, mask: jax.Array, logsnr: jax.Array, noise: jax.Array) -> jax.Array:
  """The conditioning frames the network sees:

    c = m (alpha' x + sigma' eps'),  alpha'^2 = sigmoid(lambda'),  sigma'^2 = sigmoid(-lambda'),

  m = mask [B, T] (1: given), lambda' = logsnr [B], eps' = noise [B, T, H, W, C]: the forward
  process (diffusion.q_sample) at the augmentation level, zero on frames not given.
  """
  m = mask.astype(x.dtype)[:, :, None, None, None]
  return m * diffusion.q_sample(x, logsnr=logsnr, noise=noise)


def drop_given_frames(rng: jax.Array, mask: jax.Array, *, drop_prob: float) -> jax.Array:
  """mask bool [B, T] with every frame of each example taken away (all False) with probability
  drop_prob: masked conditional training (Voleti et al. 2022, "MCVD"), so one model learns
  generation from noise beside prediction (a long video's first block, then its continuations)."""
  if drop_prob <= 0:
    return mask
  keep = jax.random.uniform(rng, mask.shape[:1]) >= drop_prob
  return mask & keep[:, None]


def loss_frame_weights(mask: jax.Array) -> jax.Array:
  """float32 [B, T]: 1 on the frames the loss covers (those not given), 0 on given frames.

  The network also outputs a prediction for the given frames, but they are inputs, not
  samples: the sampler returns the given frames themselves there, so they are left out of
  the loss."""
  return 1.0 - mask.astype(jnp.float32)


def sampling_inputs(frames: jax.Array, *, mask: jax.Array, logsnr: float,
                    rng: jax.Array) -> dict[str, jax.Array]:
  """The network's frame-conditioning inputs at sampling: the given frames (frames [B, T, H, W, C]
  where mask bool [B, T] is True) noised to the fixed augmentation level lambda' = logsnr
  (`augment`), with their mask and level: {'cond_frames', 'cond_mask', 'cond_logsnr' [B]}."""
  cond_logsnr = jnp.full(frames.shape[:1], logsnr, jnp.float32)
  noise = jax.random.normal(rng, frames.shape, frames.dtype)
  return dict(cond_frames=augment(frames, mask=mask, logsnr=cond_logsnr, noise=noise),
              cond_mask=mask, cond_logsnr=cond_logsnr)

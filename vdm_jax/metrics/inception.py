"""Inception-v3 as FID uses it (Heusel et al. 2017), in Flax Linen, and the Inception Score
(Salimans et al. 2016) of its predictions: the frame-level metrics of generated videos.

The network is pytorch-fid's (mseitzer/pytorch-fid, src/pytorch_fid/inception.py:
`fid_inception_v3`), whose checkpoint `pt_inception-2015-12-05-6726825d.pth` is TensorFlow's
2015 ImageNet graph (inception-2015-12-05.tgz, the one the original FID and IS code read) ported
to torchvision's `Inception3` layout; vdm_jax/metrics/convert_inception.py converts it. That graph
differs from torchvision's Inception-v3, and this module follows the graph:

  * 1008 classes in the final fc (the graph's softmax), no auxiliary head;
  * the pool branch of Mixed_5b..5d (InceptionA), Mixed_6b..6e (InceptionC) and Mixed_7b
    (InceptionE, `FIDInceptionE_1`) is a 3x3 average pool that does not count the zero padding
    (TF's avg_pool; PyTorch count_include_pad=False);
  * the pool branch of Mixed_7c (`FIDInceptionE_2`) is a 3x3 *max* pool (stride 1, pad 1);
  * every convolution is conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU (`BasicConv2d`).

The architecture, on [B, 299, 299, 3]:

    Conv2d_1a_3x3 (32, stride 2)  Conv2d_2a_3x3 (32)  Conv2d_2b_3x3 (64, pad 1)  max pool 3/2
    Conv2d_3b_1x1 (80)  Conv2d_4a_3x3 (192)  max pool 3/2                       -> 35x35x192
    Mixed_5b, 5c, 5d (A)  Mixed_6a (B)  Mixed_6b..6e (C)  Mixed_7a (D)  Mixed_7b, 7c (E)
    -> 8x8x2048 -> mean over space: `pool` [B, 2048] (FID's features) -> fc -> [B, 1008]

Input (pytorch-fid's `InceptionV3.forward`): images in [0, 1] resized to 299x299 by
`F.interpolate(mode='bilinear', align_corners=False)` (half-pixel centres, no antialiasing), then
scaled to [-1, 1]. (The original TF code fed [0, 255] to the graph's own TF1 resize, without the
half-pixel offset; pytorch-fid's numbers, and these, differ from it slightly for inputs that are
not 299x299.)

Inception Score: exp(E_x KL(p(y|x) || p(y))), with p(y) the mean of p(y|x) over a split, the mean
and standard deviation (ddof 0) over `splits` contiguous splits (Salimans et al. 2016; 10 splits).
p(y|x) is the softmax over all 1008 outputs of `pool @ fc.kernel`, *without* the fc bias: what the
original code computes (openai/improved-gan, inception_score/model.py: the MatMul input of
softmax/logits, `tf.nn.softmax(tf.matmul(pool3, w))`), and what torch-fidelity reproduces as its
`logits_unbiased` feature, whose ISC matches the TF numbers. Restricting to the first 1000 classes
or adding the bias would give other (incomparable) scores.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

Dtype = Any

NUM_CLASSES = 1008  # the 2015 graph's softmax (1000 ImageNet classes and 8 unused)
RESOLUTION = 299
FEATURE_DIM = 2048  # FID's pool features
BN_EPSILON = 1e-3  # the TF graph's BatchNorm, and torchvision's BasicConv2d


class BasicConv2d(nn.Module):
  """Conv2D (no bias; zero padding `padding` on each side, as PyTorch's) -> BatchNorm (inference
  statistics) -> ReLU, on [B, H, W, C].

  Parameters (names as torchvision's): conv/kernel [kh, kw, Cin, Cout], bn/scale, bn/bias [Cout];
  batch statistics bn/mean, bn/var [Cout].
  """
  features: int
  kernel_size: Sequence[int] = (1, 1)
  strides: Sequence[int] = (1, 1)
  padding: Sequence[int] = (0, 0)  # (ph, pw): rows, columns of zeros before and after
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, tuple(self.kernel_size), strides=tuple(self.strides),
                padding=[(p, p) for p in self.padding], use_bias=False, dtype=self.dtype,
                param_dtype=self.param_dtype, name='conv')(x)
    # Norms stay float32 (house style); inference only: FID never trains Inception.
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, dtype=jnp.float32,
                     param_dtype=self.param_dtype, name='bn')(x)
    return nn.relu(x)


def avg_pool_3x3(x: jax.Array) -> jax.Array:
  """TF's 3x3 stride-1 'SAME' average pool, [B, H, W, C] -> same shape: the mean over the window's
  pixels inside the image (padding not counted; pytorch-fid's count_include_pad=False patch)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def max_pool_3x3(x: jax.Array, *, stride: int = 2) -> jax.Array:
  """3x3 max pool: stride 2 unpadded (reduction blocks, stem), or stride 1 padded with -inf
  (Mixed_7c's pool branch; PyTorch's max_pool2d pads with -inf too)."""
  padding = 'VALID' if stride == 2 else ((1, 1), (1, 1))
  return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=padding)


class _Block(nn.Module):
  """Shared by the Inception blocks: `conv(features, kernel, name, ...)` builds a BasicConv2d."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def conv(self, features, kernel, name, *, strides=(1, 1), padding=(0, 0)):
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    return BasicConv2d(features, kernel, strides=strides, padding=padding, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=name)


class InceptionA(_Block):
  """Mixed_5b..5d (FIDInceptionA): [B, H, W, Cin] -> [B, H, W, 64 + 64 + 96 + pool_features]."""
  pool_features: int = 32

  @nn.compact
  def __call__(self, x):
    c = self.conv
    b1 = c(64, 1, 'branch1x1')(x)
    b5 = c(64, 5, 'branch5x5_2', padding=(2, 2))(c(48, 1, 'branch5x5_1')(x))
    b3 = c(64, 1, 'branch3x3dbl_1')(x)
    b3 = c(96, 3, 'branch3x3dbl_2', padding=(1, 1))(b3)
    b3 = c(96, 3, 'branch3x3dbl_3', padding=(1, 1))(b3)
    bp = c(self.pool_features, 1, 'branch_pool')(avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
  """Mixed_6a (grid reduction): [B, H, W, Cin] -> [B, (H-3)//2+1, ..., 384 + 96 + Cin]."""

  @nn.compact
  def __call__(self, x):
    c = self.conv
    b3 = c(384, 3, 'branch3x3', strides=(2, 2))(x)
    bd = c(64, 1, 'branch3x3dbl_1')(x)
    bd = c(96, 3, 'branch3x3dbl_2', padding=(1, 1))(bd)
    bd = c(96, 3, 'branch3x3dbl_3', strides=(2, 2))(bd)
    return jnp.concatenate([b3, bd, max_pool_3x3(x)], axis=-1)


class InceptionC(_Block):
  """Mixed_6b..6e (FIDInceptionC; factorised 7x7): [B, H, W, Cin] -> [B, H, W, 4 * 192]."""
  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x):
    c, c7 = self.conv, self.channels_7x7
    row, col = dict(padding=(0, 3)), dict(padding=(3, 0))  # (1, 7) and (7, 1) kernels
    b1 = c(192, 1, 'branch1x1')(x)
    b7 = c(c7, 1, 'branch7x7_1')(x)
    b7 = c(c7, (1, 7), 'branch7x7_2', **row)(b7)
    b7 = c(192, (7, 1), 'branch7x7_3', **col)(b7)
    bd = c(c7, 1, 'branch7x7dbl_1')(x)
    bd = c(c7, (7, 1), 'branch7x7dbl_2', **col)(bd)
    bd = c(c7, (1, 7), 'branch7x7dbl_3', **row)(bd)
    bd = c(c7, (7, 1), 'branch7x7dbl_4', **col)(bd)
    bd = c(192, (1, 7), 'branch7x7dbl_5', **row)(bd)
    bp = c(192, 1, 'branch_pool')(avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
  """Mixed_7a (grid reduction): [B, H, W, Cin] -> [B, (H-3)//2+1, ..., 320 + 192 + Cin]."""

  @nn.compact
  def __call__(self, x):
    c = self.conv
    b3 = c(320, 3, 'branch3x3_2', strides=(2, 2))(c(192, 1, 'branch3x3_1')(x))
    b7 = c(192, 1, 'branch7x7x3_1')(x)
    b7 = c(192, (1, 7), 'branch7x7x3_2', padding=(0, 3))(b7)
    b7 = c(192, (7, 1), 'branch7x7x3_3', padding=(3, 0))(b7)
    b7 = c(192, 3, 'branch7x7x3_4', strides=(2, 2))(b7)
    return jnp.concatenate([b3, b7, max_pool_3x3(x)], axis=-1)


class InceptionE(_Block):
  """Mixed_7b (FIDInceptionE_1, pool='avg') and Mixed_7c (FIDInceptionE_2, pool='max'; the 2015
  graph's max pool, kept for comparable FIDs): [B, H, W, Cin] -> [B, H, W, 2048]."""
  pool: str = 'avg'

  @nn.compact
  def __call__(self, x):
    if self.pool not in ('avg', 'max'):
      raise ValueError(f"pool={self.pool!r}; allowed values: ('avg', 'max').")
    c = self.conv
    row, col = dict(padding=(0, 1)), dict(padding=(1, 0))  # (1, 3) and (3, 1) kernels
    b1 = c(320, 1, 'branch1x1')(x)
    b3 = c(384, 1, 'branch3x3_1')(x)
    b3 = jnp.concatenate([c(384, (1, 3), 'branch3x3_2a', **row)(b3),
                          c(384, (3, 1), 'branch3x3_2b', **col)(b3)], axis=-1)
    bd = c(448, 1, 'branch3x3dbl_1')(x)
    bd = c(384, 3, 'branch3x3dbl_2', padding=(1, 1))(bd)
    bd = jnp.concatenate([c(384, (1, 3), 'branch3x3dbl_3a', **row)(bd),
                          c(384, (3, 1), 'branch3x3dbl_3b', **col)(bd)], axis=-1)
    pooled = avg_pool_3x3(x) if self.pool == 'avg' else max_pool_3x3(x, stride=1)
    bp = c(192, 1, 'branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """FID's Inception-v3: images [B, H, W, 3] in [-1, 1] (299x299 for FID) ->
  {'pool': [B, 2048], 'logits': [B, 1008] (fc with bias), 'logits_unbiased': [B, 1008] (IS's)}."""
  num_classes: int = NUM_CLASSES
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    B, H, W, C = x.shape
    assert C == 3, x.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    conv = lambda features, kernel, name, **k: BasicConv2d(features, (kernel, kernel), name=name,
                                                           **k, **kw)
    x = conv(32, 3, 'Conv2d_1a_3x3', strides=(2, 2))(x)
    x = conv(32, 3, 'Conv2d_2a_3x3')(x)
    x = conv(64, 3, 'Conv2d_2b_3x3', padding=(1, 1))(x)
    x = max_pool_3x3(x)
    x = conv(80, 1, 'Conv2d_3b_1x1')(x)
    x = conv(192, 3, 'Conv2d_4a_3x3')(x)
    x = max_pool_3x3(x)
    for name, pool_features in (('Mixed_5b', 32), ('Mixed_5c', 64), ('Mixed_5d', 64)):
      x = InceptionA(pool_features=pool_features, name=name, **kw)(x)
    x = InceptionB(name='Mixed_6a', **kw)(x)
    for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160), ('Mixed_6e', 192)):
      x = InceptionC(channels_7x7=c7, name=name, **kw)(x)
    x = InceptionD(name='Mixed_7a', **kw)(x)
    x = InceptionE(pool='avg', name='Mixed_7b', **kw)(x)
    x = InceptionE(pool='max', name='Mixed_7c', **kw)(x)
    assert x.shape[-1] == FEATURE_DIM, x.shape
    pool = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # AdaptiveAvgPool2d(1); dropout: identity
    fc = nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=self.param_dtype, name='fc')
    logits = fc(pool)
    # IS reads the logits without the bias (module docstring: the original TF code's MatMul).
    unbiased = pool @ fc.variables['params']['kernel'].astype(jnp.float32)
    return {'pool': pool, 'logits': logits, 'logits_unbiased': unbiased}


def _half_pixel_bilinear_axis(x: jax.Array, size: int, axis: int) -> jax.Array:
  """PyTorch's F.interpolate(mode='bilinear', align_corners=False) along one axis: output i reads
  input position (i + 0.5) * n / size - 0.5, clamped below at 0, linearly between its two
  neighbours (the last clamped); no antialiasing when shrinking."""
  n = x.shape[axis]
  src = np.maximum((np.arange(size) + 0.5) * (n / size) - 0.5, 0.0)
  lo = np.floor(src).astype(np.int32)
  hi = np.minimum(lo + 1, n - 1)
  shape = [1] * x.ndim
  shape[axis] = size
  frac = jnp.asarray((src - lo).astype(np.float32)).reshape(shape)
  return jnp.take(x, lo, axis=axis) * (1 - frac) + jnp.take(x, hi, axis=axis) * frac


def preprocess(images: jax.Array, *, resolution: int = RESOLUTION) -> jax.Array:
  """uint8 (or float in [0, 255]) images [B, H, W, 3] -> float32 [B, resolution, resolution, 3]
  in [-1, 1], resized as pytorch-fid does (half-pixel bilinear)."""
  x = jnp.asarray(images, jnp.float32) / 255.0
  x = _half_pixel_bilinear_axis(x, resolution, axis=1)
  x = _half_pixel_bilinear_axis(x, resolution, axis=2)
  return 2.0 * x - 1.0


def make_feature_fn(variables: Any, *, resolution: int = RESOLUTION):
  """Returns features(images uint8 [B, H, W, 3]) -> {'pool': [B, 2048], 'logits': [B, 1008],
  'logits_unbiased': [B, 1008]}, float64 NumPy (jitted; one compilation per batch shape), of
  `variables` ({'params', 'batch_stats'})."""
  model = InceptionV3()

  # The weights are an argument, not constants folded into the compiled program.
  @jax.jit
  def outputs(variables, images):
    return model.apply(variables, preprocess(images, resolution=resolution))

  return lambda images: {k: np.asarray(v, np.float64)
                         for k, v in outputs(variables, images).items()}


def frame_indices(num_frames: int, frames_per_video: int) -> np.ndarray:
  """The frames a video of `num_frames` contributes: `frames_per_video` evenly spaced from the
  first to the last (rounded; 1: the first), or every frame when frames_per_video is 0."""
  if frames_per_video == 0:
    return np.arange(num_frames)
  if not 0 < frames_per_video <= num_frames:
    raise ValueError(f'frames_per_video={frames_per_video} must lie in [0, {num_frames}].')
  return np.round(np.linspace(0, num_frames - 1, frames_per_video)).astype(np.int64)


def video_frames(videos: np.ndarray, frames_per_video: int) -> np.ndarray:
  """videos [N, T, H, W, 3] -> their frames [N * F, H, W, 3] (`frame_indices`), video-major: the
  F frames of video 0, then of video 1, ..."""
  N, T, H, W, C = videos.shape
  return videos[:, frame_indices(T, frames_per_video)].reshape(-1, H, W, C)


def inception_score(logits: np.ndarray, *, splits: int = 10) -> tuple[float, float]:
  """(mean, std) over `splits` contiguous splits of exp(mean_x KL(p(y|x) || p(y))) (Salimans et al.
  2016, sec. 4; openai/improved-gan's split and ddof-0 std), p(y|x) = softmax(logits [N, C])
  in float64, p(y) its mean over the split. 0 log 0 counts as 0 (a class no row predicts)."""
  x = np.asarray(logits, np.float64)
  N = x.shape[0]
  if x.ndim != 2 or not 0 < splits <= N:
    raise ValueError(f'logits must be [N, C] with N >= splits={splits}, got shape {x.shape}.')
  log_p = special.log_softmax(x, axis=1)
  p = np.exp(log_p)
  scores = []
  for i in range(splits):
    rows = slice(i * N // splits, (i + 1) * N // splits)
    part = p[rows]
    marginal = part.mean(axis=0, keepdims=True)
    kl = np.sum(np.where(part > 0, part * log_p[rows], 0.0) - special.xlogy(part, marginal), axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))

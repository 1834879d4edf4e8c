"""C3D (Tran et al. 2015, "Learning Spatiotemporal Features with 3D Convolutional Networks") in
Flax Linen, for the FID and Inception Score of generated videos on UCF-101 as TGAN and TGANv2
compute them (Saito et al. 2017, 2020), the protocol of Ho et al. 2022, Table 1.

The network ("C3D v1.0", Caffe's `conv3d_deepnetA`), on clips [B, 16, 112, 112, 3]; every
convolution 3x3x3, stride 1, zero padding 1, then ReLU; pools are max pools with stride = window:

    conv1a 64   pool1 1x2x2   conv2a 128   pool2 2x2x2   conv3a, conv3b 256   pool3 2x2x2
    conv4a, conv4b 512   pool4 2x2x2   conv5a, conv5b 512   pool5 2x2x2        -> 1x4x4x512
    flatten: `pool5` [B, 8192]   fc6 4096, ReLU   fc7 4096, ReLU   fc8 num_classes (`logits`)

Dropout (after pool5, fc6, fc7 in training) is the identity at evaluation and is left out. pool5
halves the 7x7 maps of conv5b to 4x4 in one of two ways, by checkpoint (`Protocol.pool5`):
'ceil' (Caffe's rounding up, Chainer's `max_pooling_nd(cover_all=True)`: windows from the first
row, the last holding row 6 alone) for TGANv2's UCF-101 model, or 'pad' (c3d-pytorch's
`MaxPool3d(padding=(0, 1, 1))`: one -inf row and column before and after, windows from row -1).
Pools 1 to 4 see even sizes, where both agree. The flatten is in Flax's [T, H, W, C] order; the
PyTorch and Chainer checkpoints flatten [C, T, H, W], and vdm_jax/metrics/convert_c3d.py permutes
fc6's input rows to match.

Protocols (how a checkpoint reads videos; `PROTOCOLS`, recorded in the converted .npz):

  'tgan2': the UCF-101-finetuned C3D of TGANv2's evaluation (pfnet-research/tgan2,
    tgan2/models/c3d/c3d_ucf101.py: `C3DVersion1UCF101`, weights `conv3d_deepnetA_ucf.npz`,
    Caffe's c3d_ucf101_finetune_whole_iter_20000; 101 classes), which reads videos x in [-1, 1]
    (channels RGB, [N, C, T, H, W]) as follows, and so does `preprocess` from uint8 pixels p,
    x = p / 127.5 - 1 (the generator's output scale; vdm_jax/data/pipeline.py's):
      1. `pre`: a 1x1x1 convolution with weight 128 from input channel 2 to output 0, 1 to 1, 0
         to 2, no bias: RGB -> BGR and x -> 128 x (here 128 x + 128 = p * 256 / 255);
      2. `_resize`: each frame to 112x112 by Chainer 6's `F.resize_images` (bilinear, corners
         aligned: output i reads input (H - 1) i / 111), whatever its size (64x64 here; no crop);
      3. `mean`: + (128 - mean[:, :, 8:120, 8:120]), `mean` the [3, 16, 128, 171] BGR mean clip
         of `mean2.npz` (TGANv2's release; the rows and columns 8..119, as the code indexes it,
         not the centre of the 171 columns); convert_c3d stores it, already cropped, as
         `preprocess/mean` [16, 112, 112, 3].
    So the network sees 256 p / 255 - mean, in BGR. pool5: 'ceil'.
  'c3d_pytorch': the Sports-1M C3D of DavideA/c3d-pytorch (`c3d.pickle`; 487 classes), as its
    predict.py feeds it: RGB pixels in [0, 255], no mean (unless the converter is given one),
    frames resized bilinearly with half-pixel centres (skimage's `resize`, which it uses). Its
    predict.py resizes 16:9 frames to 112x200 and crops the middle 112 columns; the square
    frames of this codebase are resized to 112x112 whole. pool5: 'pad'.

The scores, as TGANv2 computes them: FID (frechet.py) between Gaussian fits of `fc7` (after its
ReLU; `C3DVersion1UCF101.get_feature`, tgan2/evaluations/fid.py); IS (inception.inception_score)
of softmax(`logits`) (tgan2/evaluations/inception_score.py; its eps of 1e-20 on p(y|x) is left
out), in TGANv2's scripts/compute_inception_score.py one split per set of 2,048 samples, the mean
and standard deviation over 10 sets (here: eval.is_splits per repeat, over eval.num_repeats).
Clips must have 16 frames: the mean clip and the training clips have 16. Tested on random weights
only: no checkpoint has been loaded here.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

NUM_FRAMES = 16
SIZE = 112  # frames are resized to SIZE x SIZE
POOL5_SHAPE = (1, 4, 4, 512)  # [T, H, W, C] after pool5 for 16x112x112 clips
POOL5_DIM = int(np.prod(POOL5_SHAPE))  # 8192: fc6's input
FC_WIDTH = 4096
FEATURE_LAYER = 'fc7'  # FID's features (TGANv2's get_feature)
# (name, output channels, window of the max pool after it or None) of the convolutions, in order.
CONVS = (('conv1a', 64, (1, 2, 2)), ('conv2a', 128, (2, 2, 2)), ('conv3a', 256, None),
         ('conv3b', 256, (2, 2, 2)), ('conv4a', 512, None), ('conv4b', 512, (2, 2, 2)),
         ('conv5a', 512, None), ('conv5b', 512, (2, 2, 2)))
POOL5_MODES = ('ceil', 'pad')
RESIZES = ('align_corners', 'half_pixel')


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How a checkpoint's C3D reads uint8 RGB videos (module docstring)."""
  bgr: bool  # the network reads channels in BGR order
  scale: float  # pixel p -> p * scale, before the mean clip is subtracted
  resize: str  # RESIZES: bilinear with corners aligned (Chainer) or half-pixel centres (skimage)
  pool5: str  # POOL5_MODES


PROTOCOLS = {
    'tgan2': Protocol(bgr=True, scale=128 / 127.5, resize='align_corners', pool5='ceil'),
    'c3d_pytorch': Protocol(bgr=False, scale=1.0, resize='half_pixel', pool5='pad'),
}


def max_pool_3d(x: jax.Array, window: tuple[int, int, int], *, mode: str = 'ceil') -> jax.Array:
  """Max pool of [B, T, H, W, C] with stride = window. 'ceil': windows from the first element,
  the last one cut short where a size is not a multiple (Caffe, Chainer's cover_all=True); 'pad':
  one -inf before and after H and W, none on T (c3d-pytorch's pool5, padding=(0, 1, 1))."""
  if mode == 'ceil':
    padding = [(0, -n % k) for n, k in zip(x.shape[1:4], window)]
  elif mode == 'pad':
    padding = [(0, 0), (1, 1), (1, 1)]
  else:
    raise ValueError(f'mode={mode!r}; allowed values: {POOL5_MODES}.')
  return nn.max_pool(x, window, strides=window, padding=padding)  # pads with -inf


class C3D(nn.Module):
  """C3D on preprocessed clips [B, 16, 112, 112, 3] (`preprocess`) -> {'pool5': [B, 8192] (the
  flattened [T, H, W, C] maps), 'fc6', 'fc7': [B, 4096] (after ReLU), 'logits': [B, num_classes]
  (fc8)}. `widths` and `fc_width` exist for tests (narrow networks); checkpoints have the
  defaults."""
  num_classes: int = 101
  pool5: str = 'ceil'
  widths: tuple[int, ...] = tuple(w for _, w, _ in CONVS)
  fc_width: int = FC_WIDTH
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    B, T, H, W, C = x.shape
    assert (T, H, W, C) == (NUM_FRAMES, SIZE, SIZE, 3), x.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for (name, _, window), width in zip(CONVS, self.widths, strict=True):
      x = nn.relu(nn.Conv(width, (3, 3, 3), padding=[(1, 1)] * 3, name=name, **kw)(x))
      if window is not None:  # pool1 keeps every frame; pool5 as the checkpoint's
        x = max_pool_3d(x, window, mode=self.pool5 if name == 'conv5b' else 'ceil')
    assert x.shape[1:] == (*POOL5_SHAPE[:3], self.widths[-1]), x.shape
    pool5 = x.reshape(B, -1).astype(jnp.float32)
    dense = lambda features, name: nn.Dense(features, name=name, **kw)
    fc6 = nn.relu(dense(self.fc_width, 'fc6')(pool5))
    fc7 = nn.relu(dense(self.fc_width, 'fc7')(fc6))
    logits = dense(self.num_classes, 'fc8')(fc7)
    return {'pool5': pool5, 'fc6': fc6.astype(jnp.float32), 'fc7': fc7.astype(jnp.float32),
            'logits': logits.astype(jnp.float32)}


def resize_matrix(n: int, size: int, *, mode: str) -> np.ndarray:
  """[size, n]: the bilinear resize of an axis of n samples to `size` as a linear map. Output i
  reads input position i (n - 1) / (size - 1) ('align_corners', Chainer's resize_images) or
  (i + 0.5) n / size - 0.5 clamped to [0, n - 1] ('half_pixel', skimage's resize when enlarging),
  between its two neighbours."""
  if mode == 'align_corners':
    src = np.linspace(0.0, n - 1, size)
  elif mode == 'half_pixel':
    src = np.clip((np.arange(size) + 0.5) * (n / size) - 0.5, 0.0, n - 1)
  else:
    raise ValueError(f'resize={mode!r}; allowed values: {RESIZES}.')
  left = np.floor(src).astype(np.int64)
  weights = np.zeros((size, n))
  np.add.at(weights, (np.arange(size), left), 1.0 - (src - left))
  np.add.at(weights, (np.arange(size), np.minimum(left + 1, n - 1)), src - left)
  return weights.astype(np.float32)


def preprocess(videos: jax.Array, *, protocol: Protocol, mean: jax.Array) -> jax.Array:
  """uint8 RGB videos [B, 16, H, W, 3] -> float32 [B, 16, 112, 112, 3] as `protocol`'s network
  reads them: p * scale (channels reversed for BGR), frames resized to 112x112, minus `mean`
  [16, 112, 112, 3] (in the network's channel order)."""
  B, T, H, W, C = videos.shape
  if T != NUM_FRAMES or C != 3:
    raise ValueError(f'C3D reads RGB clips of {NUM_FRAMES} frames, got shape {videos.shape}.')
  x = jnp.asarray(videos, jnp.float32) * protocol.scale
  if protocol.bgr:
    x = x[..., ::-1]
  rows = resize_matrix(H, SIZE, mode=protocol.resize)
  columns = resize_matrix(W, SIZE, mode=protocol.resize)
  # Exact float32 (no bf16 / TF32 passes on accelerators): pixels up to 255 need every bit.
  x = jnp.einsum('ih,bthwc,jw->btijc', rows, x, columns, precision=jax.lax.Precision.HIGHEST)
  return x - mean


def make_feature_fn(variables: Any, *, protocol: str = 'tgan2'):
  """Returns features(videos uint8 [B, 16, H, W, 3]) -> {'fc7': [B, 4096] (FID's), 'logits':
  [B, num_classes] (IS's)}, float64 NumPy (jitted; one compilation per batch shape), of
  `variables` ({'params': ..., 'preprocess': {'mean': [16, 112, 112, 3]}}; no 'preprocess': no
  mean) read as `protocol` (a key of PROTOCOLS) says."""
  if protocol not in PROTOCOLS:
    raise ValueError(f'protocol={protocol!r}; allowed values: {tuple(PROTOCOLS)}.')
  settings = PROTOCOLS[protocol]
  params = variables['params']
  mean = variables.get('preprocess', {}).get('mean', np.zeros((NUM_FRAMES, SIZE, SIZE, 3)))
  model = C3D(num_classes=params['fc8']['bias'].shape[0], pool5=settings.pool5)

  # The weights and the mean are arguments, not constants folded into the compiled program.
  @jax.jit
  def outputs(params, mean, videos):
    out = model.apply({'params': params}, preprocess(videos, protocol=settings, mean=mean))
    return {FEATURE_LAYER: out[FEATURE_LAYER], 'logits': out['logits']}

  mean = jnp.asarray(mean, jnp.float32)
  return lambda videos: {k: np.asarray(v, np.float64)
                         for k, v in outputs(params, mean, videos).items()}

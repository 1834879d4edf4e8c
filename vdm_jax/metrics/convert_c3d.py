r"""Converts C3D weights to a .npz that vdm_jax loads (vdm_jax/metrics/c3d.py), with how the
checkpoint reads videos (its `c3d.PROTOCOLS` entry) and its mean clip.

  python -m vdm_jax.metrics.convert_c3d IN OUT.npz [--mean mean2.npz]

then point `config.eval.c3d_weights` at OUT.npz. IN is either

  * TGANv2's UCF-101 C3D, the network of the UCF-101 FID/IS protocol: `conv3d_deepnetA_ucf.npz`
    and `mean2.npz` from the release that pfnet-research/tgan2's README links
    (github.com/mitmul/tgan2/releases). A Chainer .npz, read with NumPy only; give its mean clip
    with --mean mean2.npz (required). Protocol 'tgan2', 101 classes.
  * c3d-pytorch's Sports-1M C3D (DavideA/c3d-pytorch, `c3d.pickle`, a PyTorch state dict; other
    ports with its key names, e.g. UCF-101-finetuned ones, load the same way). Needs PyTorch for
    this step only (CPU is enough). Protocol 'c3d_pytorch' (no mean unless --mean is given),
    487 classes (fc8's rows, whatever they are).

Name mapping (LAYER: conv1a, conv2a, conv3a, conv3b, conv4a, conv4b, conv5a, conv5b, fc6, fc7,
fc8; c3d-pytorch calls conv1a and conv2a `conv1` and `conv2`; a leading `module.` or Chainer
path prefix such as `predictor/` is stripped):

  LAYER/W, LAYER.weight [O, I, kt, kh, kw] -> params/LAYER/kernel [kt, kh, kw, I, O]
                                              (NCDHW cross-correlation -> Flax NDHWC)
  fc6/W, fc6.weight [4096, 8192]           -> params/fc6/kernel [8192, 4096], its rows permuted
                                              from the [C, T, H, W] order in which PyTorch and
                                              Chainer flatten pool5 to Flax's [T, H, W, C]
  fc7, fc8 W / .weight [out, in]           -> params/LAYER/kernel [in, out]
  LAYER/b, LAYER.bias                      -> params/LAYER/bias
  mean2.npz 'mean' [3, 16, 128, 171]       -> preprocess/mean [16, 112, 112, 3]: rows and columns
                                              8..119, as TGANv2's C3DVersion1UCF101 crops it, in
                                              the file's (the network's, BGR) channel order; a
                                              [3, 16, 112, 112] mean is taken whole
  (the protocol's name)                    -> protocol (a string)

The result is checked against the Flax model's variables: every one present, with its shape (any
number of classes), nothing left over.
"""

import argparse
from typing import Any, Mapping

import numpy as np

from vdm_jax.errors import UserError
from vdm_jax.metrics import c3d
from vdm_jax.metrics import convert_i3d

_PYTORCH_NAMES = {'conv1': 'conv1a', 'conv2': 'conv2a'}  # c3d-pytorch's names of Tran et al.'s
_LEAVES = {'W': 'kernel', 'weight': 'kernel', 'b': 'bias', 'bias': 'bias'}  # Chainer, PyTorch
_MEAN_SHAPE = (c3d.NUM_FRAMES, c3d.SIZE, c3d.SIZE, 3)
_CAFFE_MEAN_SHAPE = (3, c3d.NUM_FRAMES, 128, 171)  # C3D's UCF-101 mean clip, BGR
_HOW = ('run python -m vdm_jax.metrics.convert_c3d on conv3d_deepnetA_ucf.npz (with --mean '
        'mean2.npz) or c3d.pickle and point --config.eval.c3d_weights at its output')

unflatten = convert_i3d.unflatten  # The flat .npz and the nested variables, laid out as for I3D.


def expected_shapes(num_classes: int) -> dict[str, tuple[int, ...]]:
  """{'params/conv1a/kernel': shape, ...} of every variable of `c3d.C3D(num_classes)`."""
  shapes, channels = {}, 3
  for name, width, _ in c3d.CONVS:
    shapes[f'params/{name}/kernel'] = (3, 3, 3, channels, width)
    shapes[f'params/{name}/bias'] = (width,)
    channels = width
  for name, fan_in, width in (('fc6', c3d.POOL5_DIM, c3d.FC_WIDTH),
                              ('fc7', c3d.FC_WIDTH, c3d.FC_WIDTH),
                              ('fc8', c3d.FC_WIDTH, num_classes)):
    shapes[f'params/{name}/kernel'] = (fan_in, width)
    shapes[f'params/{name}/bias'] = (width,)
  return shapes


def flax_name(key: str) -> str:
  """'params/conv1a/kernel' for a Chainer ('conv1a/W', 'predictor/conv1a/W') or PyTorch
  ('conv1.weight', 'module.conv1.weight') key; ValueError for any other."""
  parts = key.removeprefix('module.').replace('.', '/').split('/')
  layer, leaf = (parts[-2], parts[-1]) if len(parts) >= 2 else ('', '')
  layer = _PYTORCH_NAMES.get(layer, layer)
  layers = [name for name, _, _ in c3d.CONVS] + ['fc6', 'fc7', 'fc8']
  if layer not in layers or leaf not in _LEAVES:
    raise ValueError(f'Not a C3D key (Chainer or c3d-pytorch): {key!r}.')
  return f'params/{layer}/{_LEAVES[leaf]}'


def fc6_kernel(weight: np.ndarray) -> np.ndarray:
  """fc6's PyTorch / Chainer weight [O, C * 16] (inputs flattened from pool5's [C, T=1, 4, 4])
  -> Flax kernel [16 * C, O] (inputs flattened from [T, H, W, C])."""
  O, D = weight.shape
  T, H, W, _ = c3d.POOL5_SHAPE
  C = D // (T * H * W)
  assert C * T * H * W == D, weight.shape
  return weight.reshape(O, C, T, H, W).transpose(2, 3, 4, 1, 0).reshape(D, O)


def rename_and_transpose(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Chainer or PyTorch C3D weights (NumPy arrays) -> flat {Flax name: float32 array}, by the
  mapping of the module docstring; no check of completeness (`convert_state_dict` does that)."""
  flat = {}
  for key, value in state_dict.items():
    name = flax_name(key)
    array = np.asarray(value, np.float32)
    if name.endswith('/kernel'):
      expected = 2 if '/fc' in name else 5
      if array.ndim != expected:
        raise ValueError(f'{key} has shape {array.shape}; a {expected}-D weight was expected.')
      if name == 'params/fc6/kernel':
        array = fc6_kernel(array)
      elif array.ndim == 5:
        array = array.transpose(2, 3, 4, 1, 0)  # [O, I, kt, kh, kw] -> [kt, kh, kw, I, O]
      else:
        array = array.T  # Linear [out, in] -> [in, out]
    if name in flat:
      raise ValueError(f'{key} names {name} again.')
    flat[name] = array
  return flat


def mismatches(flat: Mapping[str, np.ndarray]) -> str:
  """'' when the 'params/' entries of `flat` are exactly the parameters of `c3d.C3D`, with their
  shapes (fc8's classes read from it); else the problems, the first five and their count."""
  fc8 = flat.get('params/fc8/bias')
  expected = expected_shapes(fc8.shape[0] if fc8 is not None and fc8.ndim == 1 else 0)
  params = {k: v.shape for k, v in flat.items() if k.startswith('params/')}
  problems = ([f'missing {k}' for k in expected if k not in params] +
              [f'unexpected {k}' for k in params if k not in expected] +
              [f'{k} is {params[k]}, not {v}' for k, v in expected.items()
               if k in params and params[k] != v])
  return '; '.join(problems[:5]) + (f' ({len(problems)} problems)' if len(problems) > 5 else '')


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Chainer or PyTorch C3D weights -> flat {Flax name: float32 array}, checked: ValueError
  naming missing, unexpected or misshapen parameters."""
  flat = rename_and_transpose(state_dict)
  problem = mismatches(flat)
  if problem:
    raise ValueError(f'The weights do not match C3D: {problem}.')
  return flat


def mean_clip(mean: np.ndarray) -> np.ndarray:
  """mean2.npz's 'mean' (BGR [3, 16, 128, 171], or anything of that size) -> [16, 112, 112, 3],
  cropped as TGANv2 does (rows and columns 8..119); a [3, 16, 112, 112] mean is taken whole."""
  mean = np.asarray(mean, np.float32)
  if mean.size == np.prod(_CAFFE_MEAN_SHAPE):
    mean = mean.reshape(_CAFFE_MEAN_SHAPE)[:, :, 8:8 + c3d.SIZE, 8:8 + c3d.SIZE]
  if mean.shape != (3, c3d.NUM_FRAMES, c3d.SIZE, c3d.SIZE):
    raise ValueError(f'A mean clip of shape {mean.shape}; expected {_CAFFE_MEAN_SHAPE} (TGANv2\'s '
                     f'mean2.npz) or (3, {c3d.NUM_FRAMES}, {c3d.SIZE}, {c3d.SIZE}).')
  return mean.transpose(1, 2, 3, 0)


def convert_checkpoint(path: str, *, mean_path: str | None = None) -> dict[str, np.ndarray]:
  """The .npz to write, of the checkpoint at `path` (a Chainer .npz: TGANv2's; else a PyTorch
  state dict, read with PyTorch) and the mean clip in `mean_path` (mean2.npz's 'mean')."""
  if path.endswith('.npz'):
    if mean_path is None:
      raise UserError(f'{path} is TGANv2\'s C3D, which subtracts the mean clip of mean2.npz: give '
                      'it with --mean mean2.npz (the same release).')
    with np.load(path) as data:
      state_dict, protocol = {k: data[k] for k in data.files}, 'tgan2'
  else:
    import torch  # pylint: disable=g-import-not-at-top  # Only this step needs PyTorch.
    loaded = torch.load(path, map_location='cpu', weights_only=True)
    state_dict, protocol = {k: v.numpy() for k, v in loaded.items()}, 'c3d_pytorch'
  flat = convert_state_dict(state_dict)
  if mean_path is None:
    flat['preprocess/mean'] = np.zeros(_MEAN_SHAPE, np.float32)
  else:
    with np.load(mean_path) as data:
      flat['preprocess/mean'] = mean_clip(data['mean'])
  flat['protocol'] = np.array(protocol)
  return flat


def load_variables(path: str) -> tuple[dict[str, Any], str]:
  """The converted .npz -> ({'params': ..., 'preprocess': {'mean': ...}}, protocol name), for
  `c3d.make_feature_fn`; UserError (one line: what is wrong, how to fix it) unless it holds every
  parameter of C3D with its shape, the mean clip and a known protocol."""
  try:
    with np.load(path) as data:
      flat = {k: data[k] for k in data.files}
  except (OSError, ValueError) as e:
    raise UserError(f'{path} is not a readable .npz ({e}): {_HOW}.') from e
  protocol = str(flat.pop('protocol', ''))
  mean = flat.pop('preprocess/mean', None)
  problem = mismatches(flat)
  if not problem and (mean is None or mean.shape != _MEAN_SHAPE):
    problem = f'preprocess/mean is {None if mean is None else mean.shape}, not {_MEAN_SHAPE}'
  if not problem and protocol not in c3d.PROTOCOLS:
    problem = f'protocol {protocol!r} is none of {tuple(c3d.PROTOCOLS)}'
  if problem:
    raise UserError(f'{path} does not hold converted C3D weights ({problem}): {_HOW}.')
  return unflatten({**flat, 'preprocess/mean': mean}), protocol


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('input', help="conv3d_deepnetA_ucf.npz (TGANv2's) or c3d.pickle "
                                    '(c3d-pytorch\'s).')
  parser.add_argument('output', help='Where to write the .npz.')
  parser.add_argument('--mean', default=None,
                      help="mean2.npz (TGANv2's mean clip); required for a Chainer .npz.")
  args = parser.parse_args(argv)
  flat = convert_checkpoint(args.input, mean_path=args.mean)
  np.savez(args.output, **flat)
  numbers = sum(v.size for k, v in flat.items() if k.startswith('params/'))
  print(f'Wrote {len(flat) - 2} parameter arrays ({numbers:,} numbers), the mean clip and '
        f'protocol {str(flat["protocol"])!r} to {args.output}.')


if __name__ == '__main__':
  main()

r"""Converts FID's Inception-v3 weights from pytorch-fid's checkpoint to a .npz that vdm_jax loads
without PyTorch.

Source: mseitzer/pytorch-fid, release `fid_weights`, `pt_inception-2015-12-05-6726825d.pth` (a
state dict of torchvision's `Inception3(num_classes=1008, aux_logits=False)` patched by
`fid_inception_v3`, ported from TF's inception-2015-12-05 graph: the network FID and IS use).
Download it yourself, install PyTorch (CPU is enough; only needed for this step) and run:

  python -m vdm_jax.metrics.convert_inception --input pt_inception-2015-12-05-6726825d.pth \
      --output inception.npz

then point `config.eval.inception_weights` at the .npz.

Name mapping (PyTorch key -> Flax variable; UNIT is a stem convolution such as `Conv2d_1a_3x3`,
or a branch of an Inception block such as `Mixed_5b.branch5x5_1` (-> `Mixed_5b/branch5x5_1`)):

  UNIT.conv.weight [O, I, kh, kw]    -> params/UNIT/conv/kernel [kh, kw, I, O]
                                        (PyTorch NCHW cross-correlation -> Flax NHWC)
  UNIT.bn.weight, UNIT.bn.bias       -> params/UNIT/bn/scale, params/UNIT/bn/bias
  UNIT.bn.running_mean, .running_var -> batch_stats/UNIT/bn/mean, batch_stats/UNIT/bn/var
  UNIT.bn.num_batches_tracked        -> dropped (training bookkeeping; absent in older saves)
  fc.weight [1008, 2048], fc.bias    -> params/fc/kernel [2048, 1008], params/fc/bias [1008]

A leading `module.` (state dicts saved from `nn.DataParallel`) is stripped. Padding needs no
conversion: torchvision's symmetric zero padding is given to Flax's Conv explicitly
(vdm_jax/metrics/inception.py). The result is checked against the Flax model's variables: every
one present, with its shape, nothing left over (torchvision's own ImageNet Inception-v3, with its
AuxLogits and 1000-way fc, is refused).
"""

import argparse
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax.metrics import convert_i3d
from vdm_jax.metrics import inception

# (layer, PyTorch leaf) -> (collection, Flax leaf), or None: dropped (training bookkeeping).
_LEAVES = {
    ('conv', 'weight'): ('params', 'kernel'),
    ('bn', 'weight'): ('params', 'scale'), ('bn', 'bias'): ('params', 'bias'),
    ('bn', 'running_mean'): ('batch_stats', 'mean'), ('bn', 'running_var'): ('batch_stats', 'var'),
    ('bn', 'num_batches_tracked'): None,
    ('fc', 'weight'): ('params', 'kernel'), ('fc', 'bias'): ('params', 'bias'),
}
# PyTorch weight layout -> Flax kernel layout, by layer.
_TRANSPOSES = {'conv': (2, 3, 1, 0),  # Conv2d [O, I, kh, kw] -> [kh, kw, I, O]
               'fc': (1, 0)}  # Linear [out, in] -> [in, out]

# The flat .npz and the nested variables are laid out as for I3D.
unflatten = convert_i3d.unflatten
save = convert_i3d.save


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """{'params/UNIT/conv/kernel': shape, ...} of every variable of `inception.InceptionV3()` (no
  compute)."""
  return dict(_expected_shapes())


@functools.cache
def _expected_shapes() -> dict[str, tuple[int, ...]]:
  variables = jax.eval_shape(inception.InceptionV3().init, jax.random.PRNGKey(0),
                             jnp.zeros((1, inception.RESOLUTION, inception.RESOLUTION, 3)))
  return {'/'.join(k.key for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(variables)}


def flax_name(torch_key: str) -> str | None:
  """The flat Flax name ('params/Mixed_5b/branch1x1/conv/kernel') of a PyTorch key, or None for a
  key that carries nothing at inference (num_batches_tracked). Raises ValueError otherwise."""
  parts = torch_key.removeprefix('module.').split('.')
  *unit, layer, leaf = parts if len(parts) >= 2 else ('', '')  # ('', ''): no such layer
  # fc is the only layer outside a unit; every conv and bn is inside one.
  if (layer, leaf) not in _LEAVES or bool(unit) == (layer == 'fc'):
    raise ValueError(f'Not a pytorch-fid Inception-v3 key: {torch_key!r}.')
  target = _LEAVES[layer, leaf]
  return None if target is None else '/'.join([target[0], *unit, layer, target[1]])


def rename_and_transpose(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """PyTorch state dict (NumPy arrays) -> flat {Flax name: float32 array}, by the mapping of the
  module docstring; no check of completeness (`convert_state_dict` does that)."""
  flat = {}
  for key, value in state_dict.items():
    name = flax_name(key)
    if name is not None:
      array = np.asarray(value, np.float32)
      axes = _TRANSPOSES[name.split('/')[-2]] if name.endswith('/kernel') else None
      if axes is not None and array.ndim != len(axes):
        raise ValueError(f'{key} has shape {array.shape}; a {len(axes)}-D weight was expected.')
      flat[name] = array if axes is None else array.transpose(axes)
  return flat


def mismatches(flat: Mapping[str, np.ndarray]) -> str:
  """'' when `flat` holds exactly the variables of `expected_shapes()`, with their shapes; else
  what is missing, unexpected or misshapen (the first five of each, and counts)."""
  expected = expected_shapes()
  missing = sorted(set(expected) - set(flat))
  unexpected = sorted(set(flat) - set(expected))
  if missing or unexpected:
    return (f'missing {missing[:5]} ({len(missing)} in all), unexpected {unexpected[:5]} '
            f'({len(unexpected)})')
  wrong = [f'{k}: {flat[k].shape} != {v}' for k, v in expected.items() if flat[k].shape != v]
  return f'shapes differ: {wrong[:5]} ({len(wrong)} in all)' if wrong else ''


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """PyTorch state dict (NumPy arrays) -> flat {Flax name: float32 array}, checked against
  `expected_shapes()`: raises ValueError naming missing, unexpected or misshapen variables."""
  flat = rename_and_transpose(state_dict)
  problem = mismatches(flat)
  if problem:
    raise ValueError(f'The state dict does not match pytorch-fid\'s Inception-v3: {problem}.')
  return flat


def load_variables(path: str) -> dict[str, Any]:
  """The converted .npz -> {'params': ..., 'batch_stats': ...} for `inception.InceptionV3().apply`
  (checked against the model's variables)."""
  with np.load(path) as data:
    flat = {k: data[k] for k in data.files}
  if mismatches(flat):
    raise ValueError(f'{path} does not hold converted Inception-v3 weights: run python -m '
                     'vdm_jax.metrics.convert_inception on pt_inception-2015-12-05-6726825d.pth.')
  return unflatten(flat)


def convert_checkpoint(path: str) -> dict[str, np.ndarray]:
  """pytorch-fid's .pth at `path` -> flat {Flax name: float32 array}, checked (needs PyTorch)."""
  import torch  # pylint: disable=g-import-not-at-top  # Only this step needs PyTorch.
  state_dict = torch.load(path, map_location='cpu', weights_only=True)
  return convert_state_dict({k: v.numpy() for k, v in state_dict.items()})


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--input', required=True,
                      help='pytorch-fid state dict (pt_inception-2015-12-05-6726825d.pth).')
  parser.add_argument('--output', required=True, help='Where to write the .npz.')
  args = parser.parse_args(argv)
  flat = convert_checkpoint(args.input)
  save(args.output, flat)
  numbers = sum(v.size for v in flat.values())
  print(f'Wrote {len(flat)} arrays ({numbers:,} numbers) to {args.output}.')


if __name__ == '__main__':
  main()

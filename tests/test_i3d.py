"""I3D in Flax (vdm_jax/metrics/i3d.py) and its weight converter (convert_i3d.py), on random
weights: PyTorch-port semantics of one unit, the converter's round trip, the forward pass."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from flax import linen as nn

from vdm_jax.metrics import convert_i3d
from vdm_jax.metrics import i3d


def _torch_same_pad(size, kernel, stride):
  """pytorch-i3d's Unit3D.compute_pad: total padding of one axis, the smaller half first."""
  total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
  return total // 2, total - total // 2


def _torch_unit3d(x, state, *, kernel, stride):
  """NumPy reference of pytorch-i3d's Unit3D forward on NCDHW input: F.pad (zeros) ->
  Conv3d (cross-correlation, weight [O, I, kt, kh, kw]) -> BatchNorm3d(eps=1e-3) -> ReLU."""
  pads = [_torch_same_pad(n, k, s) for n, k, s in zip(x.shape[2:], kernel, stride)]
  xp = np.pad(x, [(0, 0), (0, 0), *pads])
  w = state['u.conv3d.weight']
  out_shape = [(n - k) // s + 1 for n, k, s in zip(xp.shape[2:], kernel, stride)]
  y = np.zeros((x.shape[0], w.shape[0], *out_shape))
  for dt in range(kernel[0]):
    for dh in range(kernel[1]):
      for dw in range(kernel[2]):
        window = xp[:, :, dt::stride[0], dh::stride[1], dw::stride[2]][
            :, :, :out_shape[0], :out_shape[1], :out_shape[2]]
        y += np.einsum('bithw,oi->bothw', window, w[:, :, dt, dh, dw])
  c = lambda v: v[None, :, None, None, None]
  y = ((y - c(state['u.bn.running_mean'])) / np.sqrt(c(state['u.bn.running_var']) + 1e-3)
       * c(state['u.bn.weight']) + c(state['u.bn.bias']))
  return np.maximum(y, 0)


def test_unit3d_matches_the_pytorch_port():
  """Kernel layout (the transpose), TF-SAME padding on odd and even sizes with stride 2, BN eps."""
  rng = np.random.default_rng(0)
  kernel, stride = (3, 2, 3), (2, 2, 1)
  state = {'u.conv3d.weight': rng.standard_normal((4, 2, *kernel)).astype(np.float32),
           'u.bn.weight': rng.uniform(0.5, 2, 4), 'u.bn.bias': rng.standard_normal(4),
           'u.bn.running_mean': rng.standard_normal(4), 'u.bn.running_var': rng.uniform(0.5, 2, 4),
           'u.bn.num_batches_tracked': np.array(7)}
  x = rng.standard_normal((2, 2, 5, 6, 7)).astype(np.float32)  # [B, C, T, H, W]
  expected = _torch_unit3d(x, state, kernel=kernel, stride=stride)
  tree = convert_i3d.unflatten(convert_i3d.rename_and_transpose(state))
  got = i3d.Unit3D(4, kernel, strides=stride).apply(
      {'params': tree['params']['u'], 'batch_stats': tree['batch_stats']['u']},
      jnp.asarray(x.transpose(0, 2, 3, 4, 1)))
  np.testing.assert_allclose(np.asarray(got).transpose(0, 4, 1, 2, 3), expected, rtol=1e-4,
                             atol=1e-4)
  # Max pools: the port pads with zeros, TF (and here) with -inf; equal on ReLU outputs (>= 0).
  relu = np.maximum(x.transpose(0, 2, 3, 4, 1), 0)
  pads = [(0, 0), *[_torch_same_pad(n, 3, 2) for n in relu.shape[1:4]], (0, 0)]
  np.testing.assert_array_equal(
      nn.max_pool(jnp.asarray(relu), (3, 3, 3), strides=(2, 2, 2), padding='SAME'),
      nn.max_pool(jnp.asarray(np.pad(relu, pads)), (3, 3, 3), strides=(2, 2, 2), padding='VALID'))


def _synthetic_state_dict(rng):
  """Random arrays under every PyTorch name and shape of InceptionI3d (built from the Flax
  variables by the inverse of the documented mapping), with the keys the converter must drop."""
  inverse = {'kernel': 'weight', 'bias': 'bias', 'scale': 'weight', 'mean': 'running_mean',
             'var': 'running_var'}
  state = {}
  for name, shape in convert_i3d.expected_shapes().items():
    _, *unit, layer, leaf = name.split('/')
    if leaf == 'kernel':
      shape = (shape[4], shape[3], *shape[:3])  # [kt, kh, kw, I, O] -> [O, I, kt, kh, kw]
    # Distinct values at every position (and per variable), so a misplaced axis cannot pass.
    value = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + rng.uniform(0, 1e6)
    state['module.' + '.'.join([*unit, layer, inverse[leaf]])] = value
    if layer == 'bn' and leaf == 'var':
      state['.'.join([*unit, 'bn', 'num_batches_tracked'])] = np.array(100)
  return state


def test_converter_round_trip(tmp_path):
  rng = np.random.default_rng(1)
  state = _synthetic_state_dict(rng)
  path = str(tmp_path / 'i3d.npz')
  convert_i3d.save(path, convert_i3d.convert_state_dict(state))
  variables = convert_i3d.load_variables(path)
  flat = {'/'.join(k.key for k in path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(variables)}
  for key, value in state.items():  # every PyTorch array, found where the mapping says
    name = convert_i3d.flax_name(key)
    if name is not None:
      expected = value.transpose(2, 3, 4, 1, 0) if value.ndim == 5 else value
      np.testing.assert_array_equal(flat.pop(name), expected, err_msg=key)
  assert not flat  # and nothing else
  kernel = variables['params']['Mixed_4c']['b1b']['conv3d']['kernel']
  assert kernel.shape == (3, 3, 3, 112, 224)
  np.testing.assert_array_equal(
      kernel, state['module.Mixed_4c.b1b.conv3d.weight'].transpose(2, 3, 4, 1, 0))
  np.testing.assert_array_equal(variables['params']['logits']['conv3d']['bias'],
                                state['module.logits.conv3d.bias'])
  np.testing.assert_array_equal(variables['params']['Conv3d_1a_7x7']['bn']['scale'],
                                state['module.Conv3d_1a_7x7.bn.weight'])
  np.testing.assert_array_equal(variables['batch_stats']['Mixed_5c']['b3b']['bn']['var'],
                                state['module.Mixed_5c.b3b.bn.running_var'])
  # 287 variables, 12.7M numbers: every one placed (the converter checks against the model).
  assert sum(v.size for v in np.load(path).values()) == 12_711_824
  with pytest.raises(ValueError, match='missing'):
    convert_i3d.convert_state_dict({k: v for k, v in state.items() if 'Mixed_4d.b0' not in k})
  with pytest.raises(ValueError, match='Not a pytorch-i3d'):
    convert_i3d.convert_state_dict({**state, 'fc.weight': np.zeros((400, 1024))})
  wrong = dict(state)
  wrong['module.logits.conv3d.bias'] = np.zeros(600, np.float32)  # a 600-class head
  with pytest.raises(ValueError, match='Shapes do not match'):
    convert_i3d.convert_state_dict(wrong)


def test_forward_pass_keeps_videos_apart():
  rng = np.random.default_rng(2)
  # He-initialised kernels, identity batch norms: activations keep their scale through the net.
  flat = {name: (rng.normal(0, np.sqrt(2 / np.prod(shape[:4])), shape) if name.endswith('kernel')
                 else np.ones(shape) if name.endswith(('var', 'scale')) else np.zeros(shape))
          for name, shape in convert_i3d.expected_shapes().items()}
  features = i3d.make_feature_fn(convert_i3d.unflatten(flat), resolution=32)
  a, b = rng.integers(0, 256, (2, 8, 16, 16, 3), dtype=np.uint8)  # resized to 32x32
  ab, aa = features(np.stack([a, b])), features(np.stack([a, a]))
  assert ab.shape == (2, i3d.NUM_CLASSES) and np.all(np.isfinite(ab))
  np.testing.assert_allclose(ab[0], aa[0], rtol=1e-5, atol=1e-6)
  assert np.abs(ab[1] - ab[0]).max() > 1e-3


def test_preprocess_resizes_like_tf1_bilinear():
  # TF1 resize_bilinear (align_corners=False) of [0, 255] to 4: reads positions 0, .5, 1, 1.5
  # (the last clamped to 1): [0, 127.5, 255, 255], then scaled to [-1, 1].
  video = np.zeros((1, 1, 2, 2, 3), np.uint8)
  video[..., 1, :] = 255  # columns 0 and 255
  out = np.asarray(i3d.preprocess(video, resolution=4))
  assert out.shape == (1, 1, 4, 4, 3)
  np.testing.assert_allclose(out[0, 0, :, :, 0], np.tile([-1, 0, 1, 1], (4, 1)), atol=1e-6)

"""C3D for the UCF-101 FID and IS (vdm_jax/metrics/c3d.py), its weight converter (convert_c3d.py)
and the video-level metrics in evaluation, on random weights only (no checkpoint here): a narrow
C3D against a NumPy model of the PyTorch / Chainer network, fc6's flatten order, the full-size
forward pass, the converter's command line and checks, the preprocessing, closed-form IS and FID,
and the evaluator with a stand-in network."""

import itertools
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import feature_classifier
from experiments import ucf101
from vdm_jax import config_validation
from vdm_jax import evaluate
from vdm_jax.errors import UserError
from vdm_jax.metrics import c3d
from vdm_jax.metrics import convert_c3d
from vdm_jax.metrics import frechet
from vdm_jax.metrics import inception
from tests import test_inception

_LAYERS = [name for name, _, _ in c3d.CONVS] + ['fc6', 'fc7', 'fc8']
_TORCH_NAMES = {'conv1a': 'conv1', 'conv2a': 'conv2'}  # c3d-pytorch's names


# ------------------------------------------------------------------ NumPy model of the reference


def _np_conv3d(x, w, b):
  """PyTorch's Conv3d (cross-correlation, zero padding 1): x [B, I, T, H, W], w [O, I, 3, 3, 3]."""
  B, _, T, H, W = x.shape
  xp = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1), (1, 1)])
  y = np.zeros((B, w.shape[0], T, H, W)) + b[None, :, None, None, None]
  for dt, dh, dw in itertools.product(range(3), repeat=3):
    window = xp[:, :, dt:dt + T, dh:dh + H, dw:dw + W]
    y += np.einsum('bithw,oi->bothw', window, w[:, :, dt, dh, dw], optimize=True)
  return y


def _np_max_pool(x, window, *, pad=(0, 0, 0), ceil=False):
  """Max pool of x [B, C, T, H, W], stride = window: PyTorch's MaxPool3d (-inf `pad` on both
  sides of each axis, floor rounding) or, ceil=True, Chainer's cover_all=True (the last window cut
  short)."""
  pads = [(p, p + ((-(n + 2 * p)) % k if ceil else 0))
          for n, k, p in zip(x.shape[2:], window, pad)]
  x = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=-np.inf)
  out = [n // k for n, k in zip(x.shape[2:], window)]
  x = x[:, :, :out[0] * window[0], :out[1] * window[1], :out[2] * window[2]]
  B, C = x.shape[:2]
  x = x.reshape(B, C, out[0], window[0], out[1], window[1], out[2], window[2])
  return x.max(axis=(3, 5, 7))


def _np_c3d(x, state, *, pool5):
  """The network of c3d-pytorch's C3D_model.py (pool5='pad') or TGANv2's C3DVersion1UCF101
  (pool5='ceil') on x [B, 3, 16, 112, 112], weights in their [O, I, ...] layout by Flax layer name;
  fc6 reads pool5 flattened in [C, T, H, W] order. -> (pool5 flat, fc7, fc8)."""
  relu = lambda v: np.maximum(v, 0)
  for name, _, window in c3d.CONVS:
    x = relu(_np_conv3d(x, state[f'{name}.weight'], state[f'{name}.bias']))
    if window is None:
      continue
    if name == 'conv5b' and pool5 == 'pad':
      x = _np_max_pool(x, window, pad=(0, 1, 1))
    else:
      x = _np_max_pool(x, window, ceil=True)
  flat = x.reshape(len(x), -1)  # PyTorch's view(-1, 8192), Chainer's Linear: [C, T, H, W] order
  fc6 = relu(flat @ state['fc6.weight'].T + state['fc6.bias'])
  fc7 = relu(fc6 @ state['fc7.weight'].T + state['fc7.bias'])
  return flat, fc7, fc7 @ state['fc8.weight'].T + state['fc8.bias']


def _random_state(rng, widths, fc_width, num_classes):
  """He-initialised weights in the checkpoints' layout ({'conv1a.weight': [O, I, 3, 3, 3], ...,
  'fc6.weight': [fc_width, 16 * widths[-1]]}) with small random biases."""
  normal = lambda std, *shape: rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
  state, channels = {}, 3
  for (name, _, _), width in zip(c3d.CONVS, widths):
    state[f'{name}.weight'] = normal(np.sqrt(2 / (27 * channels)), width, channels, 3, 3, 3)
    state[f'{name}.bias'] = normal(0.1, width)
    channels = width
  for name, fan_in, out in (('fc6', 16 * channels, fc_width), ('fc7', fc_width, fc_width),
                            ('fc8', fc_width, num_classes)):
    state[f'{name}.weight'] = normal(np.sqrt(2 / fan_in), out, fan_in)
    state[f'{name}.bias'] = normal(0.1, out)
  return state


def _checkpoint_keys(state, style):
  """state with the keys of a c3d-pytorch state dict ('conv1.weight', 'module.' prefixed) or of
  TGANv2's Chainer .npz ('conv1a/W')."""
  if style == 'pytorch':
    rename = lambda layer, leaf: f'module.{_TORCH_NAMES.get(layer, layer)}.{leaf}'
  else:
    rename = lambda layer, leaf: f'{layer}/{"W" if leaf == "weight" else "b"}'
  return {rename(*k.split('.')): v for k, v in state.items()}


@pytest.mark.parametrize('pool5, style', [('pad', 'pytorch'), ('ceil', 'chainer')])
def test_narrow_c3d_matches_the_numpy_reference(pool5, style):
  """A narrow C3D (every layer, 16x112x112 input) with weights converted from the checkpoint
  layout equals the NumPy model of the PyTorch / Chainer network: kernel transposes, padding,
  pool1's 1x2x2, each pool5 mode and fc6's flatten order."""
  rng = np.random.default_rng(0)
  widths, fc_width, num_classes = (4, 6, 6, 8, 8, 8, 8, 5), 16, 7
  state = _random_state(rng, widths, fc_width, num_classes)
  x = rng.standard_normal((2, 3, 16, 112, 112)).astype(np.float32)  # [B, C, T, H, W]
  flat, fc7, logits = _np_c3d(x.astype(np.float64), state, pool5=pool5)
  params = convert_c3d.unflatten(convert_c3d.rename_and_transpose(_checkpoint_keys(state, style)))
  model = c3d.C3D(num_classes=num_classes, pool5=pool5, widths=widths, fc_width=fc_width)
  out = jax.jit(model.apply)(params, jnp.asarray(x.transpose(0, 2, 3, 4, 1)))
  assert out['pool5'].shape == (2, 16 * widths[-1])
  # Flax flattens [T, H, W, C]: the same numbers as PyTorch's [C, T, H, W], permuted.
  as_torch = np.asarray(out['pool5']).reshape(2, 1, 4, 4, 5).transpose(0, 4, 1, 2, 3)
  np.testing.assert_allclose(as_torch.reshape(2, -1), flat, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out['fc7'], fc7, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out['logits'], logits, rtol=1e-4, atol=1e-5)
  assert np.mean(fc7 > 0) > 0.2  # the ReLUs do not hide the comparison


@pytest.mark.parametrize('mode', c3d.POOL5_MODES)
def test_fc6_flatten_order_at_full_size(mode):
  """conv5b's output -> pool5 -> flatten -> fc6 at C3D's sizes ([512, 2, 7, 7] -> 8192 -> 4096):
  fc6_kernel of a PyTorch-layout weight on Flax's [T, H, W, C] flatten equals PyTorch's
  [C, T, H, W] flatten times the weight; the untransformed weight (weight.T) does not."""
  rng = np.random.default_rng(1)
  h = rng.standard_normal((2, 512, 2, 7, 7)).astype(np.float32)  # [B, C, T, H, W]
  weight = rng.standard_normal((c3d.FC_WIDTH, c3d.POOL5_DIM)).astype(np.float32) / 90
  bias = rng.standard_normal(c3d.FC_WIDTH).astype(np.float32)
  pooled = (_np_max_pool(h, (2, 2, 2), pad=(0, 1, 1)) if mode == 'pad' else
            _np_max_pool(h, (2, 2, 2), ceil=True))
  assert pooled.shape == (2, 512, 1, 4, 4)
  expected = np.maximum(pooled.reshape(2, -1) @ weight.T + bias, 0)
  flat = np.asarray(c3d.max_pool_3d(jnp.asarray(h.transpose(0, 2, 3, 4, 1)), (2, 2, 2),
                                    mode=mode)).reshape(2, -1)
  assert flat.shape == (2, c3d.POOL5_DIM)
  got = np.maximum(flat @ convert_c3d.fc6_kernel(weight) + bias, 0)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  assert not np.allclose(np.maximum(flat @ weight.T + bias, 0), expected, atol=1e-2)


def test_pool5_modes_differ():
  """'ceil' windows start at row 0 (row 6 alone at the end), 'pad' at row -1 (row 0 alone)."""
  x = jnp.arange(7.0)[None, None, None, :, None] * jnp.ones((1, 2, 7, 1, 1))  # [1, 2, 7, 7, 1]
  ceil = np.asarray(c3d.max_pool_3d(x, (2, 2, 2), mode='ceil'))[0, 0, 0, :, 0]
  pad = np.asarray(c3d.max_pool_3d(x, (2, 2, 2), mode='pad'))[0, 0, 0, :, 0]
  np.testing.assert_array_equal(ceil, [1, 3, 5, 6])
  np.testing.assert_array_equal(pad, [0, 2, 4, 6])
  with pytest.raises(ValueError, match="mode='floor'"):
    c3d.max_pool_3d(x, (2, 2, 2), mode='floor')


def test_expected_shapes_are_the_models():
  variables = jax.eval_shape(c3d.C3D(num_classes=487).init, jax.random.PRNGKey(0),
                             jnp.zeros((1, 16, 112, 112, 3)))
  shapes = {'/'.join(k.key for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(variables)}
  assert shapes == convert_c3d.expected_shapes(487)
  assert shapes['params/fc6/kernel'] == (8192, 4096)


def test_full_size_forward_pass():
  """Two 64x64 clips through the real-size C3D (resized to 112x112): the outputs' shapes, fc7 of
  ReLU (>= 0), the 101 logits of fc8 on fc7, and distinct clips give distinct features."""
  rng = np.random.default_rng(2)
  widths = [w for _, w, _ in c3d.CONVS]
  state = _random_state(rng, widths, c3d.FC_WIDTH, 101)
  variables = {'params': convert_c3d.unflatten(convert_c3d.convert_state_dict(state))['params'],
               'preprocess': {'mean': np.full((16, 112, 112, 3), 100, np.float32)}}
  features = c3d.make_feature_fn(variables)
  videos = rng.integers(0, 256, (2, 16, 64, 64, 3), dtype=np.uint8)
  out = features(videos)
  assert out['fc7'].shape == (2, c3d.FC_WIDTH) and out['logits'].shape == (2, 101)
  assert np.all(out['fc7'] >= 0) and np.mean(out['fc7'] > 0) > 0.1
  np.testing.assert_allclose(out['logits'], out['fc7'] @ state['fc8.weight'].T + state['fc8.bias'],
                             rtol=1e-3, atol=1e-3)
  assert np.abs(out['fc7'][0] - out['fc7'][1]).max() > 1e-3


# ------------------------------------------------------------------ converter


def _full_size_state():
  """Distinct values at every position of every real-size weight (a misplaced axis cannot pass),
  cheap to make; not for forward passes."""
  state, offset = {}, 0.0
  for name, shape in convert_c3d.expected_shapes(101).items():
    _, layer, leaf = name.split('/')
    if leaf == 'bias':
      torch_shape = shape
    else:
      torch_shape = shape[::-1] if layer.startswith('fc') else (shape[4], shape[3], *shape[:3])
    size = int(np.prod(torch_shape))
    state[f'{layer}.{"weight" if leaf == "kernel" else "bias"}'] = (
        np.arange(size, dtype=np.float32).reshape(torch_shape) / size + offset)
    offset += 1.0
  return state


def _expected_flax(state):
  """The Flax variables the converter must write for `state` (mapping of convert_c3d's docstring,
  with fc6's rows permuted as the NumPy reference test checks)."""
  flat = {}
  for key, value in state.items():
    layer, leaf = key.split('.')
    if leaf == 'bias':
      flat[f'params/{layer}/bias'] = value
    elif layer == 'fc6':
      flat[f'params/{layer}/kernel'] = value.reshape(4096, 512, 1, 4, 4).transpose(
          2, 3, 4, 1, 0).reshape(8192, 4096)
    elif layer.startswith('fc'):
      flat[f'params/{layer}/kernel'] = value.T
    else:
      flat[f'params/{layer}/kernel'] = value.transpose(2, 3, 4, 1, 0)
  return flat


def _loaded(variables):
  return {'/'.join(k.key for k in path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(variables)}


def test_converter_command_line_round_trip(tmp_path, monkeypatch):
  """TGANv2's Chainer .npz and mean2.npz through the command line, and a c3d-pytorch state dict
  (torch.load faked: no PyTorch here), loaded back: every parameter where the mapping puts it,
  the mean clip cropped as TGANv2 does, each checkpoint's protocol."""
  state = _full_size_state()
  expected = _expected_flax(state)
  chainer_path, mean_path = str(tmp_path / 'conv3d_deepnetA_ucf.npz'), str(tmp_path / 'mean2.npz')
  np.savez(chainer_path, **_checkpoint_keys(state, 'chainer'))
  mean = np.arange(3 * 16 * 128 * 171, dtype=np.float32).reshape(3, 16, 128, 171)  # BGR
  np.savez(mean_path, mean=mean)
  out = str(tmp_path / 'c3d.npz')
  convert_c3d.main([chainer_path, out, '--mean', mean_path])
  variables, protocol = convert_c3d.load_variables(out)
  assert protocol == 'tgan2'
  loaded = _loaded(variables)
  assert loaded.keys() == expected.keys() | {'preprocess/mean'}
  for name, value in expected.items():
    np.testing.assert_array_equal(loaded[name], value, err_msg=name)
  # TGANv2: mean[:, :, 8:120, 8:120] of [C, T, H, W], channels last here.
  np.testing.assert_array_equal(loaded['preprocess/mean'],
                                mean[:, :, 8:120, 8:120].transpose(1, 2, 3, 0))

  tensors = {k: types.SimpleNamespace(numpy=lambda v=v: v)
             for k, v in _checkpoint_keys(state, 'pytorch').items()}
  monkeypatch.setitem(sys.modules, 'torch', types.SimpleNamespace(
      load=lambda path, map_location, weights_only: tensors if path == 'c3d.pickle' else None))
  convert_c3d.main(['c3d.pickle', out])
  variables, protocol = convert_c3d.load_variables(out)
  assert protocol == 'c3d_pytorch'
  loaded = _loaded(variables)
  np.testing.assert_array_equal(loaded['params/fc6/kernel'], expected['params/fc6/kernel'])
  np.testing.assert_array_equal(loaded['params/conv1a/kernel'], expected['params/conv1a/kernel'])
  np.testing.assert_array_equal(loaded['preprocess/mean'], 0)  # c3d-pytorch subtracts no mean

  with pytest.raises(UserError, match='--mean mean2.npz'):
    convert_c3d.main([chainer_path, out])


def test_converter_and_loader_refuse_what_is_not_c3d(tmp_path):
  state = _checkpoint_keys(_random_state(np.random.default_rng(3), (1,) * 8, 2, 3), 'pytorch')
  with pytest.raises(ValueError, match=r'params/conv1a/kernel is \(3, 3, 3, 3, 1\), not '):
    convert_c3d.convert_state_dict(state)  # a narrow network is not C3D
  full = _checkpoint_keys(_full_size_state(), 'chainer')
  with pytest.raises(ValueError, match=r"match C3D: missing params/conv5b/bias\.$"):
    convert_c3d.convert_state_dict({k: v for k, v in full.items() if k != 'conv5b/b'})
  with pytest.raises(ValueError, match="Not a C3D key.*'conv6a/W'"):
    convert_c3d.convert_state_dict({**full, 'conv6a/W': np.zeros((1, 1, 3, 3, 3))})
  with pytest.raises(ValueError, match='a 5-D weight was expected'):
    convert_c3d.convert_state_dict({**full, 'conv1a/W': np.zeros((64, 3, 3, 3))})
  with pytest.raises(ValueError, match=r'mean clip of shape \(3, 16, 128, 128\)'):
    convert_c3d.mean_clip(np.zeros((3, 16, 128, 128)))
  np.savez(tmp_path / 'other.npz', x=np.zeros(3))
  with pytest.raises(UserError, match=r'does not hold converted C3D weights \(missing .*'
                                      'convert_c3d on conv3d_deepnetA_ucf.npz.*'
                                      '--config.eval.c3d_weights'):
    convert_c3d.load_variables(str(tmp_path / 'other.npz'))
  (tmp_path / 'text.npz').write_text('not a zip')
  with pytest.raises(UserError, match='is not a readable .npz'):
    convert_c3d.load_variables(str(tmp_path / 'text.npz'))


# ------------------------------------------------------------------ preprocessing


def test_preprocess_as_each_protocol_reads_videos():
  # Two columns (R, G, B) = (0, 10, 20) and (255, 245, 235), 2 rows, 16 frames.
  video = np.zeros((1, 16, 2, 2, 3), np.uint8)
  video[..., 0, :] = [0, 10, 20]
  video[..., 1, :] = [255, 245, 235]
  mean = np.full((16, 112, 112, 3), 7.0, np.float32)
  tgan2 = np.asarray(c3d.preprocess(video, protocol=c3d.PROTOCOLS['tgan2'], mean=mean))
  assert tgan2.shape == (1, 16, 112, 112, 3)
  # BGR; 128 x + 128 with x = p / 127.5 - 1; corners aligned: column i reads i / 111.
  i = np.arange(112)
  for channel, (left, right) in enumerate([(20, 235), (10, 245), (0, 255)]):
    np.testing.assert_allclose(tgan2[0, 3, 5, :, channel],
                               (left + (right - left) * i / 111) * 256 / 255 - 7, rtol=1e-5,
                               atol=1e-4)
  torch_like = np.asarray(c3d.preprocess(video, protocol=c3d.PROTOCOLS['c3d_pytorch'],
                                         mean=np.zeros_like(mean)))
  red = torch_like[0, 0, 0, :, 0]  # RGB, [0, 255], half-pixel centres: flat for 28 columns
  np.testing.assert_allclose(red[:28], 0, atol=1e-4)
  np.testing.assert_allclose(red[84:], 255, atol=1e-4)
  np.testing.assert_allclose(red[28:84], np.clip((i[28:84] + 0.5) / 56 - 0.5, 0, 1) * 255,
                             rtol=1e-5, atol=1e-3)
  with pytest.raises(ValueError, match='clips of 16 frames'):
    c3d.preprocess(video[:, :8], protocol=c3d.PROTOCOLS['tgan2'], mean=mean)


# ------------------------------------------------------------------ the scores


_one_hot_logits = test_inception._one_hot_logits  # softmax exactly one-hot (float64)


def test_inception_score_and_fid_closed_forms():
  # Uniform predictions: p(y|x) = p(y), IS = 1; K classes used equally, each certain: IS = K.
  np.testing.assert_allclose(inception.inception_score(np.zeros((30, 101)), splits=1), [1, 0],
                             atol=1e-12)
  for k in (2, 5, 101):
    mean, _ = inception.inception_score(_one_hot_logits(np.tile(np.arange(k), 3), 101), splits=1)
    assert mean == pytest.approx(k, rel=1e-12)
  # FID of a set against itself is 0, also with fewer samples than dimensions (singular fits).
  features = np.random.default_rng(4).standard_normal((20, 64)) * 3 + 1
  trace = np.trace(frechet.gaussian_fit(features)[1])
  assert frechet.frechet_distance_of_features(features, features) < 1e-9 * trace
  assert frechet.frechet_distance_of_features(features, features + 1) == pytest.approx(64, rel=1e-6)


def _stand_in_c3d(videos):
  """A stand-in C3D: fc7 = the video's mean colour [B, 3]; logits certain of one of 4 classes
  (the first pixel's red value mod 4)."""
  return {'fc7': videos.astype(np.float64).mean(axis=(1, 2, 3)),
          'logits': _one_hot_logits(videos[:, 0, 0, 0, 0] % 4, 4)}


def test_c3d_metrics_in_evaluate_run(monkeypatch, tmp_path):
  """Two repeats: repeat 0 returns the test videos (FID 0 against themselves, IS the ceiling),
  repeat 1 the training videos (FID the floor); means over repeats, floor and ceiling once, the
  reference features cached; the frame metrics alongside keep their own keys."""
  monkeypatch.setattr(evaluate, 'c3d_feature_fn', lambda config: _stand_in_c3d)
  monkeypatch.setattr(evaluate, 'inception_feature_fn', lambda config: lambda frames: {
      'pool': frames.astype(np.float64).mean(axis=(1, 2)) + 1})
  builder = test_inception._FakeBuilder()  # two splits of 8 videos of 6 one-colour frames
  config = feature_classifier.get_config('smoke')
  config.eval.metrics = ('fid_c3d', 'is_c3d', 'fid_frames')
  config.eval.num_captions = config.eval.fvd_num_reference = 8
  config.eval.is_splits, config.eval.num_repeats = 2, 2
  config.sample.batch_size = 3  # batches that do not divide the 8 videos
  config.eval.c3d_weights = str(tmp_path / 'c3d.npz')  # the stand-in's: keys the feature cache
  (tmp_path / 'c3d.npz').write_bytes(b'stand-in')
  repeats = iter([builder.videos['test'], builder.videos['train']])  # what repeats 0, 1 sample
  run = types.SimpleNamespace(config=config, step=1, video_shape=(6, 4, 4, 3), ema_params=None,
                              expert=None, stages=(),
                              generate=lambda params, prompts, key: next(repeats))
  results = evaluate.evaluate_run(run, str(tmp_path), builder=builder)

  test, train = (_stand_in_c3d(builder.videos[s]) for s in ('test', 'train'))
  floor = frechet.frechet_distance_of_features(train['fc7'], test['fc7'])
  (ceiling, _), (train_is, _) = (inception.inception_score(f['logits'], splits=2)
                                 for f in (test, train))
  assert floor > 1.0 and ceiling != train_is
  # FID: 0 (the reference against itself) in repeat 0, the floor in repeat 1.
  expected = {'fid_c3d/floor': floor, 'fid_c3d/generated': floor / 2,
              'fid_c3d/generated_std': floor / 2, 'is_c3d/ground_truth': ceiling,
              'is_c3d/generated': (ceiling + train_is) / 2}
  assert {k: results[k] for k in expected} == pytest.approx(expected, rel=1e-6)
  assert results['fid_c3d/num_generated'] == results['fid_c3d/num_reference'] == 8
  assert results['is_c3d/num_videos'] == 8 and results['is_c3d/splits'] == 2
  assert results['fid_frames/num_generated'] == 8 * 4  # eval.frames_per_video 4, its own features
  assert 'is_frames/generated' not in results and results['num_repeats'] == 2
  cache = os.listdir(tmp_path / 'eval' / 'reference_features')
  # The reference and the ceiling are the same 8 test videos (one entry), then the floor.
  assert sum(name.startswith('c3d_') for name in cache) == 2


def test_validation_and_missing_weights(tmp_path):
  config = ucf101.get_config()
  assert config.eval.metrics == ('fid_c3d', 'is_c3d')
  assert config.eval.num_captions * config.eval.num_repeats == 10_000
  config_validation.validate(config)  # no evaluation in training: the weights can wait
  config.train.eval_at_end = True
  with pytest.raises(UserError, match="'fid_c3d' and 'is_c3d' but config.eval.c3d_weights is "
                                      'empty: set --config.eval.c3d_weights to the .npz of '
                                      'python -m vdm_jax.metrics.convert_c3d'):
    config_validation.validate(config)
  config.eval.c3d_weights = '/c3d.npz'
  config_validation.validate(config)
  config.data.num_frames = 8
  with pytest.raises(UserError, match='reads 16-frame clips, but the videos have 8 frames'):
    config_validation.validate(config)
  config.data.num_frames = 16
  config.eval.is_splits = 2_001
  with pytest.raises(UserError, match=r'config.eval.is_splits=2001 must be an integer in \[1, '
                                      r'2000\] \(the videos of'):
    config_validation.validate(config)
  config.eval.is_splits, config.eval.num_captions = 1, 1
  with pytest.raises(UserError, match='give 1 video.s., too few for an FID'):
    config_validation.validate(config)
  config.eval.num_captions, config.eval.fvd_num_reference = 2_000, 1
  with pytest.raises(UserError, match='config.eval.fvd_num_reference=1 must lie in'):
    config_validation.validate(config)
  config.eval.c3d_weights = str(tmp_path / 'missing.npz')
  with pytest.raises(UserError, match=r"config.eval.c3d_weights='.*missing.npz' is not a file: "
                                      'convert .*python -m vdm_jax.metrics.convert_c3d'):
    evaluate.c3d_feature_fn(config)
  laptop = ucf101.get_config('laptop')
  assert 'fid_c3d' not in laptop.eval.metrics  # 8-frame clips

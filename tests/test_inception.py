"""Inception-v3 for FID and IS (vdm_jax/metrics/inception.py), its weight converter
(convert_inception.py) and the frame-level metrics in evaluation, on random weights: torchvision
semantics of one conv unit and the FID patches' pools against NumPy, the converter's round trip,
the resize, the Inception Score's closed forms, and the evaluator with a stand-in network."""

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from experiments import feature_classifier
from vdm_jax import config_validation
from vdm_jax import evaluate
from vdm_jax.errors import UserError
from vdm_jax.metrics import convert_inception
from vdm_jax.metrics import frechet
from vdm_jax.metrics import inception

# torchvision's inception_v3 (1000 classes, aux head) has 27,161,264 parameters; FID's drops the
# AuxLogits (3,326,696) and the 1000-way fc (2,049,000) and has a 1008-way one (2,065,392).
NUM_PARAMS = 27_161_264 - 3_326_696 - 2_049_000 + 2_065_392
NUM_CONV_UNITS = 94  # stem 5, 3 x A 7, B 4, 4 x C 10, D 6, 2 x E 9


def _torch_basic_conv2d(x, state, *, stride, padding):
  """NumPy reference of torchvision's BasicConv2d on NCHW input: Conv2d (zero padding, cross-
  correlation, weight [O, I, kh, kw], no bias) -> BatchNorm2d(eps=0.001) -> ReLU."""
  xp = np.pad(x, [(0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2])
  w = state['u.conv.weight']
  O, _, kh, kw = w.shape
  out_h, out_w = (xp.shape[2] - kh) // stride[0] + 1, (xp.shape[3] - kw) // stride[1] + 1
  y = np.zeros((x.shape[0], O, out_h, out_w))
  for dh in range(kh):
    for dw in range(kw):
      window = xp[:, :, dh::stride[0], dw::stride[1]][:, :, :out_h, :out_w]
      y += np.einsum('bihw,oi->bohw', window, w[:, :, dh, dw])
  c = lambda v: v[None, :, None, None]
  y = ((y - c(state['u.bn.running_mean'])) / np.sqrt(c(state['u.bn.running_var']) + 1e-3)
       * c(state['u.bn.weight']) + c(state['u.bn.bias']))
  return np.maximum(y, 0)


def test_basic_conv2d_matches_torchvision():
  """Kernel layout (the transpose, on a non-square kernel), asymmetric padding and stride, and BN
  eps 1e-3 (variances near eps, so 1e-5 would fail)."""
  rng = np.random.default_rng(0)
  kernel, stride, padding = (3, 2), (2, 1), (1, 0)
  state = {'u.conv.weight': rng.standard_normal((4, 3, *kernel)).astype(np.float32),
           'u.bn.weight': rng.uniform(0.5, 2, 4), 'u.bn.bias': rng.standard_normal(4) * 0.1,
           'u.bn.running_mean': rng.standard_normal(4) * 0.1,
           'u.bn.running_var': rng.uniform(2e-4, 2e-3, 4), 'u.bn.num_batches_tracked': np.array(7)}
  x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32) * 0.05  # [B, C, H, W]
  expected = _torch_basic_conv2d(x, state, stride=stride, padding=padding)
  tree = convert_inception.unflatten(convert_inception.rename_and_transpose(state))
  got = inception.BasicConv2d(4, kernel, strides=stride, padding=padding).apply(
      {'params': tree['params']['u'], 'batch_stats': tree['batch_stats']['u']},
      jnp.asarray(x.transpose(0, 2, 3, 1)))
  assert got.shape == (2, 4, 5, 4)  # [B, (7 + 2 - 3) // 2 + 1, 6 - 2 + 1, O]
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), expected, rtol=1e-4,
                             atol=1e-4)
  assert np.mean(expected > 0) > 0.2  # ReLU does not hide the comparison


def _numpy_pool_3x3(x, reduce):
  """3x3 stride-1 pool of [H, W] over the window's pixels inside the image (pad not counted)."""
  H, W = x.shape
  return np.array([[reduce(x[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]) for j in range(W)]
                   for i in range(H)])


def test_pools_of_the_fid_patches():
  """The avg pool ignores padding (a corner averages 4 pixels, an edge 6), the stride-1 max pool
  pads with -inf (all-negative input stays negative), the reduction max pool is unpadded."""
  rng = np.random.default_rng(1)
  x = rng.standard_normal((1, 5, 6, 2)) - 3.0  # all negative
  avg = np.asarray(inception.avg_pool_3x3(jnp.asarray(x)))
  mx = np.asarray(inception.max_pool_3x3(jnp.asarray(x), stride=1))
  for c in range(2):
    np.testing.assert_allclose(avg[0, :, :, c], _numpy_pool_3x3(x[0, :, :, c], np.mean),
                               rtol=1e-5)
    np.testing.assert_allclose(mx[0, :, :, c], _numpy_pool_3x3(x[0, :, :, c], np.max), rtol=1e-6)
  np.testing.assert_allclose(avg[0, 0, 0], x[0, :2, :2].mean(axis=(0, 1)), rtol=1e-5)
  assert inception.max_pool_3x3(jnp.zeros((1, 35, 35, 1))).shape == (1, 17, 17, 1)


def _identity_pool_branch(block, x):
  """Variables of `block` on x [B, H, W, 192] with every kernel 0 except branch_pool's, the
  identity, and identity batch norms: the block's last 192 channels are then relu(pool(x))."""
  variables = jax.tree_util.tree_map_with_path(
      lambda path, v: (np.ones_like(v) - 1e-3 if path[-1].key == 'var' else
                       np.ones_like(v) if path[-1].key == 'scale' else np.zeros_like(v)),
      block.init(jax.random.PRNGKey(0), x))
  variables['params']['branch_pool']['conv']['kernel'] = np.eye(192)[None, None]
  return variables


@pytest.mark.parametrize('block, reduce', [
    (inception.InceptionA(pool_features=192), np.mean),
    (inception.InceptionC(channels_7x7=8), np.mean),
    (inception.InceptionE(pool='avg'), np.mean),  # Mixed_7b
    (inception.InceptionE(pool='max'), np.max),  # Mixed_7c: the 2015 graph's max pool
])
def test_pool_branch_of_each_block(block, reduce):
  """Each block's pool branch is the last 192 channels and pools as pytorch-fid's patch does;
  the other branches read nothing (zero kernels)."""
  rng = np.random.default_rng(2)
  x = rng.standard_normal((1, 4, 5, 192)).astype(np.float32)
  out = np.asarray(block.apply(_identity_pool_branch(block, x), jnp.asarray(x)))
  expected = np.maximum(np.stack([_numpy_pool_3x3(x[0, :, :, c], reduce) for c in range(192)],
                                 axis=-1), 0)
  np.testing.assert_allclose(out[0, :, :, -192:], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out[0, :, :, :-192], 0)
  widths = {inception.InceptionA: 64 + 64 + 96 + 192, inception.InceptionC: 4 * 192,
            inception.InceptionE: 2048}
  assert out.shape[-1] == widths[type(block)]


def test_blocks_are_pytorch_fids():
  """The blocks of InceptionV3, in order, with their settings as in pytorch-fid's
  fid_inception_v3 (recorded by intercepting their calls on abstract inputs)."""
  blocks = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, inception._Block) and context.method_name == '__call__':
      m = context.module
      blocks.append((m.name, type(m).__name__, getattr(m, 'pool_features', None) or
                     getattr(m, 'channels_7x7', None) or getattr(m, 'pool', None)))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(inception.InceptionV3().init, jax.random.PRNGKey(0),
                   jnp.zeros((1, 299, 299, 3)))
  assert blocks == [
      ('Mixed_5b', 'InceptionA', 32), ('Mixed_5c', 'InceptionA', 64),
      ('Mixed_5d', 'InceptionA', 64), ('Mixed_6a', 'InceptionB', None),
      ('Mixed_6b', 'InceptionC', 128), ('Mixed_6c', 'InceptionC', 160),
      ('Mixed_6d', 'InceptionC', 160), ('Mixed_6e', 'InceptionC', 192),
      ('Mixed_7a', 'InceptionD', None), ('Mixed_7b', 'InceptionE', 'avg'),
      ('Mixed_7c', 'InceptionE', 'max')]


# The documented mapping, inverted: Flax variable -> PyTorch (key suffix, layout from Flax's).
_TO_TORCH = {'conv/kernel': ('conv.weight', (3, 2, 0, 1)), 'bn/scale': ('bn.weight', None),
             'bn/bias': ('bn.bias', None), 'bn/mean': ('bn.running_mean', None),
             'bn/var': ('bn.running_var', None), 'fc/kernel': ('fc.weight', (1, 0)),
             'fc/bias': ('fc.bias', None)}


def _flax_and_torch_variables(rng):
  """(flat Flax variables, the PyTorch state dict that holds them): distinct values at every
  position of every variable (a misplaced axis cannot pass), with `module.` prefixes and the
  num_batches_tracked the converter must drop."""
  flax_vars, state = {}, {}
  for name, shape in convert_inception.expected_shapes().items():
    value = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + rng.uniform(0, 1e6)
    flax_vars[name] = value
    _, *unit, layer, leaf = name.split('/')
    suffix, axes = _TO_TORCH[f'{layer}/{leaf}']
    state['module.' + '.'.join([*unit, suffix])] = value if axes is None else value.transpose(axes)
    if leaf == 'var':
      state['.'.join([*unit, 'bn.num_batches_tracked'])] = np.array(100)
  return flax_vars, state


def test_converter_round_trip(tmp_path, monkeypatch):
  """The command line on a stand-in checkpoint (torch.load faked: no PyTorch here), loaded back
  into the model's variables."""
  rng = np.random.default_rng(3)
  flax_vars, state = _flax_and_torch_variables(rng)
  assert state['module.Mixed_7c.branch3x3dbl_3b.conv.weight'].shape == (384, 384, 3, 1)
  assert state['module.fc.weight'].shape == (inception.NUM_CLASSES, inception.FEATURE_DIM)
  tensors = {k: types.SimpleNamespace(numpy=lambda v=v: v) for k, v in state.items()}
  monkeypatch.setitem(sys.modules, 'torch', types.SimpleNamespace(
      load=lambda path, map_location, weights_only: tensors if path == 'pt.pth' else None))
  path = str(tmp_path / 'inception.npz')
  convert_inception.main(['--input', 'pt.pth', '--output', path])
  variables = convert_inception.load_variables(path)
  loaded = {'/'.join(k.key for k in p): leaf
            for p, leaf in jax.tree_util.tree_leaves_with_path(variables)}
  assert loaded.keys() == flax_vars.keys()  # every variable, nothing else
  for name, value in flax_vars.items():
    np.testing.assert_array_equal(loaded[name], value, err_msg=name)
  # fc: Flax's x @ kernel + bias is PyTorch's Linear x @ weight.T + bias.
  x = rng.standard_normal((2, 2048)).astype(np.float32)
  fc = nn.Dense(inception.NUM_CLASSES).apply({'params': variables['params']['fc']}, x)
  np.testing.assert_allclose(fc, x @ state['module.fc.weight'].T + state['module.fc.bias'],
                             rtol=1e-5)
  assert sum(v.size for v in jax.tree.leaves(variables['params'])) == NUM_PARAMS
  assert len(jax.tree.leaves(variables['batch_stats'])) == 2 * NUM_CONV_UNITS
  with pytest.raises(ValueError, match='missing'):
    convert_inception.convert_state_dict(
        {k: v for k, v in state.items() if 'Mixed_6e.branch_pool' not in k})
  aux = {'AuxLogits.conv0.conv.weight': np.zeros((128, 768, 1, 1))}  # torchvision's aux head
  with pytest.raises(ValueError, match='unexpected'):
    convert_inception.convert_state_dict({**state, **aux})
  for key in ('Conv2d_1a_3x3.conv.bias', 'conv.weight', 'Mixed_5b.fc.weight', 'fc'):
    with pytest.raises(ValueError, match='Not a pytorch-fid'):
      convert_inception.convert_state_dict({**state, key: np.zeros(32)})
  wrong = dict(state)
  wrong['module.fc.bias'] = np.zeros(1000, np.float32)  # torchvision's 1000-way head
  with pytest.raises(ValueError, match='shapes differ'):
    convert_inception.convert_state_dict(wrong)
  np.savez(tmp_path / 'other.npz', x=np.zeros(3))
  with pytest.raises(ValueError, match='does not hold converted Inception-v3 weights'):
    convert_inception.load_variables(str(tmp_path / 'other.npz'))


def test_preprocess_resizes_like_pytorch_bilinear():
  # F.interpolate(bilinear, align_corners=False) of [0, 255] to 4 reads positions -0.25 (-> 0),
  # 0.25, 0.75, 1.25 (-> 1): [0, 63.75, 191.25, 255], scaled to [-1, 1]; shrinking 4 -> 2 reads
  # 0.5 and 2.5 (two taps, no antialiasing).
  image = np.zeros((1, 2, 2, 3), np.uint8)
  image[:, :, 1] = 255  # columns 0 and 255
  out = np.asarray(inception.preprocess(image, resolution=4))
  np.testing.assert_allclose(out[0, :, :, 0], np.tile([-1, -0.5, 0.5, 1], (4, 1)), atol=1e-6)
  ramp = np.tile(np.array([0, 40, 80, 200], np.uint8)[None, :, None], (4, 1, 3))[None]
  out = np.asarray(inception.preprocess(ramp, resolution=2))
  np.testing.assert_allclose(out[0, 0, :, 0], np.array([20, 140]) / 127.5 - 1, atol=1e-6)
  constant = np.full((1, 17, 23, 3), 51, np.uint8)
  out = np.asarray(inception.preprocess(constant))
  assert out.shape == (1, 299, 299, 3)
  np.testing.assert_allclose(out, 2 * 51 / 255 - 1, atol=1e-6)


def test_forward_pass_at_299():
  """Two frames at FID's size on He-initialised weights: the outputs' shapes, pool features of
  ReLU maps (>= 0), logits = unbiased logits + fc bias, and frames in a batch never mix."""
  rng = np.random.default_rng(4)
  flat = {name: (rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape) if name.endswith('kernel')
                 else np.ones(shape) if name.endswith(('var', 'scale')) else np.zeros(shape))
          for name, shape in convert_inception.expected_shapes().items()}
  flat['params/fc/bias'] = rng.standard_normal(inception.NUM_CLASSES)
  features = inception.make_feature_fn(convert_inception.unflatten(flat))
  a, b = rng.integers(0, 256, (2, 24, 32, 3), dtype=np.uint8)  # resized to 299x299
  ab, ba = features(np.stack([a, b])), features(np.stack([b, a]))
  assert ab['pool'].shape == (2, inception.FEATURE_DIM)
  assert ab['logits'].shape == ab['logits_unbiased'].shape == (2, inception.NUM_CLASSES)
  assert np.all(ab['pool'] >= 0) and np.all(np.isfinite(ab['logits']))
  np.testing.assert_allclose(ab['logits'], ab['logits_unbiased'] + flat['params/fc/bias'],
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(ab['logits_unbiased'],
                             ab['pool'] @ flat['params/fc/kernel'], rtol=1e-4, atol=1e-4)
  for key in ab:
    np.testing.assert_allclose(ab[key][0], ba[key][1], rtol=1e-5, atol=1e-5)
  assert np.abs(ab['pool'][1] - ab['pool'][0]).max() > 1e-3


def _one_hot_logits(classes, num_classes=1008):
  """Logits whose softmax is exactly one-hot on `classes` [N] (float64: exp(-1e4) is 0)."""
  logits = np.full((len(classes), num_classes), -1e4)
  logits[np.arange(len(classes)), classes] = 0.0
  return logits


def test_inception_score_closed_forms():
  # k equally likely, certain classes: KL(p(y|x) || p(y)) = log k for every x, so IS = k.
  for k in (1, 3, 7):
    mean, std = inception.inception_score(_one_hot_logits(np.tile(np.arange(k), 10)), splits=10)
    np.testing.assert_allclose([mean, std], [k, 0], atol=1e-12)
  # Identical predictions, however spread: p(y|x) = p(y), IS = 1.
  same = np.tile(np.random.default_rng(5).standard_normal(1008), (20, 1))
  np.testing.assert_allclose(inception.inception_score(same, splits=4), [1, 0], atol=1e-12)
  # Two classes, p(y|x) = (a, 1 - a) or (1 - a, a) equally often: IS = 2 exp(-H(a)).
  a = 0.8
  logits = np.log([[a, 1 - a], [1 - a, a]] * 6)
  entropy = -a * np.log(a) - (1 - a) * np.log(1 - a)
  np.testing.assert_allclose(inception.inception_score(logits, splits=3)[0],
                             2 * np.exp(-entropy), rtol=1e-12)
  # Contiguous splits, mean and ddof-0 std over them: IS 2 in the first half, 4 in the second.
  classes = np.concatenate([np.tile([0, 1], 4), np.tile([2, 3, 4, 5], 2)])
  np.testing.assert_allclose(inception.inception_score(_one_hot_logits(classes), splits=2),
                             [3, 1], atol=1e-12)
  with pytest.raises(ValueError, match='N >= splits'):
    inception.inception_score(same[:3], splits=4)


def test_frame_selection():
  np.testing.assert_array_equal(inception.frame_indices(16, 4), [0, 5, 10, 15])
  np.testing.assert_array_equal(inception.frame_indices(8, 0), np.arange(8))
  np.testing.assert_array_equal(inception.frame_indices(8, 8), np.arange(8))
  np.testing.assert_array_equal(inception.frame_indices(8, 1), [0])
  with pytest.raises(ValueError, match='frames_per_video=9'):
    inception.frame_indices(8, 9)
  # Video n, frame t holds 10 n + t: frames come video-major, evenly spaced.
  videos = (10 * np.arange(3)[:, None] + np.arange(7)[None, :]).astype(np.uint8)
  videos = np.broadcast_to(videos[:, :, None, None, None], (3, 7, 2, 2, 3))
  frames = inception.video_frames(videos, 3)
  assert frames.shape == (9, 2, 2, 3)
  np.testing.assert_array_equal(frames[:, 0, 0, 0], [0, 3, 6, 10, 13, 16, 20, 23, 26])


def _stand_in_features(frames):
  """A stand-in Inception: pool = the frame's mean colour [B, 3]; logits certain of one of 3
  classes, the red value mod 3."""
  colour = frames.astype(np.float64).mean(axis=(1, 2))
  return {'pool': colour, 'logits_unbiased': _one_hot_logits(frames[:, 0, 0, 0] % 3, 3)}


class _FakeBuilder:
  """Two splits of 8 videos [8, 6 frames, 4, 4, 3], each frame one random colour."""

  def __init__(self):
    rng = np.random.default_rng(6)
    colours = rng.integers(0, 256, (2, 8, 6, 1, 1, 3), dtype=np.uint8)
    self.videos = dict(zip(('test', 'train'), np.broadcast_to(colours, (2, 8, 6, 4, 4, 3))))

  def as_data_source(self, split):
    return [{'video': v, 'caption': f'video {i}'} for i, v in enumerate(self.videos[split])]


def test_frame_metrics_in_evaluate_run(monkeypatch, tmp_path):
  """Two repeats: repeat 0 returns the test videos themselves (FID 0: the reference against
  itself; IS = the ceiling), repeat 1 the training videos (FID = the floor, IS theirs); the
  results are the means over repeats, the floor and ceiling computed once."""
  monkeypatch.setattr(evaluate, 'inception_feature_fn', lambda config: _stand_in_features)
  builder = _FakeBuilder()
  config = feature_classifier.get_config('smoke')
  config.eval.metrics = ('fid_frames', 'is_frames')
  config.eval.num_captions = config.eval.fvd_num_reference = 8
  config.eval.frames_per_video, config.eval.is_splits = 3, 2
  config.eval.num_repeats = 2
  config.sample.batch_size = 5  # batches that do not divide the 24 frames
  first = jax.random.fold_in(jax.random.PRNGKey(config.eval.seed), 1)
  generate = lambda params, prompts, key: builder.videos[
      'test' if np.array_equal(jax.random.key_data(key), jax.random.key_data(first)) else 'train']
  run = types.SimpleNamespace(config=config, step=1, video_shape=(6, 4, 4, 3), ema_params=None,
                              expert=None, stages=(), generate=generate)
  results = evaluate.evaluate_run(run, str(tmp_path), builder=builder)

  frames = {s: _stand_in_features(inception.video_frames(v, 3)) for s, v in builder.videos.items()}
  floor = frechet.frechet_distance_of_features(frames['train']['pool'], frames['test']['pool'])
  ceiling = inception.inception_score(frames['test']['logits_unbiased'], splits=2)
  train_is = inception.inception_score(frames['train']['logits_unbiased'], splits=2)
  assert floor > 1.0 and ceiling[0] != train_is[0]
  assert results['fid_frames/floor'] == pytest.approx(floor, rel=1e-9)
  # FID(test frames, test frames) = 0 in repeat 0, the floor in repeat 1.
  assert results['fid_frames/generated'] == pytest.approx(floor / 2, rel=1e-6)
  assert results['fid_frames/generated_std'] == pytest.approx(floor / 2, rel=1e-6)
  assert results['is_frames/ground_truth'] == pytest.approx(ceiling[0], rel=1e-12)
  assert results['is_frames/ground_truth_split_std'] == pytest.approx(ceiling[1], abs=1e-12)
  assert results['is_frames/generated'] == pytest.approx((ceiling[0] + train_is[0]) / 2, rel=1e-12)
  assert results['is_frames/generated_split_std'] == pytest.approx(
      (ceiling[1] + train_is[1]) / 2, abs=1e-12)
  assert results['fid_frames/num_generated'] == results['fid_frames/num_reference'] == 24
  assert results['is_frames/num_frames'] == 24 and results['is_frames/splits'] == 2
  assert results['num_repeats'] == 2


def test_validation_and_missing_weights():
  config = feature_classifier.get_config('smoke')
  frames = config_validation.video_shape(config)[0]
  config.eval.metrics = ('fid_frames', 'is_frames')
  config.eval.fvd_num_reference = 32
  with pytest.raises(UserError, match="'fid_frames' and 'is_frames' but config.eval.inception_"):
    config_validation.validate(config)
  config.eval.inception_weights = '/x.npz'
  config_validation.validate(config)
  config.eval.frames_per_video = frames + 1
  with pytest.raises(UserError, match=f'frames_per_video={frames + 1} must be an integer in'):
    config_validation.validate(config)
  config.eval.frames_per_video = 1
  config.eval.is_splits = config.eval.num_captions + 1
  with pytest.raises(UserError, match='config.eval.is_splits=.* must be an integer in'):
    config_validation.validate(config)
  config.eval.frames_per_video = 0  # every frame: enough for the splits again
  config_validation.validate(config)
  config.eval.metrics = ('fid_frames',)
  config.eval.fvd_num_reference = 1
  with pytest.raises(UserError, match='config.eval.fvd_num_reference=1 must lie in'):
    config_validation.validate(config)
  # Without evaluation in training the weights may wait for --mode eval, which refuses a missing
  # file before sampling.
  config.eval.fvd_num_reference = 32
  config.eval.inception_weights = ''
  config.train.eval_at_end, config.train.eval_every = False, 0
  config_validation.validate(config)
  with pytest.raises(UserError, match=r"config.eval.inception_weights='' is not a file: convert "
                                      'pt_inception'):
    evaluate.inception_feature_fn(config)

"""The learned-feature FVD: the moving_shapes video classifier (vdm_jax/metrics/video_classifier.py,
train_classifier.py), its save/load, the FVD with its floor (fvd.py) and its place in evaluation
(evaluate.evaluate_fvd) and config validation."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import feature_classifier
from vdm_jax import config_validation
from vdm_jax import evaluate
from vdm_jax.errors import UserError
from vdm_jax.metrics import fvd
from vdm_jax.metrics import train_classifier
from vdm_jax.metrics import video_classifier

# One pytest-xdist worker runs this file: its module fixture (a trained classifier) is built once.
pytestmark = pytest.mark.xdist_group('fvd_classifier')


def _mean_color(videos):
  """A stand-in feature network: the mean of each channel over the video [B, 3]."""
  return videos.astype(np.float64).mean(axis=(1, 2, 3))


def test_fvd_with_floor_and_batching():
  rng = np.random.default_rng(0)
  reference = rng.integers(0, 256, (40, 2, 4, 4, 3), dtype=np.uint8)
  floor = rng.integers(0, 256, (12, 2, 4, 4, 3), dtype=np.uint8)
  generated = (floor // 2).astype(np.uint8)  # darker: the mean and spread of the features move
  # Batches of 7 (the last padded with repeats) give the same features as one batch.
  np.testing.assert_allclose(fvd.features_in_batches(_mean_color, reference, batch_size=7),
                             _mean_color(reference))
  results = fvd.fvd_with_floor(_mean_color, generated=generated, reference=reference, floor=floor,
                               batch_size=7, name='fvd_test')
  assert results['fvd_test/num_generated'] == 12 and results['fvd_test/num_reference'] == 40
  assert results['fvd_test/generated'] > 10 * results['fvd_test/floor']
  same = fvd.fvd_with_floor(_mean_color, generated=reference, reference=reference,
                            floor=reference, batch_size=40, name='x')
  assert same['x/generated'] == same['x/floor'] < 1e-9


def test_labels_of_captions():
  labels = video_classifier.labels_of(['a red circle moving left', b'a white triangle moving up-right'],
                                      'moving_shapes')
  np.testing.assert_array_equal(labels['color'], [0, 6])
  np.testing.assert_array_equal(labels['shape'], [0, 2])
  np.testing.assert_array_equal(labels['direction'], [0, 5])
  with pytest.raises(ValueError, match='single-object'):
    video_classifier.labels_of(['a red circle moving left and a blue square moving up'],
                               'moving_shapes')


def _smoke_batch(config, n):
  from vdm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from vdm_jax.data import registry  # pylint: disable=g-import-not-at-top
  builder = registry.load_builder(config)
  videos, captions = pipeline.make_eval_source(builder=builder, split='train', num_examples=n)
  return builder, videos, captions


@pytest.fixture(scope='module')
def classifier_workdir(tmp_path_factory, smoke_data_dir):
  """A tiny classifier, trained a few steps on 4 smoke videos by train_classifier's step, saved.
  (train_classifier.train_and_evaluate, the CLI, runs the same step on random batches; three
  compilations were too slow for this file.)"""
  config = feature_classifier.get_config('smoke')
  config.data.data_dir = str(smoke_data_dir)
  config.classifier.widths = (4,)
  builder, videos, captions = _smoke_batch(config, 4)
  model = video_classifier.create_model(config.classifier, 'moving_shapes')
  rng = np.random.default_rng(0)
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), videos[:1])['params']
  # LeCun-normal kernels, zero biases, without compiling `init`.
  params = jax.tree.map(lambda a: jnp.asarray(
      rng.normal(0, 1 / np.sqrt(np.prod(a.shape[:-1])), a.shape) if a.ndim > 1 else np.zeros(a.shape),
      jnp.float32), abstract)
  tx = optax.adam(3e-2)
  step = train_classifier.make_train_step(model, tx)
  opt_state = tx.init(params)
  labels = video_classifier.labels_of(captions, 'moving_shapes')
  losses = []
  for _ in range(20):
    params, opt_state, loss = step(params, opt_state, videos, labels)
    losses.append(float(loss))
  workdir = str(tmp_path_factory.mktemp('classifier'))
  info = {'widths': [4], 'feature_dim': 8, 'video_shape': list(videos.shape[1:]),
          'data': {'name': 'moving_shapes', 'builder_config': 'smoke'}}
  video_classifier.save(workdir, params, info)
  return workdir, config, builder, model, params, losses


def test_classifier_learns_saves_and_loads(classifier_workdir, tmp_path):
  workdir, _, builder, model, params, losses = classifier_workdir
  assert losses[-1] < 0.5 * losses[0]  # fits its 4 videos
  loaded_model, variables, info = video_classifier.load(workdir)
  assert loaded_model == model and info['video_shape'] == [16, 32, 32, 3]
  from vdm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  videos, _ = pipeline.make_eval_source(builder=builder, split='test', num_examples=4)
  np.testing.assert_array_equal(
      video_classifier.make_feature_fn(loaded_model, variables)(videos),
      video_classifier.make_feature_fn(model, {'params': params})(videos))
  with pytest.raises(UserError, match='no trained feature classifier'):
    video_classifier.load(str(tmp_path / 'nothing_here'))
  other = str(tmp_path / 'other_classifier')  # parameters of another architecture
  video_classifier.save(other, params, {**info, 'widths': [4, 8]})
  with pytest.raises(UserError, match='does not load into this code'):
    video_classifier.load(other)


def test_evaluate_fvd_learned(classifier_workdir):
  workdir, config, builder, *_ = classifier_workdir
  config.eval.metrics = ('fvd_learned',)
  config.eval.classifier_workdir = workdir
  config.eval.fvd_num_reference = 32
  run = types.SimpleNamespace(config=config, video_shape=(16, 32, 32, 3))
  noise = np.random.default_rng(0).integers(0, 256, (8, 16, 32, 32, 3), dtype=np.uint8)
  results = evaluate.evaluate_fvd(run, builder, noise)
  assert results['fvd_learned/num_generated'] == 8
  assert results['fvd_learned/num_reference'] == 32
  # Noise is farther from the test videos than training videos are (the floor).
  assert results['fvd_learned/generated'] > 2 * results['fvd_learned/floor'] > 0
  run.video_shape = (8, 32, 32, 3)
  with pytest.raises(UserError, match='trained on videos of shape'):
    evaluate.evaluate_fvd(run, builder, noise[:, :8])
  config.eval.metrics = ('fvd_i3d',)
  config.eval.i3d_weights = workdir + '/missing.npz'
  with pytest.raises(UserError, match='missing.npz.* is not a file: convert rgb_imagenet.pt'):
    evaluate.evaluate_fvd(run, builder, noise[:, :8])


def test_reference_features_are_computed_once_per_workdir(classifier_workdir, tmp_path, monkeypatch):
  """A second evaluator with the same cache directory reads the reference's and floor's features
  instead of computing them, and gives the same distances; another reference set is computed."""
  import copy  # pylint: disable=g-import-not-at-top
  workdir, config, builder, *_ = classifier_workdir
  config = copy.deepcopy(config)
  config.eval.metrics = ('fvd_learned',)
  config.eval.classifier_workdir = workdir
  config.eval.fvd_num_reference = 16
  run = types.SimpleNamespace(config=config, video_shape=(16, 32, 32, 3))
  computed = []
  real = evaluate.fvd_feature_fn

  def counting(*args):
    feature_fn = real(*args)
    return lambda videos: computed.append(len(videos)) or feature_fn(videos)

  monkeypatch.setattr(evaluate, 'fvd_feature_fn', counting)
  noise = np.random.default_rng(0).integers(0, 256, (8, 16, 32, 32, 3), dtype=np.uint8)
  cache = str(tmp_path / 'cache')
  first = evaluate.FvdEvaluator(run, builder, 8, cache_dir=cache)
  assert sum(computed) == 16 + 8
  second = evaluate.FvdEvaluator(run, builder, 8, cache_dir=cache)
  assert sum(computed) == 16 + 8  # read back
  assert second.summary == first.summary
  np.testing.assert_allclose(second(noise)['fvd_learned/generated'],
                             first(noise)['fvd_learned/generated'], rtol=1e-6)
  computed.clear()
  config.eval.fvd_num_reference = 12
  evaluate.FvdEvaluator(run, builder, 8, cache_dir=cache)
  assert sum(computed) == 12  # a new reference; the floor's 8 videos are the same


def test_another_evaluation_of_a_step_never_overwrites_the_first(classifier_workdir, tmp_path):
  """Evaluating a step again with other settings (here the guidance weight) writes new files
  beside the first evaluation's, which stay as they were; the same settings again rewrite them."""
  import copy  # pylint: disable=g-import-not-at-top
  from vdm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  _, config, builder, *_ = classifier_workdir
  config = copy.deepcopy(config)
  config.eval.metrics = ('adherence',)
  config.eval.num_captions = 4
  config.sample.batch_size = 4
  true_videos, _ = pipeline.make_eval_source(builder=builder, split='test', num_examples=4)
  run = types.SimpleNamespace(config=config, step=7, video_shape=(16, 32, 32, 3), ema_params=None,
                              expert=None, stages=(),
                              generate=lambda params, prompts, key: true_videos)
  evaluate.evaluate_run(run, str(tmp_path), builder=builder)
  first = (tmp_path / 'eval' / 'step_7.json').read_bytes()
  config.sample.guidance_weight = 7.0
  evaluate.evaluate_run(run, str(tmp_path), builder=builder)
  assert (tmp_path / 'eval' / 'step_7.json').read_bytes() == first
  others = sorted(p.name for p in (tmp_path / 'eval').glob('step_7_*.json'))
  assert len(others) == 1
  other = json.loads((tmp_path / 'eval' / others[0]).read_text())
  assert other['settings']['guidance_weight'] == 7.0
  assert (tmp_path / 'eval' / others[0].replace('.json', '_report.html')).is_file()
  config.sample.guidance_weight = json.loads(first)['settings']['guidance_weight']
  evaluate.evaluate_run(run, str(tmp_path), builder=builder)  # the first settings: step_7 again
  assert sorted(p.name for p in (tmp_path / 'eval').glob('step_7_*.json')) == others


def test_validation_of_eval_metrics_and_classifier():
  config = feature_classifier.get_config('smoke')
  config.eval.metrics = ('adherence', 'fvd')
  with pytest.raises(UserError, match="'fvd', which is not a metric: use any of 'adherence'"):
    config_validation.validate(config)
  config.eval.metrics = ('fvd_learned',)
  config.eval.fvd_num_reference = 32
  with pytest.raises(UserError, match='config.eval.classifier_workdir is empty'):
    config_validation.validate(config)
  config.eval.metrics = ('fvd_i3d',)
  with pytest.raises(UserError, match='config.eval.i3d_weights is empty'):
    config_validation.validate(config)
  config.eval.i3d_weights = '/x.npz'
  config_validation.validate(config)
  # A config that does not evaluate while training (the paper configs' protocols) may leave the
  # weights to --mode eval, whose feature function refuses a missing file before sampling.
  config.eval.i3d_weights = ''
  config.train.eval_at_end, config.train.eval_every = False, 0
  config_validation.validate(config)
  with pytest.raises(UserError, match=r"config.eval.i3d_weights='' is not a file: convert"):
    evaluate.fvd_feature_fn(config, 'fvd_i3d', (16, 32, 32, 3))
  config.eval.i3d_weights = '/x.npz'
  config.eval.fvd_num_reference = 1000
  with pytest.raises(UserError, match='config.eval.fvd_num_reference=1000 must lie in'):
    config_validation.validate(config)
  config = feature_classifier.get_config('smoke')
  config.data.builder_config = 'two_objects'
  with pytest.raises(UserError, match='single-object moving_shapes'):
    config_validation.validate_classifier(config)


def test_repeated_evaluation_averages_each_repeat(classifier_workdir, tmp_path):
  """eval.num_repeats: each repeat samples from its own key; adherence and FVD are the mean over
  repeats with their standard deviation, and one repeat is the evaluation without the field.
  The stand-in sampler shows the test videos rolled by a key-dependent shift: adherence then
  varies between repeats, while the FVD of a reordered set does not."""
  import copy  # pylint: disable=g-import-not-at-top
  from vdm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from vdm_jax.data import tracker  # pylint: disable=g-import-not-at-top
  workdir, config, builder, *_ = classifier_workdir
  config = copy.deepcopy(config)
  config.eval.metrics = ('adherence', 'fvd_learned')
  config.eval.classifier_workdir = workdir
  config.eval.fvd_num_reference = 16
  config.eval.num_captions = 8
  config.sample.batch_size = 4
  true_videos, captions = pipeline.make_eval_source(builder=builder, split='test', num_examples=8)
  shift = lambda key: int(jax.random.randint(key, (), 0, 8))
  run = types.SimpleNamespace(config=config, step=3, video_shape=(16, 32, 32, 3), ema_params=None,
                              expert=None, stages=(),
                              generate=lambda params, prompts, key: np.roll(true_videos,
                                                                            shift(key), axis=0))
  single = evaluate.evaluate_run(run, str(tmp_path / 'one'), builder=builder)
  config.eval.num_repeats = 4
  repeated = evaluate.evaluate_run(run, str(tmp_path / 'four'), builder=builder)

  rng = jax.random.fold_in(jax.random.PRNGKey(config.eval.seed), 1)
  keys = [rng] + [jax.random.fold_in(rng, r) for r in range(1, 4)]
  assert len({shift(k) for k in keys}) > 1  # The repeats differ.
  alls = [tracker.score_caption_adherence(np.roll(true_videos, shift(k), axis=0), captions)['all']
          for k in keys]
  assert single['caption_adherence/all'] == alls[0]  # Repeat 0 is the single evaluation.
  assert 'num_repeats' not in single and 'caption_adherence/all_std' not in single
  assert repeated['num_repeats'] == 4
  np.testing.assert_allclose(repeated['caption_adherence/all'], np.mean(alls), rtol=1e-12)
  np.testing.assert_allclose(repeated['caption_adherence/all_std'], np.std(alls), rtol=1e-12)
  # Equal up to float32 features computed in other batches.
  np.testing.assert_allclose(repeated['fvd_learned/generated'], single['fvd_learned/generated'],
                             rtol=1e-5)
  assert repeated['fvd_learned/generated_std'] < 1e-5 * repeated['fvd_learned/generated']
  assert repeated['fvd_learned/floor'] == single['fvd_learned/floor']  # Computed once, the same.
  assert repeated['ground_truth/all'] == single['ground_truth/all'] == 1.0

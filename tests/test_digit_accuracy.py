"""Digit accuracy of moving_digits videos ('digit_accuracy'): captions -> the set of digits
(moving_digits.parse_caption, video_classifier.labels_of), the score of a classifier whose
predictions are set here (video_classifier.caption_accuracy), the digit classifier trained on the
smoke data and scored through evaluation (evaluate.evaluate_run), and config validation."""

import copy
import json
import os
import types

import jax
import numpy as np
import pytest

from experiments import digit_classifier
from experiments import feature_classifier
from vdm_jax import config_validation
from vdm_jax import evaluate
from vdm_jax.data import moving_digits
from vdm_jax.data import pipeline
from vdm_jax.data import registry
from vdm_jax.errors import UserError
from vdm_jax.metrics import train_classifier
from vdm_jax.metrics import video_classifier

# One pytest-xdist worker runs this file: its module fixture (a trained classifier) is built once.
pytestmark = pytest.mark.xdist_group('test_digit_accuracy')


def test_captions_map_to_the_set_of_digits():
  for digits in ((0,), (3, 7), (9, 9)):
    assert moving_digits.parse_caption(moving_digits.format_caption(digits)) == digits
  labels = video_classifier.labels_of(
      ['digit 3', b'digit 3 and digit 7', 'digit 7 and digit 3', 'digit 5 and digit 5'],
      'moving_digits')
  assert set(labels) == {'digits'}
  expected = np.zeros((4, 10), np.float32)
  expected[0, 3] = expected[1, [3, 7]] = expected[2, [3, 7]] = expected[3, 5] = 1
  np.testing.assert_array_equal(labels['digits'], expected)
  for bad in ('digit 12', 'digit', 'Digit 3', 'digit 3 and', 'digit 3 and digit', 'digit 3\n',
              ' digit 3', 'digit 3 digit 7', 'digit three', 'a red circle moving left', ''):
    with pytest.raises(ValueError, match='Not a Moving Digits caption'):
      video_classifier.labels_of(['digit 1', bad], 'moving_digits')
  with pytest.raises(ValueError, match='Not a Moving Shapes caption'):
    video_classifier.labels_of(['digit 1'], 'moving_shapes')
  with pytest.raises(ValueError, match="dataset='ucf101' has no caption classifier"):
    video_classifier.labels_of(['digit 1'], 'ucf101')


def _stand_in(rows):
  """A classifier whose logits for video i are rows[i], read from the video's first pixel (so
  batching and its padding are followed): the logits_fn of caption_accuracy."""
  rows = np.asarray(rows, np.float32)
  return lambda videos: {'digits': rows[videos[:, 0, 0, 0, 0]]}


def _ranking(*digits):
  """Logits ranking `digits` first, in that order, then the others (9, 8, ..., 0)."""
  order = list(digits) + [d for d in range(9, -1, -1) if d not in digits]
  row = np.zeros(10)
  row[order] = np.arange(10, 0, -1)
  return row


def test_score_of_a_stand_in_classifier():
  videos = np.zeros((5, 2, 4, 4, 3), np.uint8)
  videos[:, 0, 0, 0, 0] = np.arange(5)  # video i -> logits row i
  captions = ['digit 1', 'digit 2', 'digit 3 and digit 7', 'digit 7 and digit 3', 'digit 4']
  # Right: the caption's digits are the most probable ones, in any order; the last is wrong.
  rows = [_ranking(1), _ranking(2, 0), _ranking(3, 7), _ranking(3, 7, 1), _ranking(5, 4)]
  for batch_size in (1, 2, 5, 8):  # padded batches give the same score
    accuracy = video_classifier.caption_accuracy(_stand_in(rows), videos, captions,
                                                 dataset='moving_digits', batch_size=batch_size)
    assert accuracy == {'digits': 0.8, 'all': 0.8}
  # Wrong: a digit of two ranked third, a tie at the k-th place, all equal.
  rows = [_ranking(1), _ranking(2), _ranking(3, 1, 7), np.r_[_ranking(7, 3)[:9], 9.0],
          np.zeros(10)]
  assert rows[3][9] == rows[3][3] < rows[3][7]  # digit 9 ties digit 3 at second place
  assert video_classifier.caption_accuracy(_stand_in(rows), videos, captions,
                                           dataset='moving_digits', batch_size=2)['all'] == 0.4
  rows = [_ranking(1), _ranking(2), _ranking(7, 3), _ranking(9)]  # 3 of 4 right
  accuracy = video_classifier.caption_accuracy(_stand_in(rows), videos[:4], captions[:4],
                                               dataset='moving_digits', batch_size=3)
  assert accuracy['all'] == 0.75
  with pytest.raises(ValueError, match='5 videos but 4 captions'):
    video_classifier.caption_accuracy(_stand_in(rows), videos, captions[:4],
                                      dataset='moving_digits', batch_size=3)


def test_score_of_moving_shapes_heads():
  """The 'one' heads of moving_shapes: argmax per part, 'all' only when every part is right."""
  videos = np.zeros((2, 2, 4, 4, 3), np.uint8)
  videos[:, 0, 0, 0, 0] = (0, 1)
  heads = video_classifier.heads_of('moving_shapes')
  logits = {h: np.zeros((2, len(names)), np.float32) for h, (_, names) in heads.items()}
  for row, (color, shape, direction) in enumerate(((0, 0, 0), (6, 2, 4))):
    logits['color'][row, color] = logits['shape'][row, shape] = 1
    logits['direction'][row, direction] = 1
  logits_fn = lambda v: {h: l[v[:, 0, 0, 0, 0]] for h, l in logits.items()}
  accuracy = video_classifier.caption_accuracy(
      logits_fn, videos, ['a red circle moving left', 'a white triangle moving up-right'],
      dataset='moving_shapes', batch_size=2)
  assert accuracy == {'color': 1.0, 'shape': 1.0, 'direction': 0.5, 'all': 0.5}


@pytest.fixture(scope='module')
def classifier(tmp_path_factory, smoke_data_dir):
  """experiments/digit_classifier.py:smoke trained by train_classifier's CLI function (10 steps,
  saved) in a temp workdir, with the config of a diffusion run to evaluate with it."""
  config = digit_classifier.get_config('smoke')
  config.data.data_dir = str(smoke_data_dir)
  workdir = str(tmp_path_factory.mktemp('digit_classifier'))
  info = train_classifier.train_and_evaluate(config, workdir)
  return workdir, config, info


def _rolled_run(classifier):
  """A stand-in `train.Run` for evaluate_run with digit_accuracy alone, on the classifier's own
  test videos, whose sampler shows each true video for the caption of the next one; with the
  builder, those videos and captions."""
  workdir, config, info = classifier
  config = copy.deepcopy(config)
  n = info['test_videos']
  config.eval.metrics = ('digit_accuracy',)
  config.eval.classifier_workdir = workdir
  config.eval.num_captions = n  # the test videos the classifier's own accuracy was measured on
  config.sample.batch_size = 8
  config_validation.validate(config)
  builder = registry.load_builder(config)
  true_videos, captions = pipeline.make_eval_source(builder=builder, split='test', num_examples=n)

  def generate(params, prompts, rng):
    del params, rng
    assert prompts == captions
    return np.roll(true_videos, 1, axis=0)

  run = types.SimpleNamespace(config=config, step=7, video_shape=true_videos.shape[1:],
                              ema_params=None, expert=None, stages=(), generate=generate)
  return run, builder, true_videos, captions


def test_trained_classifier_through_evaluation(classifier, tmp_path, capsys):
  """The smoke classifier, trained and saved by train_classifier, loaded and run by evaluate_run:
  its scores in the results, the JSON and the printed table."""
  workdir, _, info = classifier
  assert info['data'] == {'name': 'moving_digits', 'builder_config': 'smoke'}
  run, builder, true_videos, captions = _rolled_run(classifier)
  results = evaluate.evaluate_run(run, str(tmp_path), builder=builder)
  # The ceiling is the classifier's test accuracy on the same videos, measured by training.
  assert results['digit_accuracy/ground_truth'] == info['test_accuracy']['all']
  assert results['digit_accuracy/num_videos'] == len(captions) == info['test_videos']
  logits_fn = video_classifier.make_logits_fn(*video_classifier.load(workdir)[:2])
  assert results['digit_accuracy/generated'] == video_classifier.caption_accuracy(
      logits_fn, np.roll(true_videos, 1, axis=0), captions, dataset='moving_digits',
      batch_size=8)['all']
  with open(os.path.join(tmp_path, 'eval', 'step_7.json')) as f:
    written = json.load(f)
  for key in ('digit_accuracy/generated', 'digit_accuracy/ground_truth'):
    assert written[key] == results[key]
  table = capsys.readouterr().out
  assert 'Digit accuracy at step 7' in table and 'ground truth' in table
  assert f'{results["digit_accuracy/ground_truth"]:.3f}' in table
  assert 'bpd/total' not in results and 'caption_adherence/all' not in results


def test_evaluation_scores_each_video_against_its_caption(classifier, tmp_path, monkeypatch):
  """With a perfect classifier (the digit the dataset drew, looked up by the video's pixels) in
  place of the trained one: the true videos score 1, the generated ones (the true video of the
  next caption) the fraction of captions whose neighbour names the same digits."""
  run, builder, true_videos, captions = _rolled_run(classifier)
  truth = {video.tobytes(): _ranking(*moving_digits.parse_caption(caption))
           for video, caption in zip(true_videos, captions)}
  oracle = lambda videos: {'digits': np.stack([truth[v.tobytes()] for v in videos])}
  monkeypatch.setattr(video_classifier, 'make_logits_fn', lambda model, variables: oracle)
  results = evaluate.evaluate_run(run, str(tmp_path), builder=builder)
  digits = [set(moving_digits.parse_caption(c)) for c in captions]
  expected = np.mean([shown == named for shown, named in zip(digits[-1:] + digits[:-1], digits)])
  assert expected < 0.5  # the rolled videos mostly show another digit
  assert results['digit_accuracy/ground_truth'] == 1.0
  assert results['digit_accuracy/generated'] == expected


def test_classifier_of_another_dataset_or_shape_is_refused(classifier, tmp_path):
  workdir, config, _ = classifier
  config = copy.deepcopy(config)
  config.eval.metrics = ('digit_accuracy',)
  config.eval.classifier_workdir = workdir
  videos = np.zeros((2, 16, 64, 64, 3), np.uint8)
  run = types.SimpleNamespace(config=config, video_shape=(8, 64, 64, 3))
  with pytest.raises(UserError, match='trained on videos of shape'):
    evaluate.evaluate_digit_accuracy(run, generated=videos[:, :8], true_videos=videos[:, :8],
                                     captions=['digit 1', 'digit 2'])
  # A moving_shapes classifier of 64x64 videos (the 'res64' data), saved with zero parameters.
  info = {**video_classifier.load(workdir)[2], 'data': {'name': 'moving_shapes'}}
  shapes = video_classifier.VideoClassifier(dataset='moving_shapes', widths=tuple(info['widths']),
                                            feature_dim=info['feature_dim'],
                                            time_conv=info['time_conv'], pool=info['pool'])
  abstract = jax.eval_shape(shapes.init, jax.random.PRNGKey(0), videos[:1])['params']
  shapes_workdir = str(tmp_path / 'shapes_classifier')
  video_classifier.save(shapes_workdir, jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract),
                        info)
  config.eval.classifier_workdir = shapes_workdir
  run.video_shape = (16, 64, 64, 3)
  with pytest.raises(UserError, match='reads moving_shapes captions, not moving_digits'):
    evaluate.evaluate_digit_accuracy(run, generated=videos, true_videos=videos,
                                     captions=['digit 1', 'digit 2'])


def test_validation_of_digit_accuracy():
  config = digit_classifier.get_config('smoke')
  config.eval.metrics = ('digit_accuracy',)
  with pytest.raises(UserError, match="'digit_accuracy' but config.eval.classifier_workdir is "
                                      'empty: set it to the workdir of python -m'):
    config_validation.validate(config)
  config.eval.classifier_workdir = '/some/classifier'
  config_validation.validate(config)
  config = feature_classifier.get_config('smoke')  # moving_shapes
  config.eval.metrics = ('adherence', 'digit_accuracy')
  config.eval.classifier_workdir = '/some/classifier'
  with pytest.raises(UserError, match="'digit_accuracy', which reads moving_digits captions, but "
                                      "config.data.name='moving_shapes'"):
    config_validation.validate(config)
  config = digit_classifier.get_config('smoke')
  config.data.name, config.data.builder_config = 'moving_mnist', 'default'
  with pytest.raises(UserError, match='single-object moving_shapes captions or moving_digits'):
    config_validation.validate_classifier(config)

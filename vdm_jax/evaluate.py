"""Evaluation: caption adherence of generated videos, scored by the analytic tracker, and the
likelihood of test videos.

For each of the first `config.eval.num_captions` captions of the evaluation split, one video is
sampled (EMA parameters, `config.sample.*` sampler settings) and the tracker checks color, shape
and direction of motion. The ground-truth videos of the same captions are scored alongside, as the
ceiling the tracker allows. Prints a table, writes JSON and a PNG of generated vs true videos.

Likelihood: the VDM variational bound (vdm_jax/likelihood.py: prior KL + diffusion term +
8-bit reconstruction) of the first `config.eval.bpd_num_videos` videos of the split given their
captions, in bits per dimension (an upper bound on -log2 p(video | caption) / dims), with
`config.eval.bpd_num_t` antithetic t samples per video for the diffusion term.

Frechet video distances (vdm_jax/metrics/fvd.py) of the same generated videos against the first
`config.eval.fvd_num_reference` videos of the split, with the floor of as many videos of the other
split: 'fvd_learned' on the features of a small classifier trained on the dataset's captions,
'fvd_i3d' on I3D's (FVD proper; user-supplied weights). The reference's and the floor's features
are kept in WORKDIR/eval/reference_features/ for the next evaluation (feature_cache.py).

Frame-level metrics (vdm_jax/metrics/inception.py; Inception-v3 with user-supplied weights):
'fid_frames', the FID of `config.eval.frames_per_video` evenly spaced frames of each generated video
against those of the FVDs' reference videos, with the floor of as many videos of the other split;
'is_frames', the Inception Score of the generated frames (mean over `config.eval.is_splits`
splits), with the true videos' frames of the same captions as the ceiling.

Video-level FID and IS (vdm_jax/metrics/c3d.py; C3D with user-supplied weights, UCF-101's protocol
after TGANv2): 'fid_c3d', the FID of C3D's fc7 features of the generated 16-frame videos against
those of the FVDs' reference videos, with the same floor; 'is_c3d', the Inception Score of C3D's
class predictions (`config.eval.is_splits` splits), with the true videos as the ceiling.

Digit accuracy (moving_digits, whose captions the tracker cannot read): the fraction of the
generated videos in which a classifier trained on moving_digits (eval.classifier_workdir) finds
the caption's digits and no other, with the true videos of the same captions as the ceiling.

What is sampled: by default (`config.eval.task='generate'`) one video per caption from noise, a
frame-conditioned model given the true video's first `config.train.num_cond_frames` frames (BAIR's
1 -> 15); a spatial super-resolution stage the true video average-pooled, a temporal one its
frames 0, s, 2s, ..., and their `super_resolve/...` or `interpolate/...` scores (below) compare
what they generate with the rest of the true video. With a conditional task of
vdm_jax/tasks.py (`config.eval.task`: 'predict', 'interpolate', 'super_resolve' or 'inpaint',
with config.sample's settings for it: num_known_frames, conditioning_method,
reconstruction_weight, ...) each video is generated from the observation of the true video of
its caption, by reconstruction guidance (or replacement); a frame-conditioned model is also
given the observation's frames it was trained on (tasks.network_given_frames). Kinetics-600's
5 -> 11 protocol is `eval.task='predict'` with `sample.num_known_frames=5`. Every metric then
scores these videos, and `<task>/psnr`, `<task>/ssim` (and on moving_shapes
`<task>/trajectory_error_px`) compare their unknown part with the truth (tasks.score), averaged
over repeats like the rest.

Repeats (the papers' protocols, e.g. BAIR's FVD of 100 x 256 samples): the generated videos are
sampled `config.eval.num_repeats` times from seeds derived from `config.eval.seed`; adherence, the
FVDs, FID, IS and digit accuracy are the mean over repeats, with their standard deviation as
`<name>_std`. Repeat 0 is the only one with one repeat, so a single-repeat evaluation is unchanged
by the field.

`config.eval.metrics` picks which of adherence, bpd, the FVDs, FIDs, ISs and digit accuracy are
computed. A report PNG and an HTML page (vdm_jax/eval_report.py) show the metric table, the metric
curves over training steps from the run's TensorBoard logs, and generated next to true videos (with
what the model was given, for conditional generation).
"""

import hashlib
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from rich import console as rich_console
from rich import table as rich_table

from vdm_jax import cascade
from vdm_jax import conditioning
from vdm_jax import eval_report
from vdm_jax import experts
from vdm_jax import likelihood
from vdm_jax import mesh as mesh_lib
from vdm_jax import sample as sample_lib
from vdm_jax import tasks
from vdm_jax import video_io
from vdm_jax.data import pipeline
from vdm_jax.data import tracker
from vdm_jax import metrics as metrics_lib
from vdm_jax.errors import UserError
from vdm_jax.noise_prior import NoisePrior
from vdm_jax.metrics import c3d
from vdm_jax.metrics import convert_c3d
from vdm_jax.metrics import convert_i3d
from vdm_jax.metrics import convert_inception
from vdm_jax.metrics import feature_cache
from vdm_jax.metrics import frechet
from vdm_jax.metrics import fvd
from vdm_jax.metrics import i3d
from vdm_jax.metrics import inception
from vdm_jax.metrics import video_classifier


def print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
  """rows: {row name: {column: value}}; one table on stdout."""
  columns = list(next(iter(rows.values())))
  table = rich_table.Table(title=title)
  table.add_column('videos')
  for column in columns:
    table.add_column(column, justify='right')
  for name, values in rows.items():
    table.add_row(name, *(f'{values[c]:.3f}' for c in columns))
  rich_console.Console().print(table)


def decoder_logsnrs(config: ml_collections.ConfigDict) -> tuple[float, ...]:
  """config.eval.bpd_decoder_logsnrs (absent in configs older than the field: none)."""
  return tuple(float(v) for v in config.eval.get('bpd_decoder_logsnrs', ()))


def decoder_key(decoder_logsnr: float) -> str:
  """The results prefix of the bound with the decoder at `decoder_logsnr`: 'decoder_13'."""
  return f'decoder_{decoder_logsnr:g}'


def make_bpd_fn(run):
  """Returns bpd(params, video [B, ...] float in [-1, 1], cond, rng) -> {term: bits/dim [B]},
  jitted and sharded like sampling (B = config.sample.batch_size), conditioned on the captions
  (cond: conditioning.prompt_inputs of them, arrays [B, ...])."""
  config = run.config

  def bpd(params, video, cond, rng):
    def network(z, logsnr):
      return run.model.apply({'params': params}, z, logsnr=logsnr, **cond,
                             drop_text=jnp.zeros((video.shape[0],), bool))
    dims = math.prod(video.shape[1:])
    out = {}
    # The schedule's own bound, then (same draws) the chain stopped at each eval.bpd_decoder_logsnrs.
    for decoder_logsnr in (None, *decoder_logsnrs(config)):
      terms = likelihood.vlb(network, video, rng=rng, logsnr_fn=run.logsnr_fn,
                             parameterization=config.diffusion.parameterization,
                             num_t=config.eval.bpd_num_t, decoder='discrete',
                             noise_prior=NoisePrior.from_config(config),
                             decoder_logsnr=decoder_logsnr)
      prefix = '' if decoder_logsnr is None else f'{decoder_key(decoder_logsnr)}/'
      out.update({prefix + k: v / (dims * math.log(2.0)) for k, v in terms.items() if k != 'bpd'})
    return out

  sharded, replicated = mesh_lib.batch_sharded(run.mesh), mesh_lib.replicated(run.mesh)
  # Parameters keep the layout they come in (replicated, or split by FSDP: XLA gathers them).
  return jax.jit(bpd, in_shardings=(None, sharded, sharded, replicated),
                 out_shardings=sharded)


def evaluate_bpd(run, builder) -> dict[str, float]:
  """Mean bits per dimension (and its terms, and the standard error of the total) of the first
  `config.eval.bpd_num_videos` videos of `config.eval.split`; {} when that is 0."""
  config = run.config
  # A config made before the field existed (a run started with older code) estimates none.
  n = config.eval.get('bpd_num_videos', 0)
  if n == 0:
    return {}
  videos, captions = pipeline.make_eval_source(builder=builder, split=config.eval.split,
                                               num_examples=n)
  batch = config.sample.batch_size
  pad = -n % batch  # the last chunk is filled with repeats, whose results are dropped
  videos = np.concatenate([videos, videos[np.arange(pad) % n]])
  captions = captions + [captions[i % n] for i in range(pad)]
  logging.info('Estimating bits/dim of %d %s videos (%d t samples each)', n, config.eval.split,
               config.eval.bpd_num_t)
  if run.bpd_fn is None:
    run.bpd_fn = make_bpd_fn(run)
  sharded = mesh_lib.batch_sharded(run.mesh)
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2)
  chunks = []
  for start in range(0, len(captions), batch):
    inputs = pipeline.to_model_inputs(
        {'video': videos[start:start + batch], 'caption': captions[start:start + batch]},
        max_text_length=config.data.max_text_length)
    cond = conditioning.prompt_inputs(config, captions[start:start + batch])
    global_inputs = jax.tree.map(
        lambda a: jax.make_array_from_callback(a.shape, sharded, lambda index, a=a: a[index]),
        [inputs['video'], cond])
    out = run.bpd_fn(run.ema_params, *global_inputs, jax.random.fold_in(rng, start))
    chunks.append({k: mesh_lib.to_host(v) for k, v in out.items()})
  per_video = {k: np.concatenate([c[k] for c in chunks])[:n] for k in chunks[0]}
  results = {f'bpd/{k}': float(np.mean(v)) for k, v in per_video.items()}
  for prefix in ('', *(f'{decoder_key(v)}/' for v in decoder_logsnrs(config))):
    results[f'bpd/{prefix}total_stderr'] = float(np.std(per_video[f'{prefix}total']) / math.sqrt(n))
  results['bpd/num_videos'] = n
  results['bpd/num_t'] = config.eval.bpd_num_t
  return results


FVD_METRICS = ('fvd_learned', 'fvd_i3d')


def load_classifier(config: ml_collections.ConfigDict, video_shape: tuple[int, ...], *,
                    dataset: str | None = None):
  """(model, variables) of the caption classifier in `config.eval.classifier_workdir`; UserError
  unless it was trained on videos of `video_shape` (and on `dataset`'s captions, when given)."""
  workdir = config.eval.classifier_workdir
  model, variables, info = video_classifier.load(workdir)
  if dataset is not None and model.dataset != dataset:
    raise UserError(f'the classifier in {workdir!r} reads {model.dataset} captions, not {dataset}: '
                    'train one on this config.data (python -m vdm_jax.metrics.train_classifier) '
                    'and set --config.eval.classifier_workdir to its workdir.')
  if tuple(info['video_shape']) != tuple(video_shape):
    raise UserError(f'the classifier in {workdir!r} was trained on videos of shape '
                    f'{tuple(info["video_shape"])}, not {tuple(video_shape)}: train one on this '
                    'config.data and set --config.eval.classifier_workdir to it.')
  return model, variables


def fvd_feature_fn(config: ml_collections.ConfigDict, metric: str,
                   video_shape: tuple[int, ...]) -> fvd.FeatureFn:
  """The features of an FVD of `config.eval.metrics`: 'fvd_learned' (the classifier in
  eval.classifier_workdir) or 'fvd_i3d' (I3D with the weights in eval.i3d_weights)."""
  if metric == 'fvd_learned':
    return video_classifier.make_feature_fn(*load_classifier(config, video_shape))
  if metric == 'fvd_i3d':
    if not os.path.isfile(config.eval.i3d_weights):
      raise UserError(f'config.eval.i3d_weights={config.eval.i3d_weights!r} is not a file: convert '
                      'rgb_imagenet.pt with python -m vdm_jax.metrics.convert_i3d and point it at '
                      'the .npz.')
    return i3d.make_feature_fn(convert_i3d.load_variables(config.eval.i3d_weights))
  raise ValueError(f'metric={metric!r}; allowed values: {FVD_METRICS}.')


def reference_and_floor(config: ml_collections.ConfigDict, builder,
                        num_generated: int) -> tuple[np.ndarray, np.ndarray]:
  """(reference, floor) videos uint8 [N, T, H, W, 3] of the FVDs and the frame FID: the first
  `eval.fvd_num_reference` videos of eval.split, and the first `num_generated` of the other
  split."""
  reference, _ = pipeline.make_eval_source(builder=builder, split=config.eval.split,
                                           num_examples=config.eval.fvd_num_reference)
  other_split = 'train' if config.eval.split == 'test' else 'test'
  floor, _ = pipeline.make_eval_source(builder=builder, split=other_split,
                                       num_examples=num_generated)
  return reference, floor


class FvdEvaluator:
  """The FVDs of `config.eval.metrics` against the first `eval.fvd_num_reference` videos of
  eval.split, with the reference features and the floor (the first `num_generated` videos of the
  other split against the same reference) computed once, for any number of generated sets."""

  def __init__(self, run, builder, num_generated: int, *, cache_dir: str | None = None):
    """cache_dir: where the reference's and floor's features are kept between evaluations
    (vdm_jax/metrics/feature_cache.py); None: computed each time."""
    config = run.config
    self.batch_size = config.sample.batch_size
    self.metrics = [m for m in FVD_METRICS if m in config.eval.get('metrics', ())]
    self.summary, self._reference, self._feature_fns = {}, {}, {}
    if not self.metrics:
      return
    reference, floor = reference_and_floor(config, builder, num_generated)
    for metric in self.metrics:
      self._feature_fns[metric] = fvd_feature_fn(config, metric, run.video_shape)
      weights = feature_cache.path_digest(config.eval.classifier_workdir if metric == 'fvd_learned'
                                          else config.eval.i3d_weights)
      cached = lambda videos, what, metric=metric, weights=weights: feature_cache.cached_features(
          cache_dir, name=metric, weights=weights, videos=videos,
          compute=lambda v: self._features(metric, v, what))
      self._reference[metric] = cached(reference,
                                       f'{len(reference)} {config.eval.split} videos (the reference)')
      floor_features = cached(floor, f'{len(floor)} videos of the other split (the floor)')
      self.summary.update({
          f'{metric}/floor': frechet.frechet_distance_of_features(floor_features,
                                                                  self._reference[metric]),
          f'{metric}/num_generated': num_generated,
          f'{metric}/num_reference': len(reference)})

  def _features(self, metric: str, videos: np.ndarray, what: str = '') -> np.ndarray:
    if what:
      logging.info('Computing %s features of %s', metric, what)
    return fvd.features_in_batches(self._feature_fns[metric], videos, batch_size=self.batch_size)

  def _distance(self, metric: str, videos: np.ndarray) -> float:
    return frechet.frechet_distance_of_features(self._features(metric, videos),
                                                self._reference[metric])

  def __call__(self, generated: np.ndarray) -> dict[str, float]:
    """{metric/generated: FD(generated, reference)} for generated uint8 [N, T, H, W, 3]."""
    return {f'{metric}/generated': self._distance(metric, generated) for metric in self.metrics}


FRAME_METRICS, C3D_METRICS = metrics_lib.FRAME_METRICS, metrics_lib.C3D_METRICS


def inception_feature_fn(config: ml_collections.ConfigDict):
  """Inception-v3 with the weights in eval.inception_weights: images uint8 [B, H, W, 3] ->
  {'pool': [B, 2048], 'logits_unbiased': [B, 1008], ...} (inception.make_feature_fn)."""
  path = config.eval.inception_weights
  if not os.path.isfile(path):
    raise UserError(f'config.eval.inception_weights={path!r} is not a file: convert '
                    'pt_inception-2015-12-05-6726825d.pth with python -m '
                    'vdm_jax.metrics.convert_inception and point it at the .npz.')
  return inception.make_feature_fn(convert_inception.load_variables(path))


def c3d_feature_fn(config: ml_collections.ConfigDict):
  """C3D with the weights in eval.c3d_weights, read as their protocol says: videos uint8
  [B, 16, H, W, 3] -> {'fc7': [B, 4096], 'logits': [B, num_classes]} (c3d.make_feature_fn)."""
  path = config.eval.c3d_weights
  if not os.path.isfile(path):
    raise UserError(f'config.eval.c3d_weights={path!r} is not a file: convert TGANv2\'s '
                    'conv3d_deepnetA_ucf.npz (with --mean mean2.npz) with python -m '
                    'vdm_jax.metrics.convert_c3d and point --config.eval.c3d_weights at the .npz.')
  variables, protocol = convert_c3d.load_variables(path)
  return c3d.make_feature_fn(variables, protocol=protocol)


class _FidAndIsEvaluator:
  """FID and Inception Score of one network's features, for the metrics of `config.eval.metrics`
  among (`fid_metric`, `is_metric`): the FID against the features of the FVDs' reference videos,
  with the floor (`num_generated` videos of the other split); the IS over `eval.is_splits` splits,
  with the ceiling of the first `num_generated` videos of eval.split (the true videos of the
  captions). Reference features, floor and ceiling are computed once (and kept in `cache_dir`,
  as FvdEvaluator's). Subclasses name the network (`_network`) and what it reads of a video
  (`_inputs`, `_per_video` items of `unit` each)."""
  fid_metric: str
  is_metric: str
  fid_key: str  # the features FID compares
  is_key: str  # the logits IS reads
  unit: str  # what the network scores: 'frames' or 'videos'
  network: str  # its name, for the log
  title: str  # what the printed tables score

  def __init__(self, run, builder, num_generated: int, *, cache_dir: str | None = None):
    """cache_dir: as FvdEvaluator's, for the reference's, floor's and ceiling's features."""
    config = run.config
    self.batch_size = config.sample.batch_size
    metrics = config.eval.get('metrics', ())
    self.metrics = [m for m in (self.fid_metric, self.is_metric) if m in metrics]
    self.summary = {}
    if not self.metrics:
      return
    self.splits = config.eval.is_splits
    self._feature_fn, weights_path, cache_name = self._network(config)
    weights = feature_cache.path_digest(weights_path)
    cached = lambda videos: feature_cache.cached_features(
        cache_dir, name=cache_name, weights=weights, videos=videos, compute=self._features)
    per_video = self._per_video(run.video_shape)
    fid, score = self.fid_metric, self.is_metric
    if fid in self.metrics:
      reference, floor = reference_and_floor(config, builder, num_generated)
      logging.info('%s features of %d %s of %d %s videos (the reference)', self.network,
                   per_video * len(reference), self.unit, len(reference), config.eval.split)
      self._reference = cached(reference)[self.fid_key]
      self.summary.update({f'{fid}/floor': self._fid(cached(floor)),
                           f'{fid}/num_generated': num_generated * per_video,
                           f'{fid}/num_reference': len(reference) * per_video})
    if score in self.metrics:
      true_videos, _ = pipeline.make_eval_source(builder=builder, split=config.eval.split,
                                                 num_examples=num_generated)
      mean, std = self._inception_score(cached(true_videos))
      self.summary.update({f'{score}/ground_truth': mean,
                           f'{score}/ground_truth_split_std': std,
                           f'{score}/num_{self.unit}': num_generated * per_video,
                           f'{score}/splits': self.splits})

  def _network(self, config: ml_collections.ConfigDict):
    """(feature_fn of `_inputs`' batches, the weights' path, the name of its cached features)."""
    raise NotImplementedError

  def _per_video(self, video_shape: tuple[int, ...]) -> int:
    return 1

  def _inputs(self, videos: np.ndarray) -> np.ndarray:
    return videos

  def _features(self, videos: np.ndarray) -> dict[str, np.ndarray]:
    return fvd.features_in_batches(self._feature_fn, self._inputs(videos),
                                   batch_size=self.batch_size)

  def _fid(self, features: dict[str, np.ndarray]) -> float:
    return frechet.frechet_distance_of_features(features[self.fid_key], self._reference)

  def _inception_score(self, features: dict[str, np.ndarray]) -> tuple[float, float]:
    return inception.inception_score(features[self.is_key], splits=self.splits)

  def __call__(self, generated: np.ndarray) -> dict[str, float]:
    """{<fid>/generated, <is>/generated (the mean over splits), <is>/generated_split_std} of
    `config.eval.metrics`, for generated uint8 [N, T, H, W, 3]."""
    if not self.metrics:
      return {}
    features = self._features(generated)
    scores = {}
    if self.fid_metric in self.metrics:
      scores[f'{self.fid_metric}/generated'] = self._fid(features)
    if self.is_metric in self.metrics:
      mean, std = self._inception_score(features)
      scores.update({f'{self.is_metric}/generated': mean,
                     f'{self.is_metric}/generated_split_std': std})
    return scores

  def print_tables(self, results: dict[str, Any], *, step: int, split: str) -> None:
    """The FID (with its floor) and the IS (with its ceiling) of `results`, where present."""
    fid, score, unit = self.fid_metric, self.is_metric, self.unit
    if f'{fid}/generated' in results:
      print_table(f'FID of {self.title} at step {step} ({results[f"{fid}/num_generated"]} {unit} '
                  f'vs {results[f"{fid}/num_reference"]} {split} {unit}; floor: as many {unit} '
                  'of the other split)',
                  {fid: {k: results[f'{fid}/{k}'] for k in ('generated', 'floor')}})
    if f'{score}/generated' in results:
      print_table(f'Inception Score of {self.title} at step {step} '
                  f'({results[f"{score}/num_{unit}"]} {unit}, {results[f"{score}/splits"]} '
                  'splits)', {name: {'IS': results[f'{score}/{key}'],
                                     'split std': results[f'{score}/{key}_split_std']}
                              for name, key in (('generated', 'generated'),
                                                ('ground truth', 'ground_truth'))})


class FrameEvaluator(_FidAndIsEvaluator):
  """'fid_frames' and 'is_frames' (_FidAndIsEvaluator) by Inception-v3 on `eval.frames_per_video`
  frames of each video (inception.video_frames). (A frame-conditioned model's given frames count
  among its frames where they are selected.)"""
  (fid_metric, is_metric), fid_key, is_key = FRAME_METRICS, 'pool', 'logits_unbiased'
  unit, network, title = 'frames', 'Inception', 'video frames'

  def _network(self, config):
    self.frames_per_video = config.eval.frames_per_video
    return (inception_feature_fn(config), config.eval.inception_weights,
            f'inception_{self.frames_per_video}_frames')

  def _per_video(self, video_shape):
    return len(inception.frame_indices(video_shape[0], self.frames_per_video))

  def _inputs(self, videos):
    return inception.video_frames(videos, self.frames_per_video)


class C3dEvaluator(_FidAndIsEvaluator):
  """'fid_c3d' and 'is_c3d' (_FidAndIsEvaluator) by C3D on whole 16-frame videos
  (vdm_jax/metrics/c3d.py; the UCF-101 protocol of TGANv2 and Ho et al. 2022): FID of fc7, IS of
  the softmax of fc8."""
  (fid_metric, is_metric), fid_key, is_key = C3D_METRICS, c3d.FEATURE_LAYER, 'logits'
  unit, network, title = 'videos', 'C3D', 'videos (C3D)'

  def _network(self, config):
    return c3d_feature_fn(config), config.eval.c3d_weights, 'c3d'


def evaluate_fvd(run, builder, generated: np.ndarray) -> dict[str, float]:
  """The FVDs of `config.eval.metrics` of `generated` (uint8 [N, T, H, W, 3]) against the first
  `eval.fvd_num_reference` videos of eval.split, and their floor: the first N videos of the other
  split against the same reference (vdm_jax/metrics/fvd.py); {} when no FVD is asked for."""
  evaluator = FvdEvaluator(run, builder, len(generated))
  return {**evaluator(generated), **evaluator.summary}


def mean_over_repeats(per_repeat: list[dict[str, float]]) -> dict[str, float]:
  """The mean of each score over repeats; with more than one, also `<name>_std` (the standard
  deviation over repeats, ddof 0) and `num_repeats`."""
  keys = per_repeat[0].keys()
  values = {k: np.array([scores[k] for scores in per_repeat], np.float64) for k in keys}
  out = {k: float(v.mean()) for k, v in values.items()}
  if len(per_repeat) > 1:
    out.update({f'{k}_std': float(v.std()) for k, v in values.items()})
    out['num_repeats'] = len(per_repeat)
  return out


class DigitAccuracyEvaluator:
  """Digit accuracy (video_classifier.caption_accuracy: the set of digits the classifier finds is
  the caption's) by the classifier in eval.classifier_workdir, loaded once; its ceiling, the
  accuracy on `true_videos` (uint8 [N, T, H, W, 3], video i of caption i), computed once into
  `summary`. Does nothing unless config.eval.metrics asks for 'digit_accuracy'."""

  def __init__(self, run, *, true_videos: np.ndarray, captions: list[str]):
    config = run.config
    self.summary, self._captions = {}, captions
    self._batch_size = config.sample.batch_size
    self.enabled = 'digit_accuracy' in config.eval.get('metrics', ())
    if not self.enabled:
      return
    self._logits_fn = video_classifier.make_logits_fn(
        *load_classifier(config, run.video_shape, dataset='moving_digits'))
    self.summary = {'digit_accuracy/ground_truth': self._accuracy(true_videos),
                    'digit_accuracy/num_videos': len(captions)}

  def _accuracy(self, videos: np.ndarray) -> float:
    return video_classifier.caption_accuracy(self._logits_fn, videos, self._captions,
                                             dataset='moving_digits',
                                             batch_size=self._batch_size)['all']

  def __call__(self, generated: np.ndarray) -> dict[str, float]:
    """{'digit_accuracy/generated': accuracy} of generated uint8 [N, T, H, W, 3]."""
    return {'digit_accuracy/generated': self._accuracy(generated)} if self.enabled else {}


def evaluate_digit_accuracy(run, *, generated: np.ndarray, true_videos: np.ndarray,
                            captions: list[str]) -> dict[str, float]:
  """Digit accuracy of `generated` and, the ceiling, of `true_videos` (both uint8 [N, T, H, W, 3],
  video i of caption i; DigitAccuracyEvaluator); {} when not asked for."""
  evaluator = DigitAccuracyEvaluator(run, true_videos=true_videos, captions=captions)
  return {**evaluator(generated), **evaluator.summary}


class EvalVideoSampler:
  """The videos an evaluation scores, for the captions of `true_videos` (uint8 [N, T, H, W, 3],
  video i of caption i): `sample(key)` -> uint8 [N, T, H, W, 3] (see the module docstring, "What
  is sampled"). `given`: uint8 [N, T, H, W, 3], what the model was given of each true video
  (pixels not given mid-grey, as tasks.conditioning_picture), or None when it was given nothing
  but the caption; `scores(videos)`: the conditional task's reconstruction scores ({} for
  'generate')."""

  def __init__(self, run, *, true_videos: np.ndarray, captions: list[str]):
    config, c = run.config, run.config.sample
    self.task = config.eval.get('task', 'generate')
    self._captions, self._run, self._dataset = captions, run, config.data.name
    self.given, self._conditioning, self._scored, self._scored_as = None, None, None, None
    truth = (true_videos.astype(np.float32) * 2 - 255) / 255  # As pipeline.to_model_inputs.
    self._true_videos = true_videos
    if self.task == 'generate':
      self._frames = {}
      low_res_factor = sample_lib.low_res_factor_of(config)
      frame_stride = sample_lib.frame_stride_of(config)
      if low_res_factor:  # A super-resolution stage: given the true videos pooled, scored vs them.
        self._scored_as = 'super_resolve'
        self._scored = tasks.task_conditioning(
            'super_resolve', truth, super_resolution_factor=low_res_factor)
        self.given = tasks.conditioning_picture(self._scored, video_shape=true_videos.shape[1:])
        self._frames = {'frames': self._scored.observation}
      elif frame_stride:  # A temporal one: given every s-th true frame, scored on the others.
        self._scored_as = 'interpolate'
        self._scored = tasks.task_conditioning('interpolate', truth, frame_stride=frame_stride)
        self.given = tasks.conditioning_picture(self._scored, video_shape=true_videos.shape[1:])
        self._frames = {'frames': sample_lib.given_frames(config, true_videos)}
      elif config.model.frame_conditioning:  # The true videos' first frames (video prediction).
        known = np.arange(true_videos.shape[1]) < config.train.num_cond_frames
        self.given = np.where(known[None, :, None, None, None], true_videos, 128).astype(np.uint8)
        self._frames = {'frames': true_videos}
      return
    self._conditioning = tasks.task_conditioning(
        self.task, truth, num_known_frames=c.num_known_frames,
        super_resolution_factor=c.super_resolution_factor, inpaint_fraction=c.inpaint_fraction)
    self.given = tasks.conditioning_picture(self._conditioning, video_shape=true_videos.shape[1:])
    self._scored, self._scored_as = self._conditioning, self.task
    if run.eval_task_generate is None:
      run.eval_task_generate = tasks.make_conditional_generate_fn(
          run.model, logsnr_fn=run.logsnr_fn, config=config, video_shape=run.video_shape,
          mesh=run.mesh, factor=self._conditioning.factor, expert=run.expert)

  def sample(self, key: jax.Array) -> np.ndarray:
    run = self._run
    if self._conditioning is None:
      return run.generate(run.ema_params, self._captions, key, **self._frames)
    return video_io.to_uint8(run.eval_task_generate(
        run.ema_params, self._captions, self._conditioning.observation, self._conditioning.mask,
        key))

  def scores(self, videos: np.ndarray) -> dict[str, float]:
    if self._scored is None:
      return {}
    per_clip = tasks.score(videos, self._true_videos, self._scored, dataset=self._dataset)
    return {f'{self._scored_as}/{k}': float(np.nanmean(v)) if np.any(np.isfinite(v)) else float('nan')
            for k, v in per_clip.items()}


def evaluation_settings(config: ml_collections.ConfigDict, expert=None) -> dict[str, Any]:
  """What decides an evaluation's results besides the checkpoint: its sampler and its protocol
  (and the high-noise expert sampled with, `experts.Expert`, when there is one)."""
  c, e = config.sample, config.eval
  settings = {'sampler': c.sampler, 'sample_steps': c.num_steps, 'guidance_weight': c.guidance_weight,
              'eta': c.eta, 'gamma': c.gamma, 'time_spacing': c.time_spacing, 'split': e.split,
              'num_captions': e.num_captions, 'num_repeats': e.get('num_repeats', 1),
              'seed': e.get('seed', c.seed), 'metrics': list(e.get('metrics', ('adherence', 'bpd'))),
              'task': e.get('task', 'generate'), 'fvd_num_reference': e.fvd_num_reference}
  if decoder_logsnrs(config):  # Only when set: the settings of earlier evaluations stay the same.
    settings['bpd_decoder_logsnrs'] = list(decoder_logsnrs(config))
  settings.update(experts.settings(expert))  # Likewise only with an expert.
  return settings


def output_stem(directory: str, step: int, settings: dict[str, Any]) -> str:
  """`step_<step>` for the first evaluation of a step, and for any evaluation with the same
  settings (it would give the same results); another evaluation of the step with other settings
  gets `step_<step>_<digest of its settings>`, so it never overwrites an earlier one's files."""
  stem = f'step_{step}'
  path = os.path.join(directory, f'{stem}.json')
  if os.path.isfile(path):
    with open(path) as f:
      earlier = json.load(f).get('settings')
    if earlier != json.loads(json.dumps(settings)):
      digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
      stem = f'{stem}_{digest}'
  return stem


def evaluate_run(run, workdir: str, *, builder=None) -> dict[str, Any]:
  """Caption adherence of `run.ema_params` (a `train.Run`); returns the scores of generated videos."""
  config: ml_collections.ConfigDict = run.config
  if builder is None:
    from vdm_jax import train  # pylint: disable=g-import-not-at-top
    builder = train.load_dataset_builder(config)
  available = len(builder.as_data_source(split=config.eval.split))
  if config.eval.num_captions > available:
    raise UserError(f'config.eval.num_captions={config.eval.num_captions} exceeds the '
                    f'{available} examples of the {config.eval.split!r} split: lower it.')
  true_videos, captions = pipeline.make_eval_source(builder=builder, split=config.eval.split,
                                                     num_examples=config.eval.num_captions)
  # Configs made before eval.seed / eval.num_repeats existed sampled once from sample.seed.
  rng = jax.random.fold_in(jax.random.PRNGKey(config.eval.get('seed', config.sample.seed)), 1)
  repeats = config.eval.get('num_repeats', 1)
  sampler = EvalVideoSampler(run, true_videos=true_videos, captions=captions)
  logging.info('Evaluating %d %s captions x %d repeat(s) (%s%s, %d steps, guidance %.2f)',
               len(captions), config.eval.split, repeats, config.sample.sampler,
               '' if sampler.task == 'generate' else f', task {sampler.task}',
               config.sample.num_steps, config.sample.guidance_weight)
  # A config made before eval.metrics existed evaluates what evaluation did then.
  metrics = tuple(config.eval.get('metrics', ('adherence', 'bpd')))
  # Reference features do not depend on the model: kept for the next evaluation of this workdir.
  cache_dir = os.path.join(workdir, 'eval', 'reference_features')
  fvd_evaluator = FvdEvaluator(run, builder, len(captions), cache_dir=cache_dir)
  frame_evaluator = FrameEvaluator(run, builder, len(captions), cache_dir=cache_dir)
  c3d_evaluator = C3dEvaluator(run, builder, len(captions), cache_dir=cache_dir)
  digit_evaluator = DigitAccuracyEvaluator(run, true_videos=true_videos, captions=captions)

  per_repeat = []
  for repeat in range(repeats):  # One set at a time: 100 x 256 BAIR videos would be 5 GB.
    key = rng if repeat == 0 else jax.random.fold_in(rng, repeat)
    videos = sampler.sample(key)
    if repeat == 0:
      generated = videos  # The one shown in the pictures.
    scores = sampler.scores(videos)
    if 'adherence' in metrics:
      scores.update({f'caption_adherence/{k}': float(v)
                     for k, v in tracker.score_caption_adherence(videos, captions).items()})
    scores.update(fvd_evaluator(videos))
    scores.update(frame_evaluator(videos))
    scores.update(c3d_evaluator(videos))
    scores.update(digit_evaluator(videos))
    per_repeat.append(scores)
    if repeats > 1:
      logging.info('Repeat %d/%d: %s', repeat + 1, repeats,
                   ', '.join(f'{k} {v:.4g}' for k, v in scores.items() if k.endswith(
                       ('/all', '/generated'))))

  results = {
      'step': run.step,
      'num_captions': len(captions),
      'sampler': config.sample.sampler,
      'sample_steps': config.sample.num_steps,
      'guidance_weight': config.sample.guidance_weight,
      'task': sampler.task,
  }
  results.update(mean_over_repeats(per_repeat))
  results.update(fvd_evaluator.summary)
  results.update(frame_evaluator.summary)
  results.update(c3d_evaluator.summary)
  results.update(digit_evaluator.summary)
  if 'adherence' in metrics:
    true_scores = tracker.score_caption_adherence(true_videos, captions)
    results.update({f'ground_truth/{k}': float(v) for k, v in true_scores.items()})
    generated_scores = {k: results[f'caption_adherence/{k}'] for k in true_scores}
  if 'bpd' in metrics:
    results.update(evaluate_bpd(run, builder))
  if jax.process_index() == 0:
    directory = os.path.join(workdir, 'eval')
    os.makedirs(directory, exist_ok=True)
    results['settings'] = {**evaluation_settings(config, run.expert),
                           **cascade.settings(run.stages)}
    stem = output_stem(directory, run.step, results['settings'])
    with open(os.path.join(directory, f'{stem}.json'), 'w') as f:
      json.dump({**results, 'captions': captions}, f, indent=2)
    shown = min(8, len(captions))
    # Per caption: (what the model was given,) generated, true.
    kinds = (('given',) if sampler.given is not None else ()) + ('generated', 'true')
    sets = {'given': sampler.given, 'generated': generated, 'true': true_videos}
    rows = np.stack([sets[kind][:shown] for kind in kinds], axis=1).reshape(-1, *generated.shape[1:])
    grid_png = os.path.join(directory, f'{stem}_generated_vs_true.png')
    if sampler.given is None:
      video_io.write_grid_png(grid_png, rows)
    else:
      video_io.write_labelled_grid_png(grid_png, [kind for _ in range(shown) for kind in kinds], rows)
    numbers = {k: v for k, v in results.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    curves = eval_report.read_scalars(os.path.join(workdir, 'tensorboard'))
    for name, value in numbers.items():  # this evaluation's point (train.py logs it afterwards)
      steps, values = curves.get(f'eval/{name}', (np.zeros(0, int), np.zeros(0)))
      keep = steps != run.step
      curves[f'eval/{name}'] = (np.append(steps[keep], run.step), np.append(values[keep], value))
    eval_report.write_report_png(
        os.path.join(directory, f'{stem}_report.png'), curves=curves, videos_png=grid_png,
        title=f'Evaluation at step {run.step} ({len(captions)} {config.eval.split} captions)',
        table=numbers, rows_caption=' | '.join(kinds))
    video_dir = os.path.join(directory, f'{stem}_videos')
    os.makedirs(video_dir, exist_ok=True)
    html_rows = []
    for i in range(shown):
      gifs = {}
      for kind in kinds:
        name = f'{i:02d}_{kind}.gif'
        video_io.write_gif(os.path.join(video_dir, name), video_io.upscale(sets[kind][i], min_size=96),
                           fps=config.sample.fps)
        gifs[kind] = os.path.join(os.path.basename(video_dir), name)
      html_rows.append((captions[i], gifs))
    eval_report.write_report_html(
        os.path.join(directory, f'{stem}_report.html'),
        title=f'Evaluation at step {run.step} ({len(captions)} {config.eval.split} captions'
              f'{"" if sampler.task == "generate" else ", task " + sampler.task})',
        table=numbers, report_png=f'{stem}_report.png', rows=html_rows)
    if 'adherence' in metrics:
      print_table(f'Caption adherence at step {run.step} ({len(captions)} {config.eval.split} '
                  'captions)', {'generated': {k: float(v) for k, v in generated_scores.items()},
                                'ground truth': {k: float(v) for k, v in true_scores.items()}})
    reconstruction = {k.split('/', 1)[1]: v for k, v in numbers.items()
                      if k.split('/')[0] in tasks.TEST_CLIP_TASKS and not k.endswith('_std')}
    if reconstruction:  # A conditional task's, or a super-resolution stage's, error vs the truth.
      name = next(k.split('/')[0] for k in numbers if k.split('/')[0] in tasks.TEST_CLIP_TASKS)
      print_table(f'{name} at step {run.step} ({len(captions)} {config.eval.split} videos, '
                  'against the true ones)', {'generated': reconstruction})
    if 'digit_accuracy/generated' in results:
      print_table(f'Digit accuracy at step {run.step} ({len(captions)} {config.eval.split} '
                  'captions)',
                  {'generated': {'digit accuracy': results['digit_accuracy/generated']},
                   'ground truth': {'digit accuracy': results['digit_accuracy/ground_truth']}})
    fvds = [m for m in FVD_METRICS if f'{m}/generated' in results]
    if fvds:
      reference = results[f'{fvds[0]}/num_reference']
      print_table(f'Frechet video distances at step {run.step} ({len(captions)} videos vs '
                  f'{reference} {config.eval.split} videos; floor: {len(captions)} videos of the '
                  'other split)', {m: {k: results[f'{m}/{k}'] for k in ('generated', 'floor')}
                                   for m in fvds})
    for evaluator in (frame_evaluator, c3d_evaluator):
      evaluator.print_tables(results, step=run.step, split=config.eval.split)
    if 'bpd/total' in results:
      print_table(f'Bits per dimension at step {run.step} ({results["bpd/num_videos"]} '
                  f'{config.eval.split} videos, {results["bpd/num_t"]} t samples each)',
                  {name: {k: results[f'bpd/{prefix}{k}'] for k in
                          ('total', 'total_stderr', 'prior', 'diffusion', 'reconstruction')}
                   for name, prefix in [('test videos (the schedule\'s chain)', ''),
                                        *((f'decoder at log-SNR {v:g}', f'{decoder_key(v)}/')
                                          for v in decoder_logsnrs(config))]})
    logging.info('Wrote %s', os.path.join(directory, f'{stem}.json'))
  return results


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             step: int | None = None) -> dict[str, Any]:
  """`--mode eval`: restores the checkpoint at `step` (default: the latest) and evaluates it."""
  from vdm_jax import train  # pylint: disable=g-import-not-at-top

  run = train.restore_for_inference(config, workdir, step)
  stages = cascade.restore_stages(config, run.video_shape)  # super-resolution stages, if any
  if stages and 'bpd' in config.eval.metrics and config.eval.bpd_num_videos:
    raise UserError('bits/dim of a cascade (config.sample.cascade_workdirs) is not implemented: '
                    "set --config.eval.bpd_num_videos=0 or --config.eval.metrics=\"('adherence',)\".")
  return evaluate_run(cascade.cascaded_run(run, stages), workdir)

"""A small video classifier of a built-in dataset's captions, whose penultimate features give a
learned-feature FVD for offline data (no downloaded weights): the Frechet distance (frechet.py)
between Gaussian fits of its features of two video sets, exactly as FVD uses I3D's logits.

It reads a video and predicts the parts of its caption, one linear head per part (`HEADS`):
  moving_shapes (single-object): color, shape and direction of motion, one class each (softmax);
  moving_digits (one or two digits): the set of digits shown, one 10-way head (a softmax over
    0-9; right when the caption's k digits are its k most probable), so that 'digit 3 and digit 7'
    and 'digit 7 and digit 3' (the caption order is the order the digits were drawn in, invisible
    in the video) are one label.
Its accuracy on a caption (`caption_accuracy`) is the score 'digit_accuracy' of evaluation.

Each level is a (2+1)D convolution (Tran et al. 2018): a 3x3 conv of every frame (stride 2), then
a 3-tap conv over time (stride 2 after the first level), each with a ReLU, so motion is visible to
it (`time_conv=False`: the spatial convs alone, every frame read on its own); a global pool
(`POOLS`) and a dense layer give the features [B, feature_dim].
Trained by vdm_jax/metrics/train_classifier.py, saved with orbax beside a JSON of its config.
"""

import functools
import json
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from vdm_jax.data import moving_digits
from vdm_jax.data import tracker
from vdm_jax.data.moving_shapes import COLORS, DIRECTIONS, SHAPES
from vdm_jax.errors import UserError
from vdm_jax.metrics import fvd

Dtype = Any

# config.data.name -> {caption part: (kind, class names in label order)}. Kinds (both a softmax over
# the classes): 'one', a part that names one class (trained to it; predicted: the argmax); 'set', a
# part that names a set S of k classes (trained to the uniform distribution over S; predicted: the
# k most probable, right only when they are S: every logit in S above every logit outside it).
# Told k by the caption, the classifier says which digits are there, not how many. A sigmoid per
# class, thresholded, would also judge the count, but it learned far slower here: after 200 steps
# of 32 one-digit videos (experiments/digit_classifier.py's network), 0% of test videos exactly
# right against 84% for the softmax.
HEADS = {
    'moving_shapes': {'color': ('one', tuple(COLORS)), 'shape': ('one', tuple(SHAPES)),
                      'direction': ('one', tuple(DIRECTIONS))},
    'moving_digits': {'digits': ('set', tuple(str(d) for d in range(10)))},
}


def heads_of(dataset: str) -> dict[str, tuple[str, tuple[str, ...]]]:
  """HEADS[dataset]; ValueError naming the datasets that have a classifier."""
  if dataset not in HEADS:
    raise ValueError(f'dataset={dataset!r} has no caption classifier; allowed: {tuple(HEADS)}.')
  return HEADS[dataset]


# How the last level's feature maps [B, T', H', W', C] become one vector [B, C]: 'mean' over time
# and space; 'max' over space (the strongest response, wherever the object is: a small digit on a
# black frame is not diluted by the background), then mean over time. On moving_digits, after 200
# steps (experiments/digit_classifier.py's network): 25% of test videos right with 'mean', 84% 'max'.
POOLS = ('mean', 'max')


class VideoClassifier(nn.Module):
  """uint8 (or float in [0, 255]) videos [B, T, H, W, 3] -> (features [B, feature_dim],
  {head: logits [B, classes]} for the heads of `HEADS[dataset]`)."""
  dataset: str = 'moving_shapes'
  widths: Sequence[int] = (16, 32, 64)
  feature_dim: int = 64
  time_conv: bool = True  # False: no temporal convs, every frame read on its own (see POOLS)
  pool: str = 'mean'  # one of POOLS
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, videos: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    B, T, H, W, C = videos.shape
    x = jnp.asarray(videos, jnp.float32) / 127.5 - 1.0
    for level, width in enumerate(self.widths):
      # Space: a 3x3 convolution of every frame, stride 2 (frames are batch dimensions).
      x = nn.relu(nn.Conv(width, (3, 3), strides=(2, 2), padding='SAME', dtype=self.dtype,
                          param_dtype=self.param_dtype, name=f'conv_space_{level}')(x))
      if not self.time_conv:
        continue
      # Time: a 3-tap convolution over frames (zero-padded), written as one matmul over the
      # frames t-1, t, t+1 side by side: with 3x3x3 convolutions XLA:CPU took 15x longer per
      # training step (7.7 s against 0.5 s, batch 32).
      padded = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
      taps = jnp.concatenate([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], axis=-1)
      x = nn.relu(nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype,
                           name=f'conv_time_{level}')(taps))
      if level > 0:
        x = x[:, ::2]  # time stride 2
    x = x.astype(jnp.float32)
    if self.pool == 'mean':
      x = jnp.mean(x, axis=(1, 2, 3))  # [B, widths[-1]]
    elif self.pool == 'max':
      x = jnp.mean(jnp.max(x, axis=(2, 3)), axis=1)
    else:
      raise ValueError(f'pool={self.pool!r}; allowed values: {POOLS}.')
    features = nn.relu(nn.Dense(self.feature_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                                name='features')(x)).astype(jnp.float32)
    assert features.shape == (B, self.feature_dim), features.shape
    logits = {head: nn.Dense(len(names), param_dtype=self.param_dtype, name=f'head_{head}')(features)
              for head, (_, names) in heads_of(self.dataset).items()}
    return features, logits


def labels_of(captions: Sequence[str | bytes], dataset: str) -> dict[str, np.ndarray]:
  """Captions of `dataset` -> {head: labels}: int32 class indices [N] of a 'one' head, float32
  multi-hot [N, classes] of a 'set' head. ValueError for a caption not of `dataset`'s grammar, and
  for moving_shapes captions of several objects (which object would be the label?)."""
  heads = heads_of(dataset)
  if dataset == 'moving_digits':
    hot = np.zeros((len(captions), len(heads['digits'][1])), np.float32)
    for row, caption in enumerate(captions):
      hot[row, list(moving_digits.parse_caption(caption))] = 1.0
    return {'digits': hot}
  parts = []
  for caption in captions:
    objects = tracker.parse_caption(caption)
    if len(objects) != 1:
      raise ValueError(f'The feature classifier reads single-object captions, got {caption!r}.')
    parts.append(objects[0])
  return {head: np.array([names.index(p[i]) for p in parts], np.int32)
          for i, (head, (_, names)) in enumerate(heads.items())}


def correct(logits: dict[str, np.ndarray], labels: dict[str, np.ndarray],
            dataset: str) -> dict[str, np.ndarray]:
  """{head: bool [N], whether the head's prediction (by its kind, see HEADS) is the label; 'all':
  every head right} of logits {head: [N, classes]} and labels_of's labels."""
  right = {}
  for head, (kind, _) in heads_of(dataset).items():
    if kind == 'one':
      right[head] = np.argmax(logits[head], -1) == labels[head]
    else:
      named = labels[head] > 0.5
      lowest_named = np.where(named, logits[head], np.inf).min(-1)
      highest_other = np.where(named, -np.inf, logits[head]).max(-1)
      right[head] = lowest_named > highest_other  # a tie is wrong
  right['all'] = functools.reduce(lambda a, b: a & b, right.values())
  return right


def caption_accuracy(logits_fn, videos: np.ndarray, captions: Sequence[str | bytes], *,
                     dataset: str, batch_size: int) -> dict[str, float]:
  """{head: fraction right, 'all': fraction with every head right} of `logits_fn` (uint8 videos
  [B, T, H, W, 3] -> {head: logits [B, classes]}, e.g. `make_logits_fn`) on videos [N, ...] and
  their captions, in batches of `batch_size` (the last padded)."""
  if len(videos) != len(captions):
    raise ValueError(f'{len(videos)} videos but {len(captions)} captions.')
  labels = labels_of(captions, dataset)
  logits = fvd.features_in_batches(logits_fn, videos, batch_size=batch_size)
  return {k: float(np.mean(v)) for k, v in correct(logits, labels, dataset).items()}


def create_model(classifier_config, dataset: str) -> VideoClassifier:
  """The classifier of `config.classifier` (widths, feature_dim, time_conv, pool) for `dataset`'s
  captions."""
  heads_of(dataset)  # a one-line error for a dataset without heads
  return VideoClassifier(dataset=dataset, widths=tuple(classifier_config.widths),
                         feature_dim=classifier_config.feature_dim,
                         time_conv=classifier_config.time_conv, pool=classifier_config.pool)


def params_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'classifier_params')


def info_path(workdir: str) -> str:
  return os.path.join(workdir, 'classifier.json')


def save(workdir: str, params: Any, info: dict[str, Any]) -> None:
  """Parameters (orbax) and `info` (JSON: the classifier config, video shape, accuracies) into
  `workdir`, replacing an earlier save."""
  os.makedirs(workdir, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(params_dir(workdir), params, force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()
  with open(info_path(workdir), 'w') as f:
    json.dump(info, f, indent=2)


def load(workdir: str) -> tuple[VideoClassifier, Any, dict[str, Any]]:
  """(model, params, info) saved by `save`; UserError naming the fix when there is none."""
  if not os.path.exists(info_path(workdir)):
    raise UserError(f'no trained feature classifier in {workdir!r} (no classifier.json): train '
                    f'one with python -m vdm_jax.metrics.train_classifier --config '
                    f'experiments/feature_classifier.py --workdir {workdir}, or set '
                    '--config.eval.classifier_workdir to its workdir.')
  with open(info_path(workdir)) as f:
    info = json.load(f)
  # Saved before time_conv and pool existed: the architecture of their defaults.
  model = VideoClassifier(dataset=info['data']['name'], widths=tuple(info['widths']),
                          feature_dim=info['feature_dim'], time_conv=info.get('time_conv', True),
                          pool=info.get('pool', 'mean'))
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, *info['video_shape']), jnp.uint8))['params']
  checkpointer = ocp.StandardCheckpointer()
  try:
    params = checkpointer.restore(params_dir(workdir), abstract)
  except (ValueError, FileNotFoundError) as error:  # orbax: another structure, or none saved
    raise UserError(f'the feature classifier in {workdir!r} does not load into this code\'s '
                    f'VideoClassifier ({str(error)[:120]}...): retrain it with python -m '
                    'vdm_jax.metrics.train_classifier.') from error
  finally:
    checkpointer.close()
  return model, {'params': params}, info


def make_feature_fn(model: VideoClassifier, variables: Any):
  """features(videos uint8 [B, T, H, W, 3]) -> float64 NumPy [B, feature_dim] (jitted)."""
  features = jax.jit(lambda variables, videos: model.apply(variables, videos)[0])
  return lambda videos: np.asarray(features(variables, videos), np.float64)


def make_logits_fn(model: VideoClassifier, variables: Any):
  """logits(videos uint8 [B, T, H, W, 3]) -> {head: NumPy [B, classes]} (jitted)."""
  logits = jax.jit(lambda variables, videos: model.apply(variables, videos)[1])
  return lambda videos: jax.device_get(logits(variables, videos))

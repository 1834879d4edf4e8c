"""A small video classifier for moving_shapes, whose penultimate features give a learned-feature
FVD for offline data (no downloaded weights): the Frechet distance (frechet.py) between Gaussian
fits of its features of two video sets, exactly as FVD uses I3D's logits.

It reads a single-object moving_shapes video and predicts the three parts of its caption: color,
shape and direction of motion. Each level is a (2+1)D convolution (Tran et al. 2018): a 3x3 conv of
every frame (stride 2), then a 3-tap conv over time (stride 2 after the first level), each with a
ReLU, so motion is visible to it; a global mean over time and space and a dense layer give the
features [B, feature_dim]; one linear head per caption part reads them.
Trained by vdm_jax/metrics/train_classifier.py, saved with orbax beside a JSON of its config.
"""

import json
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from vdm_jax.data import tracker
from vdm_jax.data.moving_shapes import COLORS, DIRECTIONS, SHAPES
from vdm_jax.errors import UserError

Dtype = Any

# Caption part -> its class names, in label order.
HEADS = {'color': tuple(COLORS), 'shape': tuple(SHAPES), 'direction': tuple(DIRECTIONS)}


class VideoClassifier(nn.Module):
  """uint8 (or float in [0, 255]) videos [B, T, H, W, 3] -> (features [B, feature_dim],
  {head: logits [B, classes]} for the heads of `HEADS`)."""
  widths: Sequence[int] = (16, 32, 64)
  feature_dim: int = 64
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
      # Time: a 3-tap convolution over frames (zero-padded), written as one matmul over the
      # frames t-1, t, t+1 side by side: with 3x3x3 convolutions XLA:CPU took 15x longer per
      # training step (7.7 s against 0.5 s, batch 32).
      padded = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
      taps = jnp.concatenate([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], axis=-1)
      x = nn.relu(nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype,
                           name=f'conv_time_{level}')(taps))
      if level > 0:
        x = x[:, ::2]  # time stride 2
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))  # [B, widths[-1]]
    features = nn.relu(nn.Dense(self.feature_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                                name='features')(x)).astype(jnp.float32)
    assert features.shape == (B, self.feature_dim), features.shape
    logits = {head: nn.Dense(len(names), param_dtype=self.param_dtype, name=f'head_{head}')(features)
              for head, names in HEADS.items()}
    return features, logits


def labels_of(captions: Sequence[str]) -> dict[str, np.ndarray]:
  """Single-object moving_shapes captions -> {head: int32 class indices [N]}; ValueError for
  captions of several objects (which part would be the label?) or of other datasets."""
  parts = []
  for caption in captions:
    objects = tracker.parse_caption(caption)
    if len(objects) != 1:
      raise ValueError(f'The feature classifier reads single-object captions, got {caption!r}.')
    parts.append(objects[0])
  return {head: np.array([names.index(p[i]) for p in parts], np.int32)
          for i, (head, names) in enumerate(HEADS.items())}


def create_model(classifier_config) -> VideoClassifier:
  """The classifier of `config.classifier` (widths, feature_dim)."""
  return VideoClassifier(widths=tuple(classifier_config.widths),
                         feature_dim=classifier_config.feature_dim)


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
  model = VideoClassifier(widths=tuple(info['widths']), feature_dim=info['feature_dim'])
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

"""Per-example preprocessing of videos stored at another shape than the model's (TFDS videos).

As in Video Diffusion Models (Ho et al. 2022, sec. 4): a clip of `num_frames` frames taken every
`frame_skip`-th frame from a random start, the shorter side resized to `resolution` and the longer
one center-cropped, an optional horizontal flip (their BAIR setting), class labels turned into
captions. Numpy and PIL only (no TensorFlow). `VideoPreprocessor` is a picklable grain transform:
`ds.map(p)` is the deterministic view (clip from frame 0, no flip) used for evaluation,
`ds.random_map(p)` the random one used for training.
"""

import dataclasses
import re
from typing import Any, Mapping

import grain
import numpy as np
from PIL import Image


def clip_span(*, num_frames: int, frame_skip: int) -> int:
  """Stored frames one clip covers: its first frame to its last, inclusive."""
  return (num_frames - 1) * frame_skip + 1


def take_clip(video: np.ndarray, *, num_frames: int, frame_skip: int, start: int) -> np.ndarray:
  """Frames start, start + k, ..., start + (T - 1) k of `video` [N, H, W, C] -> [T, H, W, C]."""
  span = clip_span(num_frames=num_frames, frame_skip=frame_skip)
  if not 0 <= start <= len(video) - span:
    raise ValueError(f'A clip of {num_frames} frames every {frame_skip} frame(s) spans {span} '
                     f'stored frames; this video has {len(video)} (start {start}): lower '
                     'config.data.num_frames or config.data.frame_skip.')
  return video[start:start + span:frame_skip]


def to_rgb(video: np.ndarray) -> np.ndarray:
  """[T, H, W, C] uint8 with C in (1, 3, 4) (or [T, H, W]) -> [T, H, W, 3]."""
  if video.ndim == 3:
    video = video[..., None]
  channels = video.shape[-1]
  if channels == 1:
    return np.repeat(video, 3, axis=-1)
  if channels in (3, 4):
    return video[..., :3]
  raise ValueError(f'Expected 1, 3 or 4 channels, got a video of shape {video.shape}.')


def resize_and_center_crop(video: np.ndarray, *, resolution: int) -> np.ndarray:
  """[T, H, W, 3] uint8 -> [T, r, r, 3]: shorter side resized to r, longer side center-cropped.

  Shrinking averages boxes of pixels (exact block means for integer factors), enlarging is
  bilinear. A video whose shorter side already is r is only cropped.
  """
  T, H, W, C = video.shape
  scale = resolution / min(H, W)
  new_h, new_w = max(resolution, round(H * scale)), max(resolution, round(W * scale))
  if (new_h, new_w) != (H, W):
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    video = np.stack([np.asarray(Image.fromarray(frame).resize((new_w, new_h), resample))
                      for frame in video])
  top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
  video = video[:, top:top + resolution, left:left + resolution]
  assert video.shape == (T, resolution, resolution, C), video.shape
  return video


def label_to_text(name: str) -> str:
  """'ApplyEyeMakeup' or 'apply_eye_makeup' -> 'apply eye makeup' (for captions)."""
  name = re.sub(r'(?<=[a-z0-9])(?=[A-Z])', ' ', name.replace('_', ' '))
  return ' '.join(name.lower().split())


@dataclasses.dataclass(frozen=True)
class VideoPreprocessor(grain.transforms.RandomMap):
  """Raw TFDS example -> {'video': uint8 [T, r, r, 3], 'caption': str}.

  Attributes:
    video_key: the example's video feature ([N, H, W, C] uint8, N >= the clip's span).
    num_frames: T, frames per clip.
    frame_skip: k, stored frames from one clip frame to the next (1 = consecutive).
    resolution: r, the clip's height and width.
    random_clip_start: training clips start anywhere the clip fits (else at frame 0).
    random_flip: training clips are flipped left-right with probability 1/2.
    label_key: a class-label feature (an int), or None.
    label_names: the label names, indexed by label.
    caption_key: a text feature used as the caption (takes precedence over the label), or None.
    caption_template: the caption of a labelled video, `{label}` replaced by its name.
    pass_keys: features copied unchanged into the output (e.g. 'text_embedding' [L, D] and
      'text_embedding_mask' [L] of precomputed text embeddings).

  The output also has 'label' (int) when `label_key` is set.
  """
  video_key: str
  num_frames: int
  frame_skip: int
  resolution: int
  random_clip_start: bool = True
  random_flip: bool = False
  label_key: str | None = None
  label_names: tuple[str, ...] = ()
  caption_key: str | None = None
  caption_template: str = 'a video of {label}'
  pass_keys: tuple[str, ...] = ()

  def caption(self, example: Mapping[str, Any]) -> str:
    if self.caption_key is not None:
      text = example[self.caption_key]
      return text.decode('utf-8') if isinstance(text, bytes) else str(text)
    if self.label_key is not None:
      label = int(example[self.label_key])
      name = self.label_names[label] if self.label_names else str(label)
      return self.caption_template.format(label=label_to_text(name))
    return ''  # Unconditional data: the empty caption.

  def convert(self, example: Mapping[str, Any], *, start: int, flip: bool) -> dict[str, Any]:
    video = take_clip(np.asarray(example[self.video_key]), num_frames=self.num_frames,
                      frame_skip=self.frame_skip, start=start)
    video = resize_and_center_crop(to_rgb(video), resolution=self.resolution)
    if flip:
      video = video[:, :, ::-1]
    out = {'video': np.ascontiguousarray(video, dtype=np.uint8), 'caption': self.caption(example)}
    if self.label_key is not None:
      out['label'] = int(example[self.label_key])
    out.update({key: example[key] for key in self.pass_keys})
    return out

  def map(self, example: Mapping[str, Any]) -> dict[str, Any]:
    """Deterministic: the clip from frame 0, not flipped (evaluation)."""
    return self.convert(example, start=0, flip=False)

  def __call__(self, example: Mapping[str, Any]) -> dict[str, Any]:
    return self.map(example)

  def random_map(self, example: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Random clip start and flip (training); `rng` is grain's per-element generator."""
    start = self._random_start(len(example[self.video_key]), rng)
    flip = bool(self.random_flip and rng.random() < 0.5)
    return self.convert(example, start=start, flip=flip)

  def _random_start(self, num_stored: int, rng: np.random.Generator) -> int:
    last_start = num_stored - clip_span(num_frames=self.num_frames, frame_skip=self.frame_skip)
    return int(rng.integers(0, last_start + 1)) if self.random_clip_start and last_start > 0 else 0

  def random_frame(self, example: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    """uint8 [r, r, 3]: one random frame that a training clip of `example` could hold, resized,
    cropped and flipped as its clips are (an appended image of joint image-video training)."""
    video = np.asarray(example[self.video_key])
    clip = take_clip(video, num_frames=self.num_frames, frame_skip=self.frame_skip,
                     start=self._random_start(len(video), rng))  # A view: one frame is resized.
    i = int(rng.integers(self.num_frames))
    frame = resize_and_center_crop(to_rgb(clip[i:i + 1]), resolution=self.resolution)[0]
    if self.random_flip and rng.random() < 0.5:
      frame = frame[:, ::-1]
    return np.ascontiguousarray(frame, dtype=np.uint8)

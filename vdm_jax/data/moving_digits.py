"""Moving Digits: Moving-MNIST-style videos of real handwriting, built offline.

One or two handwritten digits bounce inside a 64x64 frame (Srivastava et al. 2015's Moving MNIST
recipe: random start and direction, constant speed, reflected at the walls, overlapping digits
combined by their maximum), captioned `digit 3` or `digit 3 and digit 7`. The digits are the 1,797
8x8 scans that ship inside scikit-learn (`sklearn.datasets.load_digits`), upscaled; train and test
videos draw from disjoint sets of scans, so a test video never shows a scan seen in training.

Stored like Moving Shapes: TFDS array_record, read without TensorFlow, example i of a split a
function of (seed, split, i) only.
"""

import dataclasses
import functools
import re
from typing import Any

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from vdm_jax.data import moving_shapes
from vdm_jax.data import prepared

# Fraction of the scans reserved for the test split (by a fixed permutation of scan indices).
_TEST_FRACTION = 0.2
_SCAN_SPLIT_SEED = 1797
# Speed in px/frame at 64x64, scaled with resolution (Moving MNIST moves about 2-4 px/frame).
_SPEED_RANGE = (2.0, 4.0)


@functools.lru_cache(maxsize=1)
def load_scans() -> tuple[np.ndarray, np.ndarray]:
  """The scikit-learn digits: uint8 [1797, 8, 8] in [0, 255] and their int labels [1797]."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top  # Slow import: only here.
  digits = datasets.load_digits()
  images = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # Scans are 0..16.
  return images, digits.target.astype(np.int32)


def split_scan_indices(split: str) -> np.ndarray:
  """Sorted indices of the scans that `split` ('train' or 'test') may use; the two are disjoint."""
  images, _ = load_scans()
  order = np.random.default_rng(_SCAN_SPLIT_SEED).permutation(len(images))
  num_test = round(len(images) * _TEST_FRACTION)
  if split == 'test':
    return np.sort(order[:num_test])
  if split == 'train':
    return np.sort(order[num_test:])
  raise ValueError(f"split must be 'train' or 'test', got {split!r}.")


def upscale(scan: np.ndarray, size: int) -> np.ndarray:
  """uint8 [8, 8] -> [size, size], bilinear (smooth strokes, as MNIST's anti-aliased ones)."""
  return np.asarray(Image.fromarray(scan).resize((size, size), Image.Resampling.BILINEAR))


def bounce_trajectory(rng: np.random.Generator, *, num_frames: int, limit: float,
                      speed_range: tuple[float, float]) -> np.ndarray:
  """Top-left corners float [T, 2] (x, y) in [0, limit], reflected at the walls.

  Start uniform in the square, direction uniform in angle, speed uniform in `speed_range`.
  """
  position = rng.uniform(0, limit, size=2)
  angle = rng.uniform(0, 2 * np.pi)
  velocity = rng.uniform(*speed_range) * np.array([np.cos(angle), np.sin(angle)])
  corners = np.empty((num_frames, 2))
  for t in range(num_frames):
    corners[t] = position
    position = position + velocity
    for axis in range(2):  # Reflect (a step is shorter than the box, so once is enough).
      if position[axis] < 0:
        position[axis], velocity[axis] = -position[axis], -velocity[axis]
      elif position[axis] > limit:
        position[axis], velocity[axis] = 2 * limit - position[axis], -velocity[axis]
  return corners


def format_caption(digits) -> str:
  """[3, 7] -> 'digit 3 and digit 7'; `parse_caption` is its inverse."""
  return ' and '.join(f'digit {int(d)}' for d in digits)


_CAPTION = re.compile(r'digit [0-9]( and digit [0-9])*')


def parse_caption(caption: str | bytes) -> tuple[int, ...]:
  """'digit 3 and digit 7' -> (3, 7), in caption order; ValueError on anything else."""
  if isinstance(caption, bytes):
    caption = caption.decode('utf-8')
  if not _CAPTION.fullmatch(caption):
    raise ValueError(f"Not a Moving Digits caption ('digit 3' or 'digit 3 and digit 7'): "
                     f'{caption!r}')
  return tuple(int(phrase[-1]) for phrase in caption.split(' and '))


def render_video(rng: np.random.Generator, *, split: str, num_frames: int = 16,
                 resolution: int = 64, num_digits: int = 1,
                 digit_size: int = 28) -> tuple[np.ndarray, str, dict[str, Any]]:
  """Renders one captioned video from the scans of `split`.

  Returns:
    video: uint8 [T, H, W, 3], gray (equal channels), white strokes on black.
    caption: 'digit 3' or 'digit 3 and digit 7'.
    info: 'scan_indices' int [num_digits], 'digits' int [num_digits], 'corners' int [num_digits,
      T, 2] (x, y) of each digit's top-left pixel.
  """
  if num_digits not in (1, 2):
    raise ValueError(f'num_digits must be one of (1, 2), got {num_digits}.')
  if not 0 < digit_size <= resolution:
    raise ValueError(f'Need 0 < digit_size <= resolution, got {digit_size}, {resolution}.')
  images, labels = load_scans()
  scans = rng.choice(split_scan_indices(split), size=num_digits, replace=False)
  limit = resolution - digit_size
  speed_range = tuple(s * resolution / 64 for s in _SPEED_RANGE)
  frames = np.zeros((num_frames, resolution, resolution), np.uint8)
  all_corners = []
  for scan in scans:
    glyph = upscale(images[scan], digit_size)
    corners = np.rint(bounce_trajectory(rng, num_frames=num_frames, limit=limit,
                                        speed_range=speed_range)).astype(np.int32)
    for t, (x, y) in enumerate(corners):
      window = frames[t, y:y + digit_size, x:x + digit_size]
      np.maximum(window, glyph, out=window)
    all_corners.append(corners)
  video = np.repeat(frames[..., None], 3, axis=-1)
  digits = labels[scans]
  return video, format_caption(digits), dict(
      scan_indices=scans.astype(np.int32), digits=digits, corners=np.stack(all_corners))


# ----------------------------------------------------------------------------------
# TFDS builder
# ----------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class MovingDigitsConfig(tfds.core.BuilderConfig):
  """Builder config; custom (e.g. tiny test) configs need a name of their own."""
  num_frames: int = 16
  resolution: int = 64
  num_digits: int = 1
  digit_size: int = 28
  num_train: int = 10_000
  num_test: int = 1_000
  seed: int = 0


class MovingDigits(prepared.ProceduralBuilder):
  """Moving Digits: bouncing scikit-learn handwritten digits (no download)."""

  VERSION = tfds.core.Version('1.0.0')
  code_path = epath.Path(__file__)  # See moving_shapes.MovingShapes.code_path.
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      MovingDigitsConfig(name='default', description='16 x 64x64, 1 digit.'),
      MovingDigitsConfig(name='two_digits', num_digits=2, description='16 x 64x64, 2 digits.'),
      MovingDigitsConfig(name='smoke', num_train=256, num_test=64,
                         description='Small 16 x 64x64 set for smoke runs.'),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return self.dataset_info_from_configs(
        features=prepared.captioned_video_features(
            c,
            digits=tfds.features.Tensor(shape=(c.num_digits,), dtype=np.int32),
            scan_indices=tfds.features.Tensor(shape=(c.num_digits,), dtype=np.int32),
        ),
        disable_shuffling=True,  # Example i of a split is the video of (seed, split, i).
        homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html',
    )

  def _generate_examples(self, *, split: str, num_examples: int):
    c = self.builder_config
    for index in range(num_examples):
      video, caption, info = render_video(
          moving_shapes.example_rng(c.seed, split, index), split=split,
          num_frames=c.num_frames, resolution=c.resolution, num_digits=c.num_digits,
          digit_size=c.digit_size)
      yield index, {'video': video, 'caption': caption, 'digits': info['digits'],
                    'scan_indices': info['scan_indices']}


def load_builder(config_name: str | MovingDigitsConfig = 'default',
                 data_dir: str | None = None) -> MovingDigits:
  """The prepared builder (generated on first use); arguments as `moving_shapes.load_builder`."""
  return prepared.prepare(MovingDigits, config_name, data_dir)

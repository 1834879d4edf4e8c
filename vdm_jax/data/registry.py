"""Which dataset `config.data.name` means, and how to open it.

Every dataset comes back as a prepared builder whose `as_data_source(split=...)` is a random-access
source of {'video': uint8 [T, H, W, 3], 'caption': str or bytes} examples at the model's shape:

  'moving_shapes'        built in, rendered locally (`moving_shapes.py`), stored at the model's shape.
  'moving_digits'        built in, scikit-learn's handwritten digits bouncing (`moving_digits.py`).
  'video_folder'         the user's videos in `config.data.video_dir`, cut into captioned clips of
                         `num_frames` x `resolution`^2 (`video_folder.py`).
  any other name         a TFDS video dataset ('moving_mnist', 'ucf101', 'bair_robot_pushing_small',
                         ...), prepared by TFDS in `config.data.data_dir` (array_record), read
                         without TensorFlow where its features allow, and mapped by a
                         `preprocess.VideoPreprocessor` (clip, frame skip, resize and crop, flip,
                         label -> caption) to `config.data.num_frames` x `resolution`^2.

A mapped builder also carries `train_preprocessor`; `pipeline.make_train_dataset` applies its random
view (random clip start, flip) per example, per epoch.

`config.data.pool_factor` f > 1 shows a built-in dataset at 1/f of its resolution, every video
average-pooled f x f, and `config.data.frame_skip` s > 1 at 1/s of its frame rate, frames 0, s,
2s, ... (`ResampledBuilder`): the data of a cascade's base stage, whose super-resolution stages
are trained on the same pooling (frame_conditioning, 'low_res') and frames ('low_frame_rate').
"""

import contextlib
import dataclasses
import os
from typing import Any, Mapping

import grain
import ml_collections
import numpy as np

from vdm_jax.data import prepared
from vdm_jax.data import preprocess
from vdm_jax.errors import UserError

BUILT_IN = ('moving_shapes', 'moving_digits')


# ----------------------------------------------------------------------------------
# TFDS video datasets
# ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TfdsVideoSpec:
  """Where a TFDS dataset keeps its video, label and caption; our split -> TFDS split string."""
  video_key: str
  label_key: str | None = None
  caption_key: str | None = None
  splits: Mapping[str, str] = dataclasses.field(default_factory=dict)


# Datasets whose features name more than one video, or whose splits differ from train/test.
# Others are inferred from their features by `tfds_video_spec`.
TFDS_VIDEO_SPECS = {
    # The authors ship only the 10,000 test sequences (20 x 64x64x1): 90% / 10% of them.
    'moving_mnist': TfdsVideoSpec('image_sequence',
                                  splits={'train': 'test[:90%]', 'test': 'test[90%:]'}),
    'ucf101': TfdsVideoSpec('video', label_key='label'),
    # The main camera (image_aux1 is the second camera).
    'bair_robot_pushing_small': TfdsVideoSpec('image_main'),
}
_CAPTION_KEYS = ('caption', 'text', 'description', 'title')
# Features of precomputed text embeddings (config.model.text_encoder='precomputed'), passed
# through to the batches: float32 [L, D] and optionally its mask [L].
TEXT_EMBEDDING_KEYS = ('text_embedding', 'text_embedding_mask')


def tfds_video_spec(name: str, features) -> TfdsVideoSpec:
  """The known spec of `name`, or one inferred from its top-level `features`.

  Inferred: the video is the first uint8 feature of shape [N, H, W, C] with C in (1, 3), the label
  the first `ClassLabel`, the caption the first text feature named like a caption.
  """
  if name in TFDS_VIDEO_SPECS:
    return TFDS_VIDEO_SPECS[name]
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  shapes = features.shape
  video_key = next((key for key, shape in shapes.items()
                    if isinstance(shape, tuple) and len(shape) == 4 and shape[-1] in (1, 3)
                    and getattr(features[key], 'np_dtype', None) == np.uint8), None)
  if video_key is None:
    raise UserError(f'config.data.name={name!r}: no video feature (uint8 [frames, height, width, '
                    f'1 or 3]) among its features {sorted(shapes)}: use a TFDS video dataset.')
  label_key = next((key for key in shapes
                    if isinstance(features[key], tfds.features.ClassLabel)), None)
  caption_key = next((key for key in _CAPTION_KEYS
                      if key in shapes and isinstance(features[key], tfds.features.Text)), None)
  return TfdsVideoSpec(video_key, label_key=label_key, caption_key=caption_key)


def _preprocessor(data: ml_collections.ConfigDict, spec: TfdsVideoSpec,
                  features) -> preprocess.VideoPreprocessor:
  label_names = ()
  if spec.label_key is not None and spec.caption_key is None:
    label_names = tuple(features[spec.label_key].names)
  return preprocess.VideoPreprocessor(
      video_key=spec.video_key, num_frames=data.num_frames, frame_skip=data.frame_skip,
      resolution=data.resolution, random_clip_start=data.random_clip_start,
      random_flip=data.random_flip, label_key=spec.label_key, label_names=label_names,
      caption_key=spec.caption_key, caption_template=data.caption_template,
      pass_keys=tuple(k for k in TEXT_EMBEDDING_KEYS if k in features.shape))


class PreprocessedBuilder:
  """A prepared TFDS builder seen through a `VideoPreprocessor` (see module docstring)."""

  def __init__(self, builder, preprocessor: preprocess.VideoPreprocessor,
               splits: Mapping[str, str] | None = None):
    self.builder = builder
    self.train_preprocessor = preprocessor
    self.splits = dict(splits or {})

  @property
  def info(self):
    return self.builder.info

  def raw_data_source(self, split: str):
    """The stored examples of `split` (our split name; mapped to the TFDS split string)."""
    return self.builder.as_data_source(split=self.splits.get(split, split))

  def as_data_source(self, split: str) -> grain.MapDataset:
    """Deterministic examples at the model's shape: each clip from frame 0, never flipped."""
    return grain.MapDataset.source(self.raw_data_source(split)).map(self.train_preprocessor)


def pool_video(video: np.ndarray, factor: int) -> np.ndarray:
  """uint8 [T, H, W, C] -> uint8 [T, H/f, W/f, C]: the mean of each f x f block, rounded."""
  T, H, W, C = video.shape
  blocks = video.reshape(T, H // factor, factor, W // factor, factor, C)
  return np.rint(blocks.mean(axis=(2, 4), dtype=np.float32)).astype(np.uint8)


def resample_video(video: np.ndarray, *, pool_factor: int, frame_skip: int) -> np.ndarray:
  """uint8 [T, H, W, C] -> uint8 [T/s, H/f, W/f, C]: frames 0, s, 2s, ..., each pooled f x f."""
  video = video[::frame_skip]
  return pool_video(video, pool_factor) if pool_factor > 1 else video


class _ResampledSource:
  """A random-access source of examples whose videos are resampled (see `ResampledBuilder`)."""

  def __init__(self, source, *, pool_factor: int, frame_skip: int):
    self.source, self.pool_factor, self.frame_skip = source, pool_factor, frame_skip

  def __len__(self) -> int:
    return len(self.source)

  def _resampled(self, example: dict[str, Any]) -> dict[str, Any]:
    return {**example, 'video': resample_video(np.asarray(example['video']),
                                               pool_factor=self.pool_factor,
                                               frame_skip=self.frame_skip)}

  def __getitem__(self, index):
    return self._resampled(self.source[index])

  def __getitems__(self, indices):
    examples = (self.source.__getitems__(indices) if hasattr(self.source, '__getitems__')
                else [self.source[i] for i in indices])
    return [self._resampled(e) for e in examples]


class ResampledBuilder:
  """A prepared built-in dataset seen at 1/f of its resolution (config.data.pool_factor) and 1/s
  of its frame rate (config.data.frame_skip): each video's frames 0, s, 2s, ..., average-pooled
  f x f, when read; the stored dataset is the full one."""

  def __init__(self, builder, *, pool_factor: int = 1, frame_skip: int = 1):
    self.builder, self.pool_factor, self.frame_skip = builder, pool_factor, frame_skip

  def __getattr__(self, name):  # info, builder_config, label_of_caption, ...: the builder's.
    return getattr(self.builder, name)

  def as_data_source(self, split: str) -> _ResampledSource:
    return _ResampledSource(self.builder.as_data_source(split=split),
                            pool_factor=self.pool_factor, frame_skip=self.frame_skip)


def _tfds_commands(name: str, data: ml_collections.ConfigDict) -> str:
  data_dir = os.path.expanduser(data.data_dir)
  manual_dir = os.path.expanduser(data.manual_dir) if data.manual_dir else os.path.join(
      data_dir, 'downloads', 'manual')
  return (f'prepare it with `tfds build {name} --data_dir={data_dir} --file_format=array_record '
          f'--manual_dir={manual_dir}` (TensorFlow installed; datasets that cannot be downloaded '
          f'read their files from the manual_dir, set here by --config.data.manual_dir)')


@contextlib.contextmanager
def tfds_name_errors(name: str, field: str = 'config.data.name'):
  """TFDS's errors for an unknown dataset, or one that needs a missing module, as `UserError`s
  (`field`: the config field that named it)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets.video  # pylint: disable=g-import-not-at-top,unused-import  # Registers them.

  try:
    yield
  except tfds.core.registered.DatasetNotFoundError:
    what = (f'neither a built-in dataset {BUILT_IN + ("video_folder",)} nor a TFDS dataset'
            if field == 'config.data.name' else 'not a TFDS dataset')
    raise UserError(f'{field}={name!r} is {what}: check the name (see '
                    '`tfds.list_builders()`).') from None
  except ModuleNotFoundError as error:  # TFDS re-raises it without `.name`.
    module = error.name or ('tensorflow' if 'tensorflow' in str(error) else 'a missing module')
    raise UserError(f'TFDS dataset {name!r} needs {module} even to describe its features '
                    f'(e.g. tfds.features.Video), here and when reading: pip install {module}.'
                    ) from None


def check_dataset(data: ml_collections.ConfigDict) -> None:
  """A one-line `UserError` unless `data.name` (and for TFDS, `data.builder_config`) is a dataset
  we can open; builds nothing, so config validation refuses a misspelling before any work."""
  name = data.name
  factor = data.get('pool_factor', 1)
  if name in BUILT_IN:
    side = _built_in_config(data).resolution
    if not (isinstance(factor, int) and factor >= 1 and side % factor == 0):
      raise UserError(f'config.data.pool_factor={factor!r} must be an integer >= 1 dividing '
                      f'the {name} resolution {side}: set --config.data.pool_factor (1: none).')
    frames, skip = _built_in_config(data).num_frames, data.get('frame_skip', 1)
    if not (isinstance(skip, int) and skip >= 1 and frames % skip == 0):
      raise UserError(f'config.data.frame_skip={skip!r} must be an integer >= 1 dividing the '
                      f'{frames} frames of {name} videos: set --config.data.frame_skip (1: every '
                      'frame).')
    return
  if factor != 1:
    raise UserError(f'config.data.pool_factor={factor!r} pools the built-in datasets only: for '
                    f'{name} set config.data.resolution instead (and pool_factor=1).')
  if name == 'video_folder':
    return
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds_name_errors(name):
    builder_configs = tfds.builder_cls(name).builder_configs
  if data.builder_config not in ('', 'default', *builder_configs):
    raise UserError(f'config.data.builder_config={data.builder_config!r} is not a {name} config: '
                    f'use one of {sorted(builder_configs) or ["default"]}.')


def tfds_class_names(data: ml_collections.ConfigDict) -> tuple[str, ...] | None:
  """The names of TFDS dataset `data.name`'s class labels (its ClassLabel feature), from the
  builder's code (nothing is prepared); None when it has no label."""
  builder = open_tfds_builder(data.name, data)
  spec = tfds_video_spec(data.name, builder.info.features)
  if spec.label_key is None:
    return None
  return tuple(builder.info.features[spec.label_key].names)


def open_tfds_builder(name: str, data: ml_collections.ConfigDict):
  """The TFDS builder of `name` (not prepared), or a one-line `UserError`."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  config_name = None if data.builder_config in ('', 'default') else data.builder_config
  with tfds_name_errors(name):
    return tfds.builder(name, config=config_name, data_dir=os.path.expanduser(data.data_dir),
                        file_format='array_record')


def prepare_tfds_builder(builder, name: str, data: ml_collections.ConfigDict) -> None:
  """Prepares `builder` (TFDS dataset `name`) as array_record in `data.data_dir` unless it is
  already; a one-line `UserError` that says how when it cannot be prepared here."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if not builder.is_prepared():
    download_config = tfds.download.DownloadConfig(
        manual_dir=os.path.expanduser(data.manual_dir) if data.manual_dir else None)
    try:
      builder.download_and_prepare(file_format='array_record', download_config=download_config)
    except Exception as error:  # pylint: disable=broad-except  # Any cause: the same remedy.
      cause = (str(error).strip().splitlines() or [''])[0][:200]
      raise UserError(f'TFDS dataset {name!r} is not prepared in {data.data_dir} and could not be '
                      f'prepared here ({type(error).__name__}: {cause}): '
                      f'{_tfds_commands(name, data)}.') from None
  if 'array_record' not in {str(getattr(f, 'value', f)) for f in
                            builder.info.available_file_formats()}:
    raise UserError(f'TFDS dataset {name!r} is prepared in {data.data_dir} as '
                    f'{builder.info.file_format}, not array_record (random access): '
                    f'{_tfds_commands(name, data)}.')


def load_tfds_video_builder(data: ml_collections.ConfigDict) -> PreprocessedBuilder:
  """Opens (preparing when possible) TFDS dataset `data.name`, mapped to the model's shape."""
  name = data.name
  builder = open_tfds_builder(name, data)
  prepare_tfds_builder(builder, name, data)
  spec = tfds_video_spec(name, builder.info.features)
  frames = builder.info.features.shape[spec.video_key][0]
  span = preprocess.clip_span(num_frames=data.num_frames, frame_skip=data.frame_skip)
  if frames is not None and frames < span:
    raise UserError(f'config.data.num_frames={data.num_frames} every config.data.frame_skip='
                    f'{data.frame_skip} frame(s) spans {span} frames; {name!r} videos have '
                    f'{frames}: lower one of them.')
  return PreprocessedBuilder(builder, _preprocessor(data, spec, builder.info.features),
                             spec.splits)


# ----------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------


def load_builder(config: ml_collections.ConfigDict):
  """The prepared dataset of `config.data` (see module docstring)."""
  data = config.data
  if data.name in BUILT_IN:
    builder_cls = _built_in_class(data.name)
    _built_in_config(data)  # A one-line error for an unknown builder_config.
    builder = prepared.prepare(builder_cls, data.builder_config, data.data_dir)
    factor, skip = data.get('pool_factor', 1), data.get('frame_skip', 1)
    if factor == 1 and skip == 1:
      return builder
    return ResampledBuilder(builder, pool_factor=factor, frame_skip=skip)
  if data.name == 'video_folder':
    from vdm_jax.data import video_folder  # pylint: disable=g-import-not-at-top
    if not data.video_dir:
      raise UserError('config.data.name=video_folder needs a folder of videos: set '
                      '--config.data.video_dir.')
    return video_folder.load_builder(
        data.video_dir, num_frames=data.num_frames, resolution=data.resolution,
        frame_skip=data.frame_skip, test_fraction=data.test_fraction, data_dir=data.data_dir)
  return load_tfds_video_builder(data)


def video_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int, int]:
  """(frames, height, width, channels) the model sees, without preparing the dataset."""
  data = config.data
  if data.name in BUILT_IN:
    builder_config = _built_in_config(data)
    side = builder_config.resolution // data.get('pool_factor', 1)
    return (builder_config.num_frames // data.get('frame_skip', 1), side, side, 3)
  return (data.num_frames, data.resolution, data.resolution, 3)


def split_size(config: ml_collections.ConfigDict, split: str) -> int | None:
  """Examples in `split`, when known without preparing the dataset (built-in sets), else None."""
  if config.data.name in BUILT_IN:
    builder_config = _built_in_config(config.data)
    return builder_config.num_test if split == 'test' else builder_config.num_train
  return None


def _built_in_class(name: str):
  # Imported here: each pulls in its own dependencies (moving_digits: scikit-learn, lazily).
  if name == 'moving_shapes':
    from vdm_jax.data import moving_shapes  # pylint: disable=g-import-not-at-top
    return moving_shapes.MovingShapes
  if name == 'moving_digits':
    from vdm_jax.data import moving_digits  # pylint: disable=g-import-not-at-top
    return moving_digits.MovingDigits
  raise ValueError(f'{name!r} is not one of the built-in datasets {BUILT_IN}.')


def _built_in_config(data: ml_collections.ConfigDict) -> Any:
  builder_configs = _built_in_class(data.name).builder_configs
  if data.builder_config not in builder_configs:
    raise UserError(f'config.data.builder_config={data.builder_config!r} is not a {data.name} '
                    f'config: use one of {sorted(builder_configs)}.')
  return builder_configs[data.builder_config]

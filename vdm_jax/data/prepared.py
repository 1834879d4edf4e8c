"""Built-in TFDS datasets: their shared parts, and opening one (generated on first use)."""

import os
from unittest import mock

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle

# TFDS holds a split's serialized examples in memory up to 1 GB, then spills them to temporary
# bucket files written with tf.io.gfile: TensorFlow, which vdm_jax does not depend on (the
# 10,000 videos of 16 x 64x64 moving_digits, 2 GB, failed to build). Our builders write in index
# order (no shuffling to spill for), so the whole split stays in memory.
_MAX_IN_MEMORY_BYTES = 64 << 30


def prepare(builder_cls: type[tfds.core.GeneratorBasedBuilder], config,
            data_dir: str | None = None, **builder_kwargs):
  """The prepared array_record builder of `builder_cls`.

  Args:
    builder_cls: a built-in builder class (`MovingShapes`, `MovingDigits`, ...).
    config: a registered config name, or a custom `BuilderConfig` (e.g. tiny test configs).
    data_dir: TFDS data dir; None = TFDS default (~/tensorflow_datasets or $TFDS_DATA_DIR).
    **builder_kwargs: passed to the builder's constructor.
  """
  if isinstance(config, str) and config not in builder_cls.builder_configs:
    raise ValueError(f'config_name must be one of '
                     f'{tuple(builder_cls.builder_configs)}, got {config!r}.')
  if data_dir is not None:
    data_dir = os.path.expanduser(os.fspath(data_dir))  # TFDS takes '~' literally.
  builder = builder_cls(config=config, data_dir=data_dir, file_format='array_record',
                        **builder_kwargs)
  # A no-op when already prepared (TFDS checks the dataset_info in data_dir).
  with mock.patch.object(shuffle, 'MAX_MEM_BUFFER_SIZE',
                         max(shuffle.MAX_MEM_BUFFER_SIZE, _MAX_IN_MEMORY_BYTES)):
    builder.download_and_prepare(file_format='array_record')
  return builder


def captioned_video_features(config, **extra) -> tfds.features.FeaturesDict:
  """{'video', 'caption', **extra}: the features every built-in dataset has, and its own.

  The video, uint8 [T, H, W, 3] at the config's `num_frames` and `resolution`, is stored as raw
  bytes: 8x smaller than the default int64 upcast, and fast to read.
  """
  video = tfds.features.Tensor(shape=(config.num_frames, config.resolution, config.resolution, 3),
                               dtype=np.uint8, encoding=tfds.features.Encoding.BYTES)
  return tfds.features.FeaturesDict({'video': video, 'caption': tfds.features.Text(), **extra})


class ProceduralBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A dataset rendered here: `num_train` / `num_test` examples (from its builder config), example
  i of a split a function of (seed, split, i) only, stored in index order (grain shuffles).

  Subclasses define `_generate_examples(self, *, split, num_examples)`.
  """

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    c = self.builder_config
    return {
        'train': self._generate_examples(split='train', num_examples=c.num_train),
        'test': self._generate_examples(split='test', num_examples=c.num_test),
    }

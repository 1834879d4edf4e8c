"""Images for joint image-video training from a TFDS image dataset (`config.data.image_dataset`).

Ho et al. 2022 (sec. 4.3.1) append independent images to every training video. By default
(`image_dataset=''`) they are frames of other videos of the same dataset (the paper's choice,
`pipeline.WithAppendedImages`); a TFDS image dataset name ('cifar10', 'imagenet_resized/64x64',
'mnist', ...) draws them from that dataset's `config.data.image_split` instead, prepared in
`config.data.data_dir` like any TFDS dataset and read as array_record without TensorFlow.

Every image is made to look like a frame: RGB (grey is repeated, alpha dropped), shorter side
resized to the video's resolution and center-cropped (preprocess.resize_and_center_crop).
"""

import dataclasses
import os
from typing import Any

import ml_collections
import numpy as np

from vdm_jax.data import preprocess
from vdm_jax.data import registry
from vdm_jax.errors import UserError


def image_key(name: str, features) -> str:
  """The dataset's image feature: the one top-level `tfds.features.Image` (else a UserError)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  keys = [key for key in features.shape if isinstance(features[key], tfds.features.Image)]
  if len(keys) != 1:
    found = 'no image feature' if not keys else f'{len(keys)} image features {keys}'
    raise UserError(f'config.data.image_dataset={name!r} has {found} among its features '
                    f'{sorted(features.shape)}: use a TFDS dataset with one image feature.')
  return keys[0]


@dataclasses.dataclass(frozen=True)
class ImageSource:
  """Random access to a TFDS split's images as frames: index -> uint8 [r, r, 3].

  Attributes:
    source: the split's random-access examples (`builder.as_data_source`).
    key: the image feature of an example.
    resolution: r, the video's height and width.
  """
  source: Any
  key: str
  resolution: int

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> np.ndarray:
    image = np.asarray(self.source[int(index)][self.key])
    if image.dtype != np.uint8:
      raise ValueError(f'Expected uint8 images, got {image.dtype}.')
    frame = preprocess.to_rgb(image[None])  # One-frame video: [1, H, W, 3].
    return preprocess.resize_and_center_crop(frame, resolution=self.resolution)[0]


def load_image_source(data: ml_collections.ConfigDict, *, resolution: int) -> ImageSource | None:
  """The images of `data.image_dataset` (prepared when possible) at `resolution`; None when it
  is '' (frames of other videos are appended instead)."""
  name = data.image_dataset
  if not name:
    return None
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with registry.tfds_name_errors(name, field='config.data.image_dataset'):
    builder = tfds.builder(name, data_dir=os.path.expanduser(data.data_dir),
                           file_format='array_record')
  registry.prepare_tfds_builder(builder, name, data)
  key = image_key(name, builder.info.features)
  split = data.image_split
  try:
    source = builder.as_data_source(split=split)  # Any TFDS split string: 'train', 'train[:10%]'.
  except (KeyError, ValueError) as error:
    raise UserError(f'config.data.image_split={split!r} is not a split of {name!r} ({error}): use '
                    f'one of {sorted(builder.info.splits)}.') from None
  images = ImageSource(source, key, resolution)
  if len(images) < data.num_images_per_video:
    raise UserError(f'config.data.num_images_per_video={data.num_images_per_video} needs as many '
                    f'images, and {name!r} {split!r} has {len(images)}: lower it.')
  return images

"""grain input pipeline over a TFDS data source (no TensorFlow).

    source[process_index::process_count]   # disjoint shards that cover the split
      .shuffle(seed)                       # global shuffle, reseeded each epoch
      .repeat(num_epochs)                  # None = forever
      .random_map(preprocessor)            # only for builders that carry one (registry.py):
                                           # random clip start, flip, resize, caption
      (or, with num_images_per_video = K > 0: elements are source indices, in the same shuffled
       order, and .random_map(WithAppendedImages) reads each example, applies the preprocessor
       and appends K frames of other videos: joint image-video training)
      .batch(per_process_batch, drop_remainder=True)
      .map(to_model_inputs)                # uint8 -> float32 in [-1, 1], tokens
      .to_iter_dataset(ReadOptions(...))   # threads + prefetch

Every stage before `to_iter_dataset` is a random-access `MapDataset`, so the
iterator's state is just the next batch index ({'next_index': int}, JSON friendly):
`get_state()` / `set_state()` resume exactly, which orbax can save beside the model
(`grain.checkpoint.CheckpointSave` / `CheckpointRestore`).
"""

import dataclasses
import functools
import os
from typing import Any, Sequence

import grain
import numpy as np

from vdm_jax.data import preprocess
from vdm_jax.data import tokenizer
from vdm_jax.errors import UserError


def to_model_inputs(batch: dict[str, Any], *, max_text_length: int,
                    text_tokenizer: str = 'bytes') -> dict[str, np.ndarray]:
  """Maps a batch of raw examples to model inputs.

  Args:
    batch: {'video': uint8 [B, T, H, W, 3], 'caption': [B] bytes or str, ...}.
    max_text_length: L.
    text_tokenizer: 'bytes' or 'words' (tokenizer.TOKENIZERS).

  Returns:
    {'video': float32 [B, T, H, W, 3] in [-1, 1] (x / 127.5 - 1: 0 -> -1 and
    255 -> 1 exactly), 'tokens': int32 [B, L] (tokens of `text_tokenizer`, 0-padded)}, and
    where the batch has them (make_train_dataset(labels=True, text_embeddings=True)): 'label'
    int32 [B], 'text_embedding' float32 [B, L, D] and 'text_embedding_mask' bool [B, L] (cut or
    zero-padded to L; without a stored mask, rows that are all zero are padding).
  """
  video = np.asarray(batch['video'])
  if video.dtype != np.uint8:
    raise ValueError(f'Expected uint8 video, got {video.dtype}.')
  # k / 127.5 - 1 == (2k - 255) / 255: the numerator is an exact float32 integer, so
  # the one division rounds once (correctly rounded; `k / 127.5 - 1` in float32 rounds
  # twice and is off by an ulp for some k). In place: ~4x faster than a lookup table.
  video = np.multiply(video, np.float32(2), dtype=np.float32)
  video -= np.float32(255)
  video /= np.float32(255)
  inputs = {'video': video,
            'tokens': tokenizer.tokenize(_as_str(batch['caption']), max_length=max_text_length,
                                         kind=text_tokenizer)}
  if 'label' in batch:
    inputs['label'] = np.asarray(batch['label'], np.int32)
  if 'text_embedding' in batch:
    embedding = np.asarray(batch['text_embedding'], np.float32)[:, :max_text_length]
    mask = (np.asarray(batch['text_embedding_mask'], bool)[:, :max_text_length]
            if 'text_embedding_mask' in batch else np.any(embedding != 0, axis=-1))
    pad = max_text_length - embedding.shape[1]
    inputs['text_embedding'] = np.pad(embedding, ((0, 0), (0, pad), (0, 0)))
    inputs['text_embedding_mask'] = np.pad(mask, ((0, 0), (0, pad)))
  return inputs


def _as_str(captions) -> list[str]:
  """TFDS Text reads back as bytes without TensorFlow: normalise to str."""
  return [c.decode('utf-8') if isinstance(c, bytes) else str(c)
          for c in np.asarray(captions, dtype=object).reshape(-1)]


def _stack_batch(examples: Sequence[dict[str, Any]],
                 extra_keys: Sequence[str] = ()) -> dict[str, Any]:
  """Stacks videos (and `extra_keys`); keeps captions as a list (np.stack of bytes is not wanted)."""
  batch = {'video': np.stack([e['video'] for e in examples]),
           'caption': [e['caption'] for e in examples]}
  for key in extra_keys:
    if key in examples[0]:
      batch[key] = np.stack([np.asarray(e[key]) for e in examples])
  return batch


# The .npz of precomputed text embeddings beside a video_folder's videos: 'files' [N] (paths
# relative to the folder, as video_folder stores them), 'text_embedding' [N, L, D] (float32, any
# frozen encoder, e.g. T5) and optionally 'text_embedding_mask' [N, L] (default: non-zero rows).
TEXT_EMBEDDINGS_FILE = 'text_embeddings.npz'


@functools.lru_cache(maxsize=4)
def _embedding_table(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  try:
    with np.load(path, allow_pickle=False) as f:
      embedding = np.asarray(f['text_embedding'], np.float32)
      mask = (np.asarray(f['text_embedding_mask'], bool) if 'text_embedding_mask' in f
              else np.any(embedding != 0, axis=-1))
      return {str(name): (embedding[i], mask[i]) for i, name in enumerate(f['files'])}
  except (OSError, KeyError, ValueError) as error:
    raise UserError(f'cannot read precomputed text embeddings from {path} ({error}): write a .npz '
                    'with files [N], text_embedding [N, L, D] and optionally '
                    'text_embedding_mask [N, L].') from None


@dataclasses.dataclass(frozen=True)
class ConditioningInputs(grain.transforms.Map):
  """Adds what a non-text model is conditioned on to an example: 'label' (from its caption, for
  datasets whose labels are computed, e.g. moving_shapes.label_of_caption) and/or
  'text_embedding' and 'text_embedding_mask' (looked up by the example's 'file' in a
  TEXT_EMBEDDINGS_FILE, for video_folder)."""
  label_of_caption: Any = None
  embeddings_file: str | None = None

  def map(self, example: dict[str, Any]) -> dict[str, Any]:
    example = dict(example)
    if self.label_of_caption is not None:
      example['label'] = self.label_of_caption(example['caption'])
    if self.embeddings_file is not None:
      name = example['file']
      name = name.decode('utf-8') if isinstance(name, bytes) else str(name)
      table = _embedding_table(self.embeddings_file)
      if name not in table:
        raise UserError(f'{self.embeddings_file} has no text embedding of {name!r}: add it '
                        '(config.model.text_encoder=\'precomputed\').')
      example['text_embedding'], example['text_embedding_mask'] = table[name]
    return example


@dataclasses.dataclass(frozen=True)
class WithAppendedImages(grain.transforms.RandomMap):
  """Source index -> its training example with K independent images appended along time.

  Joint image-video training (Ho et al. 2022, sec. 4.3.1: random independent image frames
  concatenated to the end of each video, chosen from random videos of the same dataset). Each
  image is one random frame of another example of the split: K distinct examples, never the
  video's own (for video_folder an example is a clip, so another clip of the same file may be
  drawn); or, with `images` (config.data.image_dataset), K distinct images of that dataset.
  Processes other than 0 draw them from a stream of their own: grain seeds by position in the
  process's shard, which is the same on every process. The train step tells the model
  (`num_images=K`), whose temporal layers then keep every image to itself.

  Captions: the whole clip is trained under the video's caption. The U-Net's text conditioning
  (cross-attention and the pooled embedding) is per example, shared by all T + K frames, so the
  null text for the images alone would need per-frame conditioning in the U-Net; the paper does
  not say how it conditioned its images. On captioned data the caption then rarely describes the
  images, which teach the one-frame output frames of any caption; unconditional data (BAIR's
  empty captions) lose nothing.

  Attributes:
    source: the split's random-access examples: raw ones when `preprocessor` is set, else
      {'video': uint8 [T, H, W, 3], 'caption': bytes or str} at the model's shape.
    num_images: K >= 1, below the number of examples.
    preprocessor: the builder's `train_preprocessor` (TFDS datasets), or None.
    images: an `image_dataset.ImageSource` (index -> uint8 [H, W, 3] at the video's shape) to
      draw the images from instead of the videos' frames, or None.
    process_index: this process's index.
  """
  source: Any
  num_images: int
  preprocessor: preprocess.VideoPreprocessor | None = None
  images: Any = None
  process_index: int = 0

  def random_map(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
    """{'video': uint8 [T + K, H, W, 3], 'caption': the video's}; `rng` is grain's, seeded by
    (seed, position), so the example is a function of its position and resumes exactly."""
    index = int(index)
    example = self.source[index]
    # The preprocessor draws first from the same generator as without images, so the video
    # part is exactly the clip that a run with K = 0 trains on.
    if self.preprocessor is not None:
      example = self.preprocessor.random_map(example, rng)
    if self.process_index:
      rng = np.random.default_rng((int(rng.integers(2**63)), self.process_index))
    if self.images is not None:
      chosen = rng.choice(len(self.images), size=self.num_images, replace=False)
      images = np.stack([self.images[int(i)] for i in chosen])
    else:
      # K distinct examples among the other N - 1: draw from 0..N-2 and skip over `index`.
      others = rng.choice(len(self.source) - 1, size=self.num_images, replace=False)
      others = [int(i) + (i >= index) for i in others]
      images = np.stack([self._random_frame(self.source[i], rng) for i in others])
    video = example['video']
    assert images.shape == (self.num_images, *video.shape[1:]), (images.shape, video.shape)
    # Everything else of the example (its label, text embedding, ...) stays the video's.
    return {**example, 'video': np.concatenate([video, images])}

  def _random_frame(self, example: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """uint8 [H, W, 3]: one frame of `example` as training sees its frames."""
    if self.preprocessor is not None:
      return self.preprocessor.random_frame(example, rng)
    video = example['video']
    return video[rng.integers(len(video))]


def _process_info(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top  # Only for the defaults.
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'Need 0 <= process_index < process_count, got '
                     f'{process_index}, {process_count}.')
  return process_index, process_count


def make_train_dataset(
    *,
    builder,
    split: str,
    global_batch_size: int,
    seed: int,
    max_text_length: int,
    text_tokenizer: str = 'bytes',
    process_index: int | None = None,
    process_count: int | None = None,
    num_epochs: int | None = None,
    num_images_per_video: int = 0,
    image_source: Any = None,
    labels: bool = False,
    text_embeddings: bool = False,
) -> grain.MapDataset:
  """The random-access dataset of this process's batches (see module docstring).

  Args:
    builder: a prepared TFDS builder (e.g. `moving_shapes.load_builder(...)`), or a
      `registry.PreprocessedBuilder`, whose `train_preprocessor` maps its raw examples.
    split: 'train' or 'test' (any TFDS split string).
    global_batch_size: summed over processes; must divide by process_count.
    seed: shuffle seed (epoch e uses seed + e, see grain's ShuffleMapDataset).
    max_text_length: L, token length.
    text_tokenizer: 'bytes' or 'words' (config.model.text_tokenizer).
    process_index, process_count: this process's shard; default jax's.
    num_epochs: None repeats forever.
    num_images_per_video: K, independent images appended to every video (`WithAppendedImages`):
      batches of [b, T + K, H, W, 3]. 0: videos only.
    image_source: where those images come from: None for frames of other videos of the split,
      else an `image_dataset.ImageSource` (config.data.image_dataset).
    labels: batches also carry 'label' (class-conditional models): the examples' own (TFDS
      class labels), or computed from the caption by the builder's `label_of_caption`.
    text_embeddings: batches also carry 'text_embedding' and 'text_embedding_mask' (precomputed
      text embeddings): the examples' own (a TFDS float32 feature 'text_embedding' [L, D], and
      optionally 'text_embedding_mask'), or for video_folder those of TEXT_EMBEDDINGS_FILE in
      the folder.
  """
  process_index, process_count = _process_info(process_index, process_count)
  if global_batch_size % process_count:
    raise ValueError(f'global_batch_size={global_batch_size} must be divisible by '
                     f'process_count={process_count}.')
  preprocessor = getattr(builder, 'train_preprocessor', None)
  source = (builder.raw_data_source(split) if preprocessor is not None
            else builder.as_data_source(split=split))
  if num_images_per_video and image_source is None and len(source) <= num_images_per_video:
    raise UserError(f'config.data.num_images_per_video={num_images_per_video} needs more other '
                    f'videos than the {len(source)} of the {split!r} split: lower it.')
  # With appended images the elements are source indices (shuffled exactly as the examples
  # would be), so that each example knows which video is its own.
  ds = (grain.MapDataset.range(len(source)) if num_images_per_video
        else grain.MapDataset.source(source))
  # Shard before shuffling: shards are fixed, disjoint and cover the split, and each
  # process still sees a fresh order of its shard every epoch.
  ds = ds[process_index::process_count]
  ds = ds.shuffle(seed=seed).repeat(num_epochs)
  # After repeat: each epoch draws new clip starts, flips (and images); the generator is seeded
  # by (seed, index), so a restored iterator continues exactly.
  if num_images_per_video:
    ds = ds.random_map(WithAppendedImages(source, num_images_per_video, preprocessor,
                                          images=image_source, process_index=process_index),
                       seed=seed)
  elif preprocessor is not None:
    ds = ds.random_map(preprocessor, seed=seed)
  extra_keys = []
  if labels or text_embeddings:
    add = _conditioning_inputs(builder, source, labels=labels, text_embeddings=text_embeddings)
    if add is not None:
      ds = ds.map(add)
    extra_keys = (['label'] if labels else []) + (
        ['text_embedding', 'text_embedding_mask'] if text_embeddings else [])
  ds = ds.batch(global_batch_size // process_count, drop_remainder=True,
                batch_fn=functools.partial(_stack_batch, extra_keys=tuple(extra_keys)))
  # Converting whole batches is ~2x faster than per example (one vectorised pass).
  # (A partial, not a lambda, so the pipeline stays picklable for grain workers.)
  return ds.map(functools.partial(to_model_inputs, max_text_length=max_text_length,
                                  text_tokenizer=tokenizer.check_tokenizer(text_tokenizer)))


def _conditioning_inputs(builder, source, *, labels: bool,
                         text_embeddings: bool) -> ConditioningInputs | None:
  """The transform that adds labels / text embeddings the stored examples lack (None: they have
  them), or a UserError naming what the dataset cannot provide."""
  preprocessor = getattr(builder, 'train_preprocessor', None)
  example = (preprocessor.map(source[0]) if preprocessor is not None else source[0])
  label_of_caption = None
  if labels and 'label' not in example:
    label_of_caption = getattr(builder, 'label_of_caption', None)
    if label_of_caption is None:
      raise UserError('config.model.conditioning=\'class\' needs class labels, which this '
                      'dataset has not (no TFDS class-label feature): use conditioning \'text\' '
                      'or \'none\', or a labelled dataset.')
  embeddings_file = None
  if text_embeddings and 'text_embedding' not in example:
    folder = getattr(getattr(builder, 'builder_config', None), 'video_dir', None)
    if folder is None or 'file' not in example:
      raise UserError('config.model.text_encoder=\'precomputed\' needs precomputed text '
                      'embeddings: a float32 TFDS feature \'text_embedding\' [L, D], or for '
                      f'video_folder a {TEXT_EMBEDDINGS_FILE} in config.data.video_dir.')
    embeddings_file = os.path.join(os.path.expanduser(folder), TEXT_EMBEDDINGS_FILE)
  if label_of_caption is None and embeddings_file is None:
    return None
  return ConditioningInputs(label_of_caption, embeddings_file)


def make_train_iterator(
    *,
    builder,
    split: str,
    global_batch_size: int,
    seed: int,
    max_text_length: int,
    text_tokenizer: str = 'bytes',
    process_index: int | None = None,
    process_count: int | None = None,
    num_epochs: int | None = None,
    num_threads: int = 1,
    prefetch_buffer_size: int = 4,
    num_images_per_video: int = 0,
    image_source: Any = None,
    labels: bool = False,
    text_embeddings: bool = False,
) -> grain.DatasetIterator:
  """Iterator of {'video': float32 [b, T + K, H, W, 3], 'tokens': int32 [b, L]} batches.

  b = global_batch_size // process_count, K = num_images_per_video (0: [b, T, H, W, 3]).
  Arguments as in `make_train_dataset`;
  num_threads / prefetch_buffer_size go to `grain.ReadOptions`. Resume with
  `it.set_state(state)` where `state = it.get_state()` (a JSON-serialisable dict).
  """
  ds = make_train_dataset(
      builder=builder, split=split, global_batch_size=global_batch_size, seed=seed,
      max_text_length=max_text_length, text_tokenizer=text_tokenizer,
      process_index=process_index, process_count=process_count, num_epochs=num_epochs,
      num_images_per_video=num_images_per_video, image_source=image_source, labels=labels,
      text_embeddings=text_embeddings)
  read_options = grain.ReadOptions(num_threads=num_threads,
                                   prefetch_buffer_size=prefetch_buffer_size)
  return iter(ds.to_iter_dataset(read_options))


def make_eval_source(*, builder, split: str = 'test',
                     num_examples: int | None = None) -> tuple[np.ndarray, list[str]]:
  """The first `num_examples` examples of a split, in stored (index) order.

  Returns:
    videos: uint8 [N, T, H, W, 3]; captions: N str.
  """
  source = builder.as_data_source(split=split)
  n = len(source) if num_examples is None else num_examples
  if not 0 < n <= len(source):
    raise ValueError(f'num_examples must be in [1, {len(source)}], got {num_examples}.')
  examples = source.__getitems__(range(n)) if hasattr(source, '__getitems__') else [
      source[i] for i in range(n)]
  videos = np.stack([e['video'] for e in examples])
  return videos, _as_str([e['caption'] for e in examples])

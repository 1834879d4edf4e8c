"""A folder of the user's own videos as a TFDS dataset of captioned clips.

    my_videos/
      cat.mp4   cat.txt            # sidecar caption: the text of <stem>.txt
      dog.webm  run.avi  wave.gif
      captions.jsonl               # or one line per video: {"file": "dog.webm", "caption": "..."}

Every `.mp4`, `.webm`, `.avi` or `.gif` below the folder (decoded with imageio; mp4, webm and avi
through imageio-ffmpeg) becomes non-overlapping clips of `num_frames` frames taken every
`frame_skip`-th frame, each frame's shorter side resized to `resolution` and center-cropped
(`preprocess.resize_and_center_crop`). Whole videos, never clips of one video, go to train or test:
a fixed permutation of the sorted file names puts `test_fraction` of them (at least one when there
are two or more) in test.

Nothing is dropped or padded silently: videos shorter than one clip, files that cannot be decoded
and videos without a caption (kept, with the empty caption) are counted and listed, and the frames
after a video's last whole clip are counted (`unused_tail_frames`, over all usable videos), in the
dataset's report (`report(builder)`, stored in its metadata.json and logged on every load); a
folder with no readable video is a one-line `UserError`. The prepared clips live in data_dir
under a config name that fingerprints the folder (file names, sizes, times) and the settings, so
changing either prepares anew.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import re
from typing import Any

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from vdm_jax.data import prepared
from vdm_jax.data import preprocess
from vdm_jax.errors import UserError

EXTENSIONS = ('.mp4', '.webm', '.avi', '.gif')
CAPTIONS_FILE = 'captions.jsonl'
_SPLIT_SEED = 0
_REPORT_KEYS = ('too_short', 'unreadable', 'missing_caption')


# ----------------------------------------------------------------------------------
# Files, captions, split, decoding
# ----------------------------------------------------------------------------------


def list_videos(video_dir: str) -> list[str]:
  """Sorted paths, relative to `video_dir`, of its video files (any depth)."""
  root = pathlib.Path(video_dir)
  return sorted(str(p.relative_to(root)) for p in root.rglob('*')
                if p.suffix.lower() in EXTENSIONS and p.is_file())


def read_captions(video_dir: str, files: list[str]) -> dict[str, str]:
  """Caption per file: its line of captions.jsonl, else its sidecar <stem>.txt; absent if none.

  captions.jsonl lines are {"file": <path relative to the folder>, "caption": <text>}
  ("video" / "path" and "text" are accepted too).
  """
  root = pathlib.Path(video_dir)
  captions = {}
  for f in files:
    sidecar = (root / f).with_suffix('.txt')
    if sidecar.exists():
      captions[f] = ' '.join(sidecar.read_text().split())
  jsonl = root / CAPTIONS_FILE
  if jsonl.exists():
    for number, line in enumerate(jsonl.read_text().splitlines(), 1):
      if not line.strip():
        continue
      try:
        entry = json.loads(line)
        name = next(entry[k] for k in ('file', 'video', 'path') if k in entry)
        text = next(entry[k] for k in ('caption', 'text') if k in entry)
      except (ValueError, StopIteration, TypeError):
        raise UserError(f'{jsonl}:{number} is not a JSON object with "file" and "caption": '
                        f'{line.strip()[:80]}') from None
      captions[os.path.normpath(name)] = ' '.join(str(text).split())
  return {f: captions[f] for f in files if f in captions}


def split_files(files: list[str], *, test_fraction: float) -> dict[str, list[str]]:
  """{'train': [...], 'test': [...]}: a fixed permutation of the sorted names, test first."""
  files = sorted(files)
  order = np.random.default_rng(_SPLIT_SEED).permutation(len(files))
  num_test = round(len(files) * test_fraction)
  if test_fraction > 0 and len(files) >= 2:
    num_test = min(max(num_test, 1), len(files) - 1)
  test = sorted(files[i] for i in order[:num_test])
  return {'train': sorted(set(files) - set(test)), 'test': test}


def count_frames(path: str) -> int:
  """Decodes every frame of a video file (raises what the decoder raises if it cannot)."""
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top  # Only when preparing.
  return sum(1 for _ in iio.imiter(path))


def read_clips(path: str, *, num_frames: int, frame_skip: int, resolution: int) -> np.ndarray:
  """Non-overlapping clips of a video file: uint8 [num_clips, T, r, r, 3] (num_clips may be 0).

  Frames are resized and cropped as they are decoded, so a long video costs little memory.
  Raises whatever the decoder raises for a file it cannot read.
  """
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top  # Only when preparing.
  frames = [preprocess.resize_and_center_crop(preprocess.to_rgb(np.asarray(frame)[None]),
                                              resolution=resolution)[0]
            for frame in iio.imiter(path)]
  span = preprocess.clip_span(num_frames=num_frames, frame_skip=frame_skip)
  num_clips = len(frames) // span
  if not num_clips:
    return np.zeros((0, num_frames, resolution, resolution, 3), np.uint8)
  video = np.stack(frames[:num_clips * span])
  return np.stack([preprocess.take_clip(video, num_frames=num_frames, frame_skip=frame_skip,
                                        start=c * span) for c in range(num_clips)])


# ----------------------------------------------------------------------------------
# TFDS builder
# ----------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class VideoFolderConfig(tfds.core.BuilderConfig):
  """One folder at one clip shape; make it with `folder_config` (its name fingerprints both)."""
  video_dir: str = ''
  num_frames: int = 16
  resolution: int = 32
  frame_skip: int = 1
  test_fraction: float = 0.1


def folder_config(video_dir: str, *, num_frames: int, resolution: int, frame_skip: int = 1,
                  test_fraction: float = 0.1) -> VideoFolderConfig:
  """The config of a folder; its name changes when the files or the settings do."""
  video_dir = os.path.abspath(os.path.expanduser(video_dir))
  if not os.path.isdir(video_dir):
    raise UserError(f'config.data.video_dir={video_dir!r} is not a folder: point it at a folder '
                    f'of {"/".join(EXTENSIONS)} files.')
  digest = hashlib.sha1(repr((video_dir, num_frames, resolution, frame_skip, test_fraction)).encode())
  for entry in _fingerprint_files(video_dir):
    digest.update(repr(entry).encode())
  slug = re.sub(r'[^a-z0-9]+', '_', os.path.basename(video_dir).lower()).strip('_') or 'videos'
  return VideoFolderConfig(
      name=f'{slug}_{num_frames}x{resolution}_k{frame_skip}_{digest.hexdigest()[:10]}',
      description=f'Clips of {video_dir}.', video_dir=video_dir, num_frames=num_frames,
      resolution=resolution, frame_skip=frame_skip, test_fraction=test_fraction)


def _fingerprint_files(video_dir: str):
  """(relative path, size, mtime) of the videos and caption files: what the clips depend on."""
  root = pathlib.Path(video_dir)
  for p in sorted(root.rglob('*')):
    if p.is_file() and (p.suffix.lower() in EXTENSIONS + ('.txt',) or p.name == CAPTIONS_FILE):
      stat = os.stat(p)
      yield str(p.relative_to(root)), stat.st_size, stat.st_mtime_ns


class VideoFolder(tfds.core.GeneratorBasedBuilder):
  """Clips of a folder of videos (see module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  code_path = epath.Path(__file__)  # See moving_shapes.MovingShapes.code_path.
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return self.dataset_info_from_configs(
        features=prepared.captioned_video_features(
            c,
            file=tfds.features.Text(),  # Relative path of the source video.
            clip_index=tfds.features.Scalar(dtype=np.int32),  # Clip c starts at c * span.
        ),
        metadata=tfds.core.MetadataDict(),  # The report (see `report`).
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    c = self.builder_config
    files = list_videos(c.video_dir)
    if not files:
      raise UserError(f'{c.video_dir} holds no video ({", ".join(EXTENSIONS)}): add some or fix '
                      '--config.data.video_dir.')
    # A first pass decodes every file to find the usable ones before splitting: a split of only
    # unusable files would be empty, which TFDS refuses.
    metadata = self.info.metadata
    metadata.update({'num_files': len(files), 'num_clips': 0, 'unused_tail_frames': 0,
                     **{k: [] for k in _REPORT_KEYS}})
    span = preprocess.clip_span(num_frames=c.num_frames, frame_skip=c.frame_skip)
    usable = []
    for f in files:
      try:
        num_frames = count_frames(os.path.join(c.video_dir, f))
      except Exception as error:  # pylint: disable=broad-except  # Any decoder failure: reported.
        metadata['unreadable'].append(f'{f} ({type(error).__name__})')
        continue
      if num_frames < span:
        metadata['too_short'].append(f'{f} ({num_frames} frames)')
      else:
        usable.append(f)
        metadata['num_clips'] += num_frames // span
        metadata['unused_tail_frames'] += num_frames % span  # After the last whole clip.
    if not usable:
      raise UserError(f'{c.video_dir} has no readable video of at least {span} frames: '
                      f'{_problems(metadata, c)}.')
    captions = read_captions(c.video_dir, usable)
    metadata['missing_caption'] = [f for f in usable if f not in captions]
    # With a single usable video there is no test split (rather than the same video in both).
    return {split: self._generate_examples(names, captions)
            for split, names in split_files(usable, test_fraction=c.test_fraction).items()
            if names}

  def _generate_examples(self, files: list[str], captions: dict[str, str]):
    c = self.builder_config
    for f in files:
      clips = read_clips(os.path.join(c.video_dir, f), num_frames=c.num_frames,
                         frame_skip=c.frame_skip, resolution=c.resolution)
      for index, clip in enumerate(clips):
        yield f'{f}#{index}', {'video': clip, 'caption': captions.get(f, ''), 'file': f,
                               'clip_index': np.int32(index)}


def report(builder: VideoFolder) -> dict[str, Any]:
  """{'num_files', 'num_clips', 'unused_tail_frames', 'too_short', 'unreadable',
  'missing_caption'} of a prepared folder (None for a key its preparation did not store)."""
  metadata = builder.info.metadata or {}
  return {key: metadata.get(key)
          for key in ('num_files', 'num_clips', 'unused_tail_frames') + _REPORT_KEYS}


def _problems(r: dict[str, Any], c: VideoFolderConfig) -> str:
  """Each kind of problem with its count and first files, '; '-separated ('' if none)."""
  span = preprocess.clip_span(num_frames=c.num_frames, frame_skip=c.frame_skip)
  why = {'too_short': f'skipped, shorter than one clip ({span} frames)',
         'unreadable': 'skipped, could not be decoded',
         'missing_caption': f'kept with the empty caption (no <stem>.txt or {CAPTIONS_FILE} line)'}
  return '; '.join(f'{len(r[key])} {why[key]}: {", ".join(r[key][:10])}'
                   + (' ...' if len(r[key]) > 10 else '') for key in _REPORT_KEYS if r[key])


def report_line(builder: VideoFolder) -> str:
  """The report in one line: what was made, then each kind of problem with its files."""
  r, c = report(builder), builder.builder_config
  problems = _problems(r, c)
  tail = r['unused_tail_frames']
  return (f'video_folder {c.video_dir}: {r["num_clips"]} clips of {c.num_frames} x '
          f'{c.resolution}x{c.resolution} from {r["num_files"]} files'
          + (f'; {tail} frames unused after the last whole clip of their video'
             if tail is not None else '')
          + (f'; {problems}' if problems else ''))


def load_builder(video_dir: str, *, num_frames: int, resolution: int, frame_skip: int = 1,
                 test_fraction: float = 0.1, data_dir: str | None = None) -> VideoFolder:
  """The prepared clips of `video_dir` (prepared on first use); logs the report every time."""
  config = folder_config(video_dir, num_frames=num_frames, resolution=resolution,
                         frame_skip=frame_skip, test_fraction=test_fraction)
  builder = prepared.prepare(VideoFolder, config, data_dir)
  problems = any(report(builder)[key] for key in _REPORT_KEYS)
  (logging.warning if problems else logging.info)('%s', report_line(builder))
  return builder

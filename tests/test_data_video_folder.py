"""video_folder: the user's videos read back as clips; every bad case reported, never hidden."""

import json

import imageio.v3 as iio
import numpy as np
import pytest

from experiments import base
from vdm_jax.data import pipeline
from vdm_jax.data import registry
from vdm_jax.data import video_folder
from vdm_jax.errors import UserError

# One pytest-xdist worker runs this file: its module fixtures are built once.
pytestmark = pytest.mark.xdist_group('test_data_video_folder')

SETTINGS = dict(num_frames=3, resolution=16, frame_skip=2, test_fraction=0.3)  # Clip span: 5 frames.


def gray_video(num_frames, height, width):
  """Frame i is the flat gray 20 * i (survives lossy coding and resizing)."""
  return np.stack([np.full((height, width, 3), 20 * i, np.uint8) for i in range(num_frames)])


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('videos')
  iio.imwrite(root / 'a.mp4', gray_video(10, 32, 48), fps=8)  # 2 clips; sidecar caption.
  (root / 'a.txt').write_text('a gray\n  fade\n')
  (root / 'sub').mkdir()
  iio.imwrite(root / 'sub' / 'b.gif', gray_video(7, 24, 32), duration=100, loop=0)  # 1 clip.
  iio.imwrite(root / 'c.gif', gray_video(6, 16, 16), duration=100, loop=0)  # 1 clip, no caption.
  iio.imwrite(root / 'short.gif', gray_video(4, 16, 16), duration=100, loop=0)
  # webm (VP8) and avi (MPEG-4) go through imageio-ffmpeg, as mp4 does.
  iio.imwrite(root / 'd.webm', gray_video(8, 16, 16), plugin='FFMPEG', codec='libvpx', fps=8)
  iio.imwrite(root / 'e.avi', gray_video(5, 16, 16), plugin='FFMPEG', fps=8)  # 1 clip, no tail.
  (root / 'e.txt').write_text('e')
  (root / 'broken.avi').write_bytes(b'not a video')
  (root / 'notes.md').write_text('not a video either')
  (root / 'captions.jsonl').write_text(json.dumps({'file': 'sub/b.gif', 'caption': 'b'}) + '\n'
                                       + json.dumps({'file': 'd.webm', 'caption': 'd'}) + '\n')
  return root


@pytest.fixture(scope='module')
def builder(folder, tmp_path_factory):
  return video_folder.load_builder(str(folder), data_dir=str(tmp_path_factory.mktemp('tfds')),
                                   **SETTINGS)


def clips(builder):
  out = {}
  for split in builder.info.splits:
    for e in builder.as_data_source(split=split):
      out[(e['file'].decode(), int(e['clip_index']))] = (split, e['caption'].decode(), e['video'])
  return out


def test_clips_read_back_with_captions(builder):
  got = clips(builder)
  assert sorted(got) == [('a.mp4', 0), ('a.mp4', 1), ('c.gif', 0), ('d.webm', 0), ('e.avi', 0),
                         ('sub/b.gif', 0)]
  expected_frames = {0: [0, 2, 4], 1: [5, 7, 9]}  # Non-overlapping clips, every 2nd frame.
  for (f, index), (_, caption, video) in got.items():
    assert video.shape == (3, 16, 16, 3) and video.dtype == np.uint8
    tolerance = 0 if f.endswith('.gif') else 4  # mp4/webm/avi are lossy; gif is exact here.
    values = video.reshape(3, -1).astype(int)  # One row of pixels per frame.
    want = np.broadcast_to(20 * np.array(expected_frames[index])[:, None], values.shape)
    np.testing.assert_allclose(values, want, atol=tolerance)
    assert caption == {'a.mp4': 'a gray fade', 'sub/b.gif': 'b', 'c.gif': '', 'd.webm': 'd',
                       'e.avi': 'e'}[f]
  splits = {f: split for (f, _), (split, _, _) in got.items()}
  assert sorted(set(splits.values())) == ['test', 'train']  # Whole videos per split.


def test_problems_are_counted_and_reported(builder):
  report = video_folder.report(builder)
  assert report['num_files'] == 7 and report['num_clips'] == 6
  # Frames after the last whole 5-frame clip: b.gif 7 -> 2, c.gif 6 -> 1, d.webm 8 -> 3
  # (a.mp4 10 and e.avi 5 have none; short.gif is counted as too short instead).
  assert report['unused_tail_frames'] == 6
  assert report['too_short'] == ['short.gif (4 frames)']
  assert [entry.split()[0] for entry in report['unreadable']] == ['broken.avi']
  assert report['missing_caption'] == ['c.gif']
  line = video_folder.report_line(builder)
  assert '\n' not in line and 'short.gif' in line and 'broken.avi' in line and 'c.gif' in line
  assert '6 frames unused after the last whole clip' in line


def test_deterministic_and_report_survives_reopening(builder, folder, tmp_path):
  again = video_folder.load_builder(str(folder), data_dir=str(tmp_path), **SETTINGS)
  a, b = clips(builder), clips(again)
  assert a.keys() == b.keys()
  for key in a:
    assert a[key][:2] == b[key][:2]
    np.testing.assert_array_equal(a[key][2], b[key][2])
  reopened = video_folder.load_builder(str(folder), data_dir=str(tmp_path), **SETTINGS)
  assert video_folder.report(reopened) == video_folder.report(builder)


def test_folder_without_readable_videos_is_one_line_error(tmp_path):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(UserError, match='holds no video') as error:
    video_folder.load_builder(str(tmp_path / 'empty'), data_dir=str(tmp_path / 'd1'), **SETTINGS)
  assert '\n' not in str(error.value)
  bad = tmp_path / 'bad'
  bad.mkdir()
  (bad / 'x.mp4').write_bytes(b'junk')
  iio.imwrite(bad / 'y.gif', gray_video(2, 8, 8), duration=100, loop=0)
  with pytest.raises(UserError, match='no readable video of at least 5 frames') as error:
    video_folder.load_builder(str(bad), data_dir=str(tmp_path / 'd2'), **SETTINGS)
  assert '\n' not in str(error.value) and 'x.mp4' in str(error.value) and 'y.gif' in str(error.value)
  with pytest.raises(UserError, match='is not a folder'):
    video_folder.load_builder(str(tmp_path / 'missing'), **SETTINGS)


def test_bad_captions_line_is_one_line_error(tmp_path):
  iio.imwrite(tmp_path / 'a.gif', gray_video(5, 8, 8), duration=100, loop=0)
  (tmp_path / 'captions.jsonl').write_text('{"file": "a.gif"}\n')
  with pytest.raises(UserError, match=r'captions.jsonl:1 is not a JSON object'):
    video_folder.read_captions(str(tmp_path), ['a.gif'])


def test_through_the_registry_and_pipeline(folder, tmp_path):
  config = base.get_base_config()
  config.data.update(dict(name='video_folder', video_dir=str(folder), data_dir=str(tmp_path),
                          **SETTINGS))
  builder = registry.load_builder(config)
  ds = pipeline.make_train_dataset(builder=builder, split='train', global_batch_size=1, seed=0,
                                   max_text_length=8, process_index=0, process_count=1)
  assert ds[0]['video'].shape == (1, 3, 16, 16, 3)
  config.data.video_dir = ''
  with pytest.raises(UserError, match='set --config.data.video_dir'):
    registry.load_builder(config)

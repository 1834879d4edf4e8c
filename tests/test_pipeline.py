"""Tests for vdm_jax.data.pipeline: grain over the TFDS array_record source."""

import json

import numpy as np
import pytest

from vdm_jax.data import moving_shapes as ms
from vdm_jax.data import pipeline
from vdm_jax.data import preprocess
from vdm_jax.data import registry
from vdm_jax.data import tokenizer

# One pytest-xdist worker runs this file: its module fixtures are built once.
pytestmark = pytest.mark.xdist_group('test_pipeline')

NUM_TRAIN = 48
L = 64


@pytest.fixture(scope='module')
def builder(tmp_path_factory):
  config = ms.MovingShapesConfig(name='tiny_pipeline', num_frames=4, resolution=16,
                                 num_train=NUM_TRAIN, num_test=12, seed=5)
  return ms.load_builder(config, tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def source_index(builder):
  """Video bytes -> (index, caption) for every training example."""
  source = builder.as_data_source(split='train')
  table = {}
  for i in range(len(source)):
    e = source[i]
    table[e['video'].tobytes()] = (i, e['caption'].decode())
  assert len(table) == NUM_TRAIN, 'videos are not unique: cannot identify examples'
  return table


def _ids(batch, source_index):
  """Identifies each example of a batch; checks the exact uint8 -> float mapping."""
  video = batch['video']
  assert video.dtype == np.float32 and batch['tokens'].dtype == np.int32
  assert video.min() >= -1 and video.max() <= 1
  as_uint8 = np.round((video.astype(np.float64) + 1) * 127.5).astype(np.uint8)
  # Exactly k / 127.5 - 1 (correctly rounded to float32) for the uint8 value k.
  np.testing.assert_array_equal(video, (as_uint8 / 127.5 - 1).astype(np.float32))
  ids = []
  for v, caption in zip(as_uint8, tokenizer.detokenize(batch['tokens'])):
    index, true_caption = source_index[v.tobytes()]
    assert caption == true_caption
    ids.append(index)
  return ids


def _iterator(builder, **kwargs):
  args = dict(builder=builder, split='train', global_batch_size=8, seed=0,
              max_text_length=L, process_index=0, process_count=1)
  return pipeline.make_train_iterator(**{**args, **kwargs})


def test_to_model_inputs_maps_uint8_exactly():
  video = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16, 1).repeat(3, axis=-1)
  out = pipeline.to_model_inputs({'video': video, 'caption': [b'a red circle moving up']},
                                 max_text_length=L)
  x = out['video']
  assert x.dtype == np.float32
  assert x.flat[0] == -1.0 and x.flat[-1] == 1.0  # 0 -> -1 and 255 -> 1 exactly.
  np.testing.assert_array_equal(x, (video.astype(np.float64) / 127.5 - 1).astype(np.float32))
  assert np.all(np.diff(x[..., 0].ravel()) > 0)
  assert tokenizer.detokenize(out['tokens']) == ['a red circle moving up']
  with pytest.raises(ValueError, match='uint8'):
    pipeline.to_model_inputs({'video': x, 'caption': ['x']}, max_text_length=L)


def test_word_tokens_are_those_of_each_examples_caption(builder, source_index):
  it = _iterator(builder, text_tokenizer='words', max_text_length=8)
  batch = next(it)
  assert batch['tokens'].shape == (8, 8)
  captions = {}
  for v in np.round((batch['video'].astype(np.float64) + 1) * 127.5).astype(np.uint8):
    captions[len(captions)] = source_index[v.tobytes()][1]
  expected = tokenizer.tokenize([captions[i] for i in range(8)], max_length=8, kind='words')
  np.testing.assert_array_equal(batch['tokens'], expected)
  assert (batch['tokens'][:, :5] != 0).all() and (batch['tokens'][:, 5:] == 0).all()


def test_outputs_are_the_examples(builder, source_index):
  it = _iterator(builder)
  for _ in range(3):
    batch = next(it)
    assert batch['video'].shape == (8, 4, 16, 16, 3) and batch['tokens'].shape == (8, L)
    _ids(batch, source_index)  # Every video maps back to its example and caption.


def test_shards_are_disjoint_and_cover_the_split(builder, source_index):
  shards = []
  for process_index in range(2):
    it = _iterator(builder, process_index=process_index, process_count=2, num_epochs=1)
    ids = [i for batch in it for i in _ids(batch, source_index)]
    shards.append(ids)
  assert len(shards[0]) == len(shards[1]) == NUM_TRAIN // 2  # Per-process batch 4.
  assert len(set(shards[0])) == len(shards[0])
  assert not set(shards[0]) & set(shards[1])
  assert set(shards[0]) | set(shards[1]) == set(range(NUM_TRAIN))


def test_each_epoch_is_reshuffled(builder, source_index):
  it = _iterator(builder, num_epochs=2)
  ids = [i for batch in it for i in _ids(batch, source_index)]
  assert len(ids) == 2 * NUM_TRAIN
  epoch1, epoch2 = ids[:NUM_TRAIN], ids[NUM_TRAIN:]
  assert sorted(epoch1) == sorted(epoch2) == list(range(NUM_TRAIN))
  assert epoch1 != epoch2
  assert epoch1 != list(range(NUM_TRAIN))  # Shuffled at all.
  # Same seed -> same order; different seed -> different order.
  again = [i for batch in _iterator(builder, num_epochs=1) for i in _ids(batch, source_index)]
  other = [i for batch in _iterator(builder, num_epochs=1, seed=1)
           for i in _ids(batch, source_index)]
  assert again == epoch1 and other != epoch1


@pytest.mark.parametrize('steps_before', [2, 7])  # 7 crosses the epoch boundary (6).
def test_restored_iterator_continues_exactly(builder, steps_before):
  it = _iterator(builder)
  for _ in range(steps_before):
    next(it)
  state = it.get_state()
  restored_state = json.loads(json.dumps(state))  # Orbax/JSON friendly.
  expected = [next(it) for _ in range(4)]
  fresh = _iterator(builder)
  next(fresh)  # Its own position must not matter.
  fresh.set_state(restored_state)
  for want in expected:
    got = next(fresh)
    np.testing.assert_array_equal(got['video'], want['video'])
    np.testing.assert_array_equal(got['tokens'], want['tokens'])
  # And the restored position is not simply the start.
  assert not np.array_equal(next(_iterator(builder))['video'], expected[0]['video'])


def test_rejects_indivisible_batch(builder):
  with pytest.raises(ValueError, match='divisible'):
    _iterator(builder, global_batch_size=9, process_count=2)


def test_eval_source_is_deterministic(builder):
  videos, captions = pipeline.make_eval_source(builder=builder, num_examples=5)
  assert videos.dtype == np.uint8 and videos.shape == (5, 4, 16, 16, 3)
  for i in range(5):
    video, caption, _ = ms.render_video(ms.example_rng(5, 'test', i), num_frames=4,
                                        resolution=16)
    np.testing.assert_array_equal(videos[i], video)
    assert captions[i] == caption and isinstance(captions[i], str)


class _StoredVideos:
  """Stands in for a prepared TFDS builder: 4 raw videos of 12 frames [12, 4, 4, 3], the value of
  every pixel of frame i being 10 * i + the video's index."""

  def as_data_source(self, split):
    del split
    frame_values = 10 * np.arange(12)[:, None, None, None]
    return [{'video': np.broadcast_to(frame_values + v, (12, 4, 4, 3)).astype(np.uint8),
             'caption': f'video {v}'} for v in range(4)]


@pytest.mark.parametrize('random_clip_start', [True, False])
def test_train_clips_start_at_random_frames(random_clip_start):
  """The pipeline's random_map draws a new start per example and epoch (start 0 when off)."""
  preprocessor = preprocess.VideoPreprocessor(video_key='video', num_frames=3, frame_skip=2,
                                              resolution=4, random_clip_start=random_clip_start,
                                              caption_key='caption')
  builder = registry.PreprocessedBuilder(_StoredVideos(), preprocessor)
  ds = pipeline.make_train_dataset(builder=builder, split='train', global_batch_size=2, seed=0,
                                   max_text_length=8, process_index=0, process_count=1,
                                   num_epochs=8)
  starts = {v: set() for v in range(4)}
  for i in range(len(ds)):  # 8 epochs of 2 batches.
    values = np.rint((ds[i]['video'] + 1) * 127.5).astype(int)  # [2, 3, 4, 4, 3]
    for clip in values:
      first = clip[0, 0, 0, 0]
      np.testing.assert_array_equal(clip, first + 20 * np.arange(3)[:, None, None, None]
                                    + np.zeros_like(clip))  # Frames start, start + 2, start + 4.
      starts[first % 10].add(first // 10)
  if random_clip_start:  # The span is 5 of 12 frames: starts 0..7.
    assert all(s <= set(range(8)) and len(s) >= 3 for s in starts.values()), starts
    assert len(set().union(*starts.values())) >= 6, starts
  else:
    assert all(s == {0} for s in starts.values()), starts

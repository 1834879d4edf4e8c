"""benchmarks/caption_probe.py: the swapped captions differ from the true one in one attribute."""

import numpy as np
import pytest

from benchmarks import caption_probe
from vdm_jax.data import tracker


@pytest.mark.parametrize('attribute', list(caption_probe.ATTRIBUTES))
def test_swap_changes_only_that_attribute_of_every_object(attribute):
  rng = np.random.default_rng(0)
  index = list(caption_probe.ATTRIBUTES).index(attribute)
  for caption in ['a red circle moving left', 'a white triangle moving up-right and a blue square moving down']:
    seen = set()
    for _ in range(40):
      swapped = tracker.parse_caption(caption_probe.swap_attribute(caption, attribute, rng))
      original = tracker.parse_caption(caption)
      assert len(swapped) == len(original)
      for new, old in zip(swapped, original):
        assert new[index] != old[index]
        assert [v for i, v in enumerate(new) if i != index] == [v for i, v in enumerate(old) if i != index]
      seen.add(swapped[0][index])
    # Every other value of the attribute is drawn (2 shapes, 6 colors, 7 directions), not one fixed.
    assert len(seen) == len(caption_probe.ATTRIBUTES[attribute]) - 1


def test_overrides_set_fields_as_launch_does_and_refuse_unknown_ones():
  from experiments import base
  config = caption_probe.apply_overrides(
      base.get_base_config(), ['model.layout_embedding=True', 'model.channel_mult=(1, 2)',
                               'data.builder_config=res64', 'optim.learning_rate=1e-3'])
  assert config.model.layout_embedding is True
  assert config.model.channel_mult == (1, 2)
  assert config.data.builder_config == 'res64'
  assert config.optim.learning_rate == 1e-3
  with pytest.raises(SystemExit, match='no field'):
    caption_probe.apply_overrides(base.get_base_config(), ['model.layout_embeding=True'])
  with pytest.raises(SystemExit, match='FIELD=VALUE'):
    caption_probe.apply_overrides(base.get_base_config(), ['model.layout_embedding'])


def test_caption_mean_errors_are_zero_for_what_the_caption_determines():
  """Videos that are a function of color and shape only: the caption mean is exact (error 0),
  leaving the direction out changes nothing, leaving the color out does not."""
  rng = np.random.default_rng(0)
  captions = [f'a {c} {s} moving {d}' for c in ('red', 'blue') for s in ('circle', 'square')
              for d in ('left', 'up')]
  def video(caption):
    (color, shape, _), = tracker.parse_caption(caption)
    v = np.zeros((2, 4, 4, 3), np.uint8)
    v[..., ('red', 'blue').index(color) * 2] = 255
    v[:, :2, :, 1] = 100 if shape == 'circle' else 200
    return v
  train = [captions[i] for i in rng.integers(len(captions), size=64)]
  chunks = [(np.stack([video(c) for c in train[:40]]), train[:40]),
            (np.stack([video(c) for c in train[40:]]), train[40:])]
  errors = caption_probe.caption_mean_errors(chunks, np.stack([video(c) for c in captions]), captions)
  assert errors['caption'] < 1e-12 and errors['direction'] < 1e-12
  assert errors['color'] > 0.1 and errors['shape'] > 0.01 and errors['null'] > 0.1
  # These videos are the same in every frame, so pooling the frames loses nothing.
  assert errors['frames_pooled'] < 1e-12


def test_frames_pooled_mean_loses_what_differs_between_frames():
  """A caption whose video changes over frames (a bright frame 0, dark frame 1): the caption mean
  is exact, its average over frames is off by half the difference in every pixel."""
  captions = ['a red circle moving left', 'a red circle moving right']
  def video(caption):
    v = np.zeros((2, 2, 2, 3), np.uint8)
    v[0 if caption.endswith('left') else 1] = 255
    return v
  train = captions * 3
  videos = np.stack([video(c) for c in captions])
  errors = caption_probe.caption_mean_errors([(np.stack([video(c) for c in train]), train)],
                                             videos, captions)
  assert errors['caption'] < 1e-12
  np.testing.assert_allclose(errors['frames_pooled'], 1.0)  # x in {-1, 1}, pooled to 0.

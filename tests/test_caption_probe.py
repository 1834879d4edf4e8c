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

"""Tests for vdm_jax.data.tokenizer."""

import numpy as np
import pytest

from vdm_jax.data import tokenizer


def test_ids_are_bytes_plus_one_and_padding_is_zero():
  tokens = tokenizer.tokenize(['ab', ''], max_length=4)
  assert tokens.dtype == np.int32
  np.testing.assert_array_equal(tokens, [[ord('a') + 1, ord('b') + 1, 0, 0], [0, 0, 0, 0]])
  assert tokenizer.PAD_ID == 0


def test_round_trip_including_non_ascii():
  texts = ['a red circle moving left and a blue square moving up', 'ünïcødé ✓', 'x']
  tokens = tokenizer.tokenize(texts, max_length=80)
  assert tokens.min() >= 0 and tokens.max() < tokenizer.VOCAB_SIZE
  assert tokenizer.detokenize(tokens) == texts
  assert tokenizer.detokenize(tokens[0]) == texts[:1]  # A single [L] row.


def test_truncation_keeps_the_prefix():
  tokens = tokenizer.tokenize(['a green triangle moving down-right'], max_length=7)
  assert tokenizer.detokenize(tokens) == ['a green']
  assert (tokens != 0).all()


def test_rejects_a_bare_string():
  with pytest.raises(TypeError):
    tokenizer.tokenize('abc', max_length=4)

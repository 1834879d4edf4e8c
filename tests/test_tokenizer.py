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


# ------------------------------------------------------------------------------ 'words'


def test_fnv1a_matches_the_published_test_vectors():
  # FNV-1a 32-bit of 'a' and 'foobar' (the reference test vectors of Fowler, Noll and Vo).
  for word, fnv in (('a', 0xE40C292C), ('foobar', 0xBF9CF968)):
    assert tokenizer.word_id(word) == 1 + fnv % tokenizer.WORD_BUCKETS


def test_words_split_lower_cases_keeps_hyphenated_words_and_splits_punctuation():
  assert tokenizer.split_words('A Red circle, moving UP-LEFT.') == [
      'a', 'red', 'circle', ',', 'moving', 'up-left', '.']
  assert tokenizer.split_words("  it's\tdigit 3 ") == ["it's", 'digit', '3']


def test_word_ids_are_one_per_word_padded_and_truncated():
  tokens = tokenizer.tokenize(['a red circle moving left', 'a red circle', ''], max_length=6,
                              kind='words')
  assert tokens.dtype == np.int32 and tokens.shape == (3, 6)
  expected = [tokenizer.word_id(w) for w in ('a', 'red', 'circle', 'moving', 'left')]
  np.testing.assert_array_equal(tokens[0], expected + [0])
  np.testing.assert_array_equal(tokens[1], expected[:3] + [0, 0, 0])
  np.testing.assert_array_equal(tokens[2], [0] * 6)
  assert tokens.min() >= 0 and tokens.max() < tokenizer.vocab_size('words')
  cut = tokenizer.tokenize(['a red circle moving left'], max_length=2, kind='words')
  np.testing.assert_array_equal(cut[0], expected[:2])
  assert tokenizer.num_tokens('a red circle moving up-left', 'words') == 5
  assert tokenizer.num_tokens('a red circle moving up-left', 'bytes') == 27


def test_a_caption_word_changes_exactly_one_word_token_but_shifts_bytes():
  # Why 'words' helps: the direction is one token at a fixed position whatever the color and
  # shape, while its bytes move with the lengths of the words before it.
  a, b = 'a red circle moving left', 'a magenta triangle moving left'
  words = tokenizer.tokenize([a, b], max_length=8, kind='words')
  assert (words[0] != words[1]).sum() == 2  # color and shape; 'moving left' stays put.
  np.testing.assert_array_equal(words[0, 3:5], words[1, 3:5])
  nbytes = tokenizer.tokenize([a, b], max_length=40)
  assert a.index('left') != b.index('left')
  assert nbytes[0, a.index('left')] != nbytes[1, a.index('left')]


def test_built_in_dataset_vocabularies_have_no_hash_collisions():
  from vdm_jax.data import moving_shapes  # pylint: disable=g-import-not-at-top
  words = set(moving_shapes.COLORS) | set(moving_shapes.SHAPES) | set(moving_shapes.DIRECTIONS)
  words |= {'a', 'moving', 'and', 'digit', 'video', 'of'} | {str(d) for d in range(10)}
  assert all(len(tokenizer.split_words(w)) == 1 for w in words)
  ids = {tokenizer.word_id(w) for w in words}
  assert len(ids) == len(words)


def test_unknown_tokenizer_is_refused():
  with pytest.raises(ValueError, match="text_tokenizer='chars'"):
    tokenizer.tokenize(['x'], max_length=4, kind='chars')
  with pytest.raises(ValueError, match='allowed values'):
    tokenizer.vocab_size('chars')

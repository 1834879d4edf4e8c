"""Tokenizers of the built-in text encoder, needing no vocabulary file (`config.model.text_tokenizer`).

  'bytes': byte b -> id b + 1. Every UTF-8 string round-trips exactly (up to truncation), but a
           word is several ids whose positions shift with the words before it: the encoder must
           learn to spell before the denoiser can use a word.
  'words': one id per word (lower-cased; a hyphenated word such as 'up-left' is one word; each
           punctuation mark is a word of its own), hashed into WORD_BUCKETS buckets with 32-bit
           FNV-1a (the hashing trick, Weinberger et al. 2009). A word is one embedding row from
           the first step. Two words may share a bucket (about 1 pair in 8,000 for any two words).

In both, 0 is padding (PAD_ID) and ids are in [1, vocab_size(kind)).
"""

import re
from typing import Sequence

import numpy as np

PAD_ID = 0
TOKENIZERS = ('bytes', 'words')
VOCAB_SIZE = 257  # 'bytes': 256 byte values + padding.
WORD_BUCKETS = 8192  # 'words': hash buckets (ids 1..WORD_BUCKETS).
_WORD = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")


def check_tokenizer(kind: str) -> str:
  """The one place that validates a tokenizer name."""
  if kind not in TOKENIZERS:
    raise ValueError(f'text_tokenizer={kind!r}; allowed values: {TOKENIZERS}.')
  return kind


def vocab_size(kind: str = 'bytes') -> int:
  """Number of token ids of `kind`, padding included: the text encoder's embedding rows."""
  return VOCAB_SIZE if check_tokenizer(kind) == 'bytes' else WORD_BUCKETS + 1


def split_words(text: str) -> list[str]:
  """The words of 'words' tokenization: 'A red circle, moving up-left.' -> ['a', 'red',
  'circle', ',', 'moving', 'up-left', '.']."""
  return _WORD.findall(text.lower())


def word_id(word: str) -> int:
  """1 + FNV-1a-32(word's UTF-8 bytes) mod WORD_BUCKETS: the same on every machine and process
  (Python's hash() is salted per process)."""
  h = 0x811C9DC5
  for byte in word.encode('utf-8'):
    h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
  return 1 + h % WORD_BUCKETS


def _ids(text, kind: str) -> list[int]:
  if kind == 'bytes':
    data = text if isinstance(text, bytes) else str(text).encode('utf-8')
    return [b + 1 for b in data]
  text = text.decode('utf-8', errors='replace') if isinstance(text, bytes) else str(text)
  return [word_id(w) for w in split_words(text)]


def num_tokens(text: str, kind: str = 'bytes') -> int:
  """Length of `text` in tokens of `kind`, before truncation."""
  return len(_ids(text, check_tokenizer(kind)))


def tokenize(texts: Sequence[str], max_length: int, kind: str = 'bytes') -> np.ndarray:
  """Encodes texts as int32 [N, max_length] (ids of `kind`, truncated, 0-padded)."""
  if isinstance(texts, (str, bytes)):
    raise TypeError('tokenize expects a sequence of strings, not a single string.')
  check_tokenizer(kind)
  out = np.full((len(texts), max_length), PAD_ID, dtype=np.int32)
  for i, text in enumerate(texts):
    ids = _ids(text, kind)[:max_length]
    out[i, :len(ids)] = ids
  return out


def detokenize(tokens) -> list[str]:
  """Inverse of 'bytes' `tokenize` for int [N, L] (or [L]) ids; padding is dropped ('words'
  ids are hashes and have no inverse).

  Bytes cut mid-character by truncation decode with the replacement character.
  """
  tokens = np.asarray(tokens)
  if tokens.ndim == 1:
    tokens = tokens[None]
  texts = []
  for row in tokens:
    ids = row[row != PAD_ID].astype(np.int64) - 1
    texts.append(bytes(ids.astype(np.uint8).tolist()).decode('utf-8', errors='replace'))
  return texts

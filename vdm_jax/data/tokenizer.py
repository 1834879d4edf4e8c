"""Byte-level tokenizer: byte b -> id b + 1, with 0 reserved for padding.

No vocabulary file and no unknown tokens: every UTF-8 string round-trips exactly
(up to truncation), which is all the small text encoder needs for template captions.
"""

from typing import Sequence

import numpy as np

PAD_ID = 0
VOCAB_SIZE = 257  # 256 byte values + padding.


def tokenize(texts: Sequence[str], max_length: int) -> np.ndarray:
  """Encodes texts as int32 [N, max_length] (UTF-8 bytes + 1, truncated, 0-padded)."""
  if isinstance(texts, (str, bytes)):
    raise TypeError('tokenize expects a sequence of strings, not a single string.')
  out = np.full((len(texts), max_length), PAD_ID, dtype=np.int32)
  for i, text in enumerate(texts):
    data = text if isinstance(text, bytes) else str(text).encode('utf-8')
    ids = np.frombuffer(data[:max_length], dtype=np.uint8).astype(np.int32) + 1
    out[i, :len(ids)] = ids
  return out


def detokenize(tokens) -> list[str]:
  """Inverse of `tokenize` for int [N, L] (or [L]) ids; padding is dropped.

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

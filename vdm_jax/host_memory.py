"""Compile a jitted function ahead of its first call, then hand the compiler's freed heap back to
the operating system.

XLA's compiler allocates and frees gigabytes while it compiles a large train step; glibc's malloc
keeps much of that freed memory in its arenas (fragmented, or above the trim threshold of a
thread's arena), so the process stays that much larger while it trains, and on the CPU, where the
devices' buffers live in the same heap, the training peak is that much higher. Measured
2026-12-07 on benchmark config S with the Winograd convolutions (2 CPU devices): resident memory
after compiling 4.29 GB, 1.87 GB after `malloc_trim(0)`; the training peak 9.6 -> 7.4 GiB.
"""

import ctypes
import ctypes.util
import functools

from absl import logging


@functools.cache
def _glibc():
  """glibc (the one libc with malloc_trim), or None elsewhere (macOS, musl)."""
  name = ctypes.util.find_library('c')
  try:
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, 'malloc_trim') else None
  except OSError:
    return None


def release_freed_heap() -> bool:
  """Return freed heap memory to the OS (glibc's `malloc_trim(0)`); False where unavailable."""
  libc = _glibc()
  if libc is None:
    return False
  libc.malloc_trim(0)
  return True


def compile_then_release_heap(jitted, *args) -> None:
  """Compile `jitted` (a `jax.jit` function) for `args` and release the compiler's freed heap.
  jit keeps the executable, so the next call `jitted(*args)` (same shapes and shardings) runs
  it without compiling again (tests/test_host_memory.py checks that)."""
  jitted.lower(*args).compile()
  if release_freed_heap():
    logging.info('Compiled; released the compiler\'s freed heap memory to the OS.')

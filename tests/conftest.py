"""Fixtures shared by the test files."""

import jax
import pytest


@pytest.fixture
def x64():
  """float64 for closed-form checks; restores the flag (other test files share the process)."""
  previous = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', True)
  yield
  jax.config.update('jax_enable_x64', previous)

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


@pytest.fixture(scope='session')
def smoke_data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='session')
def resumed_workdir(tmp_path_factory, smoke_data_dir):
  """A smoke run trained 2 steps, then resumed in the same workdir to 4 (checkpoints 2 and 4)."""
  from tests.smoke import smoke_config  # pylint: disable=g-import-not-at-top
  from vdm_jax import train  # pylint: disable=g-import-not-at-top

  workdir = tmp_path_factory.mktemp('resumed')
  first = train.train_and_evaluate(smoke_config(smoke_data_dir, 2), str(workdir))
  assert first['step'] == 2
  second = train.train_and_evaluate(smoke_config(smoke_data_dir, 4), str(workdir))
  assert second['step'] == 4
  return workdir

"""Fixtures shared by the test files."""

import os

# Test-only XLA:CPU options, set before jax starts its backend: the lowest LLVM optimisation level
# compiles in about a third of the time, and these tests are dominated by compiles of small
# computations. XLA:CPU's fast-compile preset takes ~10% more off (the smoke train step 19.5 ->
# 17.3 s; the suite's summed test time 1165 -> 1024 s, 2026-12-06). Every test compiles and runs
# under the same options, subprocesses included (they inherit XLA_FLAGS), so runs compared bit
# for bit are compiled alike.
os.environ['XLA_FLAGS'] = ' '.join([
    os.environ.get('XLA_FLAGS', ''), '--xla_backend_optimization_level=0',
    '--xla_llvm_disable_expensive_passes=true',
    '--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE']).strip()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# Start JAX's CPU backend now, with its one device: a test that runs launch.py in this process
# would otherwise set this process's CPU device count (vdm_jax/cpu_devices.py) for every test
# after it. Tests of several devices run in subprocesses.
jax.devices()


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  """A persistent compilation cache for this test session only.

  Many tests build the same computation in a fresh closure (each smoke run, resume, sampler
  test), which `jax.jit` compiles anew; the cache turns those repeats into a lookup. It starts
  empty, so every test still compiles what it runs at least once.
  """
  directory = str(tmp_path_factory.mktemp('jax_cache'))
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  yield directory
  jax.config.update('jax_compilation_cache_dir', None)


@pytest.fixture(scope='session')
def compilation_cache_dir(compilation_cache):
  """The session's compilation cache directory, for subprocesses to share
  (JAX_COMPILATION_CACHE_DIR)."""
  return compilation_cache


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
  config = smoke_config(smoke_data_dir, 2)
  config.train.sample_at_end = False  # Only the end of the resumed run's samples are of interest.
  first = train.train_and_evaluate(config, str(workdir))
  assert first['step'] == 2
  second = train.train_and_evaluate(smoke_config(smoke_data_dir, 4), str(workdir))
  assert second['step'] == 4
  return workdir


@pytest.fixture(scope='session')
def uninterrupted_workdir(tmp_path_factory, smoke_data_dir):
  """The smoke run of `resumed_workdir`'s config trained 4 steps in one go (checkpoints 2 and 4):
  what every interrupted or resumed run must end as, bit for bit."""
  from tests.smoke import smoke_config  # pylint: disable=g-import-not-at-top
  from vdm_jax import train  # pylint: disable=g-import-not-at-top

  workdir = tmp_path_factory.mktemp('uninterrupted')
  config = smoke_config(smoke_data_dir, 4)
  config.train.sample_at_end = False  # Only its state is compared.
  assert train.train_and_evaluate(config, str(workdir))['step'] == 4
  return workdir

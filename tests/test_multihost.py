"""Multi-host and FSDP: 2 processes x 4 CPU devices, joined by jax.distributed on localhost, train
as one process on one device does, with and without FSDP, and their checkpoints restore in one
process; the FSDP sharding rule; the launch flags that start a multi-host run."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import launch
from tests import multihost_worker as worker
from vdm_jax import checkpoints
from vdm_jax import config_validation
from vdm_jax import distributed
from vdm_jax import mesh as mesh_lib
from vdm_jax.errors import UserError

# One pytest-xdist worker runs this file: its module fixtures are built once.
pytestmark = pytest.mark.xdist_group('test_multihost')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def runs(tmp_path_factory, compilation_cache_dir):
  """tests/multihost_worker.py run by 2 processes with 4 CPU devices each, and meanwhile the same
  training in this process on one device: (their workdir, (losses, state, abstract state))."""
  workdir = tmp_path_factory.mktemp('multihost')
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=compilation_cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
             XLA_FLAGS=os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4',
             PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  coordinator = f'127.0.0.1:{_free_port()}'
  logs = [open(workdir / f'process_{i}.log', 'w+') for i in range(2)]
  processes = [subprocess.Popen(
      [sys.executable, '-m', 'tests.multihost_worker', coordinator, '2', str(i), str(workdir)],
      cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT) for i, log in enumerate(logs)]
  try:
    assert jax.device_count() == 1
    config = worker.scenario_config(fsdp=1)
    one_device = worker.train_steps(config, mesh_lib.make_mesh(config))
    codes = [p.wait(timeout=300) for p in processes]
  finally:
    for p in processes:  # One that failed leaves the other waiting for it.
      if p.poll() is None:
        p.kill()
  outputs = []
  for log in logs:
    log.seek(0)
    outputs.append(log.read()[-3000:])
    log.close()
  assert codes == [0, 0], '\n'.join(outputs)
  return workdir, one_device


@pytest.mark.parametrize('scenario', sorted(worker.SCENARIOS))
def test_two_processes_train_as_one_and_their_checkpoint_restores_in_one(runs, scenario):
  two_process_run, (losses, state, abstract) = runs
  with open(two_process_run / f'{scenario}.json') as f:
    report = json.load(f)
  fsdp, _ = worker.SCENARIOS[scenario]
  assert (report['process_count'], report['device_count'], report['local_devices']) == (2, 8, 4)
  assert report['mesh'] == {'data': 8 // fsdp, 'fsdp': fsdp}
  assert report['process_rows'] == str(slice(0, worker.BATCH_SIZE // 2))  # Process 0: first half.
  # Same global batches, same per-example noise (partitionable threefry): only the order of the
  # sums over devices (and microbatches) differs. The losses change from step to step, so a
  # mismatch shows.
  assert len(set(losses)) == worker.NUM_STEPS
  np.testing.assert_allclose(report['losses'], losses, rtol=1e-5)

  # params, EMA and Adam's moments w: [8, 8, 3] are split along their last axis of size 8 (the
  # tie between 8 and 8 goes to the last) under FSDP; whole on every device otherwise.
  shard = [[8, 4, 3]] if fsdp > 1 else [[8, 8, 3]]
  spec = str(P(None, 'fsdp', None)) if fsdp > 1 else str(P())
  for name in ('params', 'ema', 'adam_mu', 'adam_nu'):
    assert report[name] == {'spec': spec, 'shard_shapes': shard}, name

  # The checkpoint of 2 processes x 4 devices, restored on this process's one device (its
  # fingerprint checked on restore), is the state that one device trained.
  checkpointer = checkpoints.Checkpointer(str(two_process_run / scenario), read_only=True)
  assert checkpointer.all_steps() == [worker.NUM_STEPS]
  restored = checkpointer.restore(worker.NUM_STEPS, abstract_state=abstract)
  checkpointer.close()
  assert int(restored.step) == int(state.step) == worker.NUM_STEPS
  leaves = lambda s: jax.tree.leaves((s.params, s.ema_params, s.opt_state))
  for x, y in zip(leaves(restored), leaves(state), strict=True):
    assert x.sharding.num_devices == 1
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- the FSDP rule


def test_fsdp_spec_splits_the_largest_divisible_axis_of_large_enough_arrays():
  spec = lambda shape, size=2, min_bytes=0: mesh_lib.fsdp_spec(
      shape, fsdp_size=size, num_bytes=4 * int(np.prod(shape)), min_bytes=min_bytes)
  assert spec((3, 3, 64, 128)) == P(None, None, None, 'fsdp')  # conv kernel: output features
  assert spec((3, 3, 128, 64)) == P(None, None, 'fsdp', None)  # the largest divisible axis
  assert spec((3, 3, 64, 64)) == P(None, None, None, 'fsdp')  # a tie: the last
  assert spec((6, 9), size=3) == P(None, 'fsdp')
  assert spec((7, 9), size=2) == P()  # nothing divides: replicated
  assert spec((), size=2) == P()  # scalars (Adam's count)
  assert spec((64, 128), size=1) == P()  # no FSDP axis
  assert spec((64, 128), min_bytes=4 * 64 * 128 + 1) == P()  # below the minimum size
  assert spec((64, 128), min_bytes=4 * 64 * 128) == P(None, 'fsdp')


def test_mesh_config_must_fit_the_devices():
  config = worker.scenario_config(fsdp=2)
  assert mesh_lib.mesh_shape(config.mesh, 8) == (4, 2)
  config_validation.validate_mesh(config.mesh, num_devices=8)
  with pytest.raises(UserError, match=r'config.mesh.fsdp=2 does not divide the 3 devices'):
    config_validation.validate_mesh(config.mesh, num_devices=3)
  config.mesh.data = 8
  with pytest.raises(UserError, match=r'config.mesh.data=8 times config.mesh.fsdp=2 is not the 8 '
                     r'devices: use --config.mesh.data=-1'):
    config_validation.validate_mesh(config.mesh, num_devices=8)
  config.mesh.data, config.mesh.fsdp = -1, 0
  with pytest.raises(UserError, match=r'config.mesh.fsdp=0 must be an integer >= 1'):
    config_validation.validate_mesh(config.mesh)


# ---------------------------------------------------------------- joining a multi-host job


def test_distributed_settings_from_flags_then_environment():
  env = {'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234', 'JAX_NUM_PROCESSES': '4',
         'JAX_PROCESS_ID': '3'}
  assert distributed.settings(environ={}) is None  # One process: nothing to join.
  assert distributed.settings(environ=env) == dict(
      coordinator_address='10.0.0.1:1234', num_processes=4, process_id=3)
  assert distributed.settings(process_id=0, environ=env) == dict(  # Flags override.
      coordinator_address='10.0.0.1:1234', num_processes=4, process_id=0)
  # --multihost: JAX's cluster detection fills in what is not given.
  assert distributed.settings(auto=True, environ={}) == {}
  assert distributed.settings(process_id=1, auto=True, environ={}) == {'process_id': 1}
  with pytest.raises(UserError, match=r'without --num_processes, --process_id \(or '
                     r'JAX_NUM_PROCESSES, JAX_PROCESS_ID\)'):
    distributed.settings(coordinator_address='10.0.0.1:1234', environ={})
  with pytest.raises(UserError, match=r'--process_id=4 must be in \[0, --num_processes=4\)'):
    distributed.settings(process_id=4, environ=env)
  with pytest.raises(UserError, match=r"JAX_NUM_PROCESSES='two' is not an integer"):
    distributed.settings(environ=dict(env, JAX_NUM_PROCESSES='two'))


def test_launch_flags_start_jax_distributed_before_the_run(tmp_path, monkeypatch, capsys):
  calls = []

  def initialize(**kwargs):
    calls.append(kwargs)
    raise UserError('stopped here by the test')  # Instead of the run.

  monkeypatch.setattr(jax.distributed, 'initialize', initialize)
  for name in distributed.ENV.values():
    monkeypatch.delenv(name, raising=False)
  argv = ['launch.py', '--config=experiments/moving_shapes.py:smoke', f'--workdir={tmp_path}']
  monkeypatch.chdir(ROOT)
  assert launch.cli(argv + ['--coordinator_address=127.0.0.1:1234', '--num_processes=2',
                            '--process_id=1']) == 2
  assert calls == [dict(coordinator_address='127.0.0.1:1234', num_processes=2, process_id=1)]
  assert launch.cli(argv + ['--multihost']) == 2
  assert calls[-1] == {}
  assert 'stopped here by the test' in capsys.readouterr().err
  assert launch.cli(argv + ['--process_id=1']) == 2  # Incomplete: one line, and no call.
  assert len(calls) == 2
  assert 'error: multi-host run without --coordinator_address, --num_processes' in (
      capsys.readouterr().err)
  assert not os.path.exists(tmp_path / 'checkpoints')

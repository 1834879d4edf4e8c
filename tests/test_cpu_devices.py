"""vdm_jax/cpu_devices.py: how many CPU devices a run gets, and that launch.py gets them."""

import itertools
import json
import os
import subprocess
import sys

import pytest

from experiments import moving_shapes
from vdm_jax import cpu_devices
from vdm_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(*, batch=8, sample_batch=8, accum=1, fsdp=1, data=-1, cpu=0):
  config = moving_shapes.get_config()
  config.batch_size, config.sample.batch_size = batch, sample_batch
  config.train.grad_accum_steps = accum
  config.mesh.fsdp, config.mesh.data, config.mesh.cpu_devices = fsdp, data, cpu
  return config


def test_auto_picks_the_most_devices_that_split_every_batch():
  """Against brute force: the count splits every batch over all processes' devices, and no
  larger count up to the cores does."""
  for batch, sample_batch, accum, fsdp, cores, processes in itertools.product(
      (1, 4, 6, 8, 12), (1, 2, 8, 9), (1, 2), (1, 2), (1, 2, 3, 8), (1, 2)):
    config = make_config(batch=batch, sample_batch=sample_batch, accum=accum, fsdp=fsdp)
    n = cpu_devices.devices_per_process(config, cores=cores, num_processes=processes)
    splits = lambda k, c=config, p=processes: (
        c.batch_size % (k * p * c.train.grad_accum_steps) == 0
        and c.sample.batch_size % (k * p) == 0 and (k * p) % c.mesh.fsdp == 0)
    assert 1 <= n <= cores
    best = [k for k in range(1, cores + 1) if splits(k)]
    assert n == (max(best) if best else 1), (batch, sample_batch, accum, fsdp, cores, processes)


def test_auto_examples():
  assert cpu_devices.devices_per_process(make_config(), cores=2) == 2
  assert cpu_devices.devices_per_process(make_config(), cores=16) == 8
  assert cpu_devices.devices_per_process(make_config(sample_batch=4), cores=16) == 4
  assert cpu_devices.devices_per_process(make_config(batch=8, accum=4), cores=16) == 2
  assert cpu_devices.devices_per_process(make_config(), cores=16, num_processes=2) == 4
  assert cpu_devices.devices_per_process(make_config(batch=9, sample_batch=9), cores=2) == 1
  # A mesh whose 'data' axis is fixed: the count that gives it, where the cores allow.
  assert cpu_devices.devices_per_process(make_config(data=2, fsdp=2), cores=8) == 4
  # Fields config validation refuses: no crash here, one device (validation names the field).
  assert cpu_devices.devices_per_process(make_config(accum=0), cores=2) == 1


def test_a_count_is_taken_as_given_and_a_bad_one_refused():
  assert cpu_devices.devices_per_process(make_config(cpu=3), cores=2) == 3
  with pytest.raises(UserError, match=r'config.mesh.cpu_devices=-1 must be an integer >= 0'):
    cpu_devices.devices_per_process(make_config(cpu=-1), cores=2)


def test_xla_flags_win_over_the_config():
  environ = {'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  assert cpu_devices.configure(make_config(), environ=environ) is None


SHOW_DEVICES = """
import json, sys
import jax
from experiments import moving_shapes
from vdm_jax import cpu_devices
config = moving_shapes.get_config()
config.mesh.cpu_devices = int(sys.argv[1])
configured = cpu_devices.configure(config)
print(json.dumps(dict(configured=configured, devices=jax.device_count(),
                      platform=jax.devices()[0].platform,
                      auto=cpu_devices.devices_per_process(
                          config, cores=cpu_devices.available_cores()))))
"""


def _devices_in_a_fresh_process(cpu: int, xla_flags: str) -> dict:
  env = dict(os.environ, XLA_FLAGS=xla_flags, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  result = subprocess.run([sys.executable, '-c', SHOW_DEVICES, str(cpu)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_fresh_process_gets_the_configured_devices():
  flags = ' '.join(f for f in os.environ.get('XLA_FLAGS', '').split()
                   if 'xla_force_host_platform_device_count' not in f)
  auto = _devices_in_a_fresh_process(0, flags)
  assert auto['configured'] == auto['devices'] == auto['auto']
  three = _devices_in_a_fresh_process(3, flags)
  assert three['configured'] == three['devices'] == 3
  # The user's XLA_FLAGS are left to decide.
  user = _devices_in_a_fresh_process(3, flags + ' --xla_force_host_platform_device_count=5')
  assert user['configured'] is None and user['devices'] == 5

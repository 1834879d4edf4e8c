"""Data parallelism: training on 2 devices gives the 1-device result, and its checkpoint restores
onto 1 device."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np

from tests.smoke import restored_state, smoke_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_devices_match_one(tmp_path, smoke_data_dir, resumed_workdir):
  data_dir, two = smoke_data_dir, tmp_path / 'two_devices'

  script = textwrap.dedent(f"""
      import jax
      from tests.smoke import smoke_config
      from vdm_jax import train
      assert jax.device_count() == 2, jax.devices()
      config = smoke_config({str(data_dir)!r}, 2)
      config.train.sample_at_end = False  # Only the trained parameters are compared.
      train.train_and_evaluate(config, {str(two)!r})
  """)
  env = dict(os.environ,
             XLA_FLAGS=os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2',
             PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]

  config = smoke_config(data_dir, 2)
  # The 2-device checkpoint restored on 1 device, against the 1-device run's step 2.
  a, b = restored_state(config, two), restored_state(config, resumed_workdir, step=2)
  assert int(a.step) == int(b.step) == 2
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    # Same global batch, same per-example noise; only the order of the gradient sum differs.
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)

"""How many devices JAX makes of this process's CPU: one per core by default, data-parallel.

XLA:CPU runs a computation on one device at a time, op after op, each op split over the cores.
Many ops of a video U-Net are too small to keep every core busy (GroupNorm statistics, the
elementwise ops, attention on a few frames, the loops over cache-sized convolution chunks), so
the cores wait on each other between them. Split into one CPU device per core, the batch is
sharded over the devices like over GPUs (mesh.py), and the devices run their halves of each step
side by side. The maths is the same (the losses of 1 and 2 devices agree to float32 rounding).
Measured on the 2-core CPU, 2026-12-07, a process with 1 device against one with 2 (README,
Speed): config S of benchmarks/train_step.py 1.10-1.28x faster, the default experiment's train
loop (grain feeding) ~1.04x. (A 1-device mesh inside a 2-device process is no baseline: it ran
the default step 1.33 s against 1.03-1.06 s in a 1-device process.)

`config.mesh.cpu_devices` sets the count: 0 (auto) picks the most devices, up to the cores this
process may use, that the run's batches split over (config.batch_size, its gradient-accumulation
microbatches, config.sample.batch_size, and config.mesh's shape, over all processes of the job);
N > 0 asks for N. It must be set before JAX starts its CPU backend, so launch.py calls
`configure` before anything touches a device. Only the CPU backend is affected: on a machine with
GPUs or TPUs the computations run there, on their own devices. An
`XLA_FLAGS=--xla_force_host_platform_device_count=N` set by the user wins over the config.
"""

import os

import jax
from absl import logging
import ml_collections

from vdm_jax import config_validation
from vdm_jax.errors import UserError

_XLA_DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'


def available_cores() -> int:
  """The cores this process may run on (its CPU affinity, e.g. a container's or taskset's)."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def splits_batches(config: ml_collections.ConfigDict, total_devices: int) -> bool:
  """Whether every batch of the run splits evenly over `total_devices` (all processes)."""
  try:
    config_validation.validate_device_split(config, total_devices)
  except (UserError, TypeError, ZeroDivisionError):  # Invalid fields: validation names them.
    return False
  return True


def devices_per_process(config: ml_collections.ConfigDict, *, cores: int,
                        num_processes: int = 1) -> int:
  """The CPU device count of each process for `config.mesh.cpu_devices` (see module docstring).

  Auto (0): the largest n <= `cores` for which n * num_processes devices split every batch; 1 if
  none does (then config validation names the batch that does not split).
  """
  config_validation.validate_mesh(config.mesh)  # A bad cpu_devices: UserError, naming the fix.
  requested = config.mesh.get('cpu_devices', 0)
  if requested:
    return requested
  for n in range(max(cores, 1), 0, -1):
    if splits_batches(config, n * num_processes):
      return n
  return 1


def configure(config: ml_collections.ConfigDict, *, num_processes: int | None = None,
              environ: dict[str, str] | None = None) -> int | None:
  """Sets JAX's CPU device count for `config` (call before JAX starts its CPU backend).

  num_processes: the job's process count where known (launch.py's flags), else 1.
  Returns the count set, or None where it was left alone: XLA_FLAGS already names one (the
  user's choice), or the backend has started (a notebook or test that already ran JAX).
  """
  environ = os.environ if environ is None else environ
  count = devices_per_process(config, cores=available_cores(), num_processes=num_processes or 1)
  if _XLA_DEVICE_COUNT_FLAG in environ.get('XLA_FLAGS', ''):
    logging.info('CPU devices: as XLA_FLAGS sets them (config.mesh.cpu_devices would give %d).',
                 count)
    return None
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:  # JAX's backends have started: their device count is fixed.
    logging.info('CPU devices: JAX has already started, keeping its %d.', jax.local_device_count())
    return None
  return count

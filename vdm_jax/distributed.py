"""Multi-host runs: joining the processes of a job through `jax.distributed`, before any device use.

Every process of a job runs the same command; `settings` works out, and `initialize` tells JAX,
which process this one is:

- explicitly, by `coordinator_address` ('host:port' of process 0), `num_processes` and
  `process_id` (launch.py's `--coordinator_address`, `--num_processes`, `--process_id`), each of
  which falls back to an environment variable: JAX_COORDINATOR_ADDRESS (which JAX itself reads
  too), JAX_NUM_PROCESSES and JAX_PROCESS_ID;
- or, with `auto` (`--multihost`), by JAX's cluster detection (Cloud TPU pods, SLURM, Open MPI,
  Kubernetes), which fills in whatever was not given;
- neither: a single process (nothing to initialize).

On CPU the processes exchange data through gloo (JAX's default CPU collectives).
"""

import os

import jax

from vdm_jax.errors import UserError

ENV = {'coordinator_address': 'JAX_COORDINATOR_ADDRESS', 'num_processes': 'JAX_NUM_PROCESSES',
       'process_id': 'JAX_PROCESS_ID'}


def settings(*, coordinator_address: str | None = None, num_processes: int | None = None,
             process_id: int | None = None, auto: bool = False,
             environ: dict[str, str] | None = None) -> dict | None:
  """The keyword arguments for `jax.distributed.initialize`, or None for a single process.

  Arguments left None are read from the environment (`environ`, default os.environ). Without
  `auto`, all three must then be known; with it, the unknown ones are left to JAX's cluster
  detection. Raises UserError (one line, naming the flag) for an incomplete or invalid set.
  """
  environ = os.environ if environ is None else environ
  given = dict(coordinator_address=coordinator_address, num_processes=num_processes,
               process_id=process_id)
  for name, value in given.items():
    if value is None and environ.get(ENV[name], '') != '':
      value = environ[ENV[name]]
      if name != 'coordinator_address':
        try:
          value = int(value)
        except ValueError:
          raise UserError(f'{ENV[name]}={value!r} is not an integer: set it to the '
                          f'{name.replace("_", " ")}, or unset it.') from None
      given[name] = value
  known = {name: value for name, value in given.items() if value is not None}
  if not known and not auto:
    return None
  missing = [name for name in given if name not in known]
  if missing and not auto:
    raise UserError(
        f'multi-host run without {", ".join("--" + m for m in missing)} (or '
        f'{", ".join(ENV[m] for m in missing)}): give all of --coordinator_address, '
        '--num_processes and --process_id, or --multihost to let JAX detect the cluster '
        '(TPU pods, SLURM, Open MPI).')
  num, index = known.get('num_processes'), known.get('process_id')
  if num is not None and num < 1:
    raise UserError(f'--num_processes={num} must be >= 1: the number of processes of the job.')
  if index is not None and not 0 <= index < (num if num is not None else index + 1):
    raise UserError(f'--process_id={index} must be in [0, --num_processes={num}): number the '
                    'processes 0, 1, ..., num_processes - 1.')
  return known


def initialize(kwargs: dict | None, *, auto: bool = False) -> bool:
  """Joins this process to its job with `settings(...)`'s keyword arguments (None: a single
  process, nothing to join); returns whether it did. `auto`: as given to `settings`.

  Must run before anything touches devices (jax.devices(), a computation, a device_put).
  """
  if kwargs is None:
    return False
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as error:  # What JAX's cluster detection could not find.
    if not auto:
      raise
    raise UserError(f'--multihost: jax.distributed.initialize could not start ({error}): outside '
                    'a TPU pod, SLURM or Open MPI job give --coordinator_address, '
                    '--num_processes and --process_id.') from error
  return True

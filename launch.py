r"""Runs a vdm_jax experiment: train (then sample and evaluate), sample, or evaluate.

  python launch.py --config experiments/moving_shapes.py --workdir runs/moving_shapes
  python launch.py --config experiments/moving_shapes.py --workdir runs/moving_shapes \
      --mode sample --prompt "a red circle moving left" --config.sample.guidance_weight=3

Bad input (an unknown config field, a value out of range, a missing config file or checkpoint, a
bad prompt) is reported in one line `error: ...` with exit code 2 and leaves the workdir as it was;
`--verbose` shows the traceback instead.
"""

import functools
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues, sys_argv: list[str] | None = None) -> None:
  """launch.py's flags, on `flag_values` (`FLAGS` when run; a fresh set per `cli` call in tests).

  sys_argv: the arguments config_flags reads `--config.*` overrides from (default: sys.argv).
  """
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file, optionally with a variant: experiments/X.py[:variant].',
      lock_config=True, flag_values=flag_values, sys_argv=sys_argv)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard logs, samples and eval.',
                      flag_values=flag_values)
  flags.DEFINE_enum('mode', 'train', ['train', 'sample', 'eval', 'inspect'],
                    'train: train (resuming), then sample and evaluate; sample / eval: from the latest '
                    'checkpoint (or --step); inspect: print parameters, FLOPs and memory of the compiled train '
                    'step, without training.', flag_values=flag_values)
  flags.DEFINE_multi_string('prompt', None, 'Prompt(s) for --mode sample (repeatable); default: '
                            'config.sample.prompts.', flag_values=flag_values)
  flags.DEFINE_integer('step', None, '--mode sample / eval: the checkpoint step to restore (default: '
                       'the latest; train.keep_checkpoints_every keeps milestones).',
                       flag_values=flag_values)
  flags.DEFINE_bool('verbose', False, 'Show tracebacks for bad input and libraries\' INFO logs.',
                    flag_values=flag_values)
  # Multi-host runs (vdm_jax/distributed.py): every process runs the same command.
  flags.DEFINE_string('coordinator_address', None, 'Multi-host: host:port of process 0, where '
                      'the processes meet (default: $JAX_COORDINATOR_ADDRESS).',
                      flag_values=flag_values)
  flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes of the job '
                       '(default: $JAX_NUM_PROCESSES).', flag_values=flag_values)
  flags.DEFINE_integer('process_id', None, 'Multi-host: this process\'s index, 0 .. '
                       'num_processes - 1 (default: $JAX_PROCESS_ID).', flag_values=flag_values)
  flags.DEFINE_bool('multihost', False, 'Multi-host: let JAX detect the processes of the job '
                    '(Cloud TPU pods, SLURM, Open MPI) for what the flags above leave out.',
                    flag_values=flag_values)
  flags.mark_flags_as_required(['config', 'workdir'], flag_values=flag_values)


def _wants_traceback(argv: list[str]) -> bool:
  """Whether argv asks for --verbose, read on its own: the other flags may be what failed."""
  probe = flags.FlagValues()
  flags.DEFINE_bool('verbose', False, '', flag_values=probe)
  try:
    probe(argv, known_only=True)
  except flags.Error:
    return False
  return probe.verbose


def _config_argument(argv: list[str]) -> str:
  for i, arg in enumerate(argv):
    for name in ('--config', '-config'):
      if arg.startswith(name + '='):
        return arg[len(name) + 1:]
      if arg == name and i + 1 < len(argv):
        return argv[i + 1]
  return '?'


def _one_line(text: str) -> str:
  return ' '.join(text.split())


def _flag_error_message(error: Exception, argv: list[str], flag_values: flags.FlagValues) -> str:
  """One line naming the bad flag, config field or config file, and the fix."""
  config_file = _config_argument(argv)
  message = str(error)
  if isinstance(error, flags.Error):
    if 'Error whilst parsing config file' in message:
      # get_config raised: its traceback is in the message; the last line says what went wrong.
      cause = message.strip().splitlines()[-1].strip()
      return f'--config={config_file}: get_config raised {cause}'
    bad_value = re.match(r'flag --config\.([\w.]+)=(.*?): (.*)', message, re.DOTALL)
    config = flag_values['config'].value
    if bad_value and isinstance(config, ml_collections.ConfigDict):
      field, value, why = bad_value.groups()
      current = functools.reduce(lambda node, key: node[key], field.split('.'), config)
      kind = type(current).__name__
      return (f'--config.{field}={value} is not of type {kind} ({_one_line(why)}): set '
              f'--config.{field} to a value of type {kind}, e.g. the config\'s {current!r}.')
    return f'{_one_line(message).rstrip(".")}: see python launch.py --helpfull.'
  if isinstance(error, OSError):  # config_flags could not read the file.
    missing = re.search(r"\[Errno \d+\] ([^:]+): '(.*)'", message)
    why = f'{missing.group(1).lower()}' if missing else _one_line(message)
    return (f'--config={config_file}: {why}: give the path of an experiment config file, e.g. '
            f'--config=experiments/moving_shapes.py (relative to {os.getcwd()}).')
  if isinstance(error, AttributeError) and "attribute 'get_config'" in message:
    return (f'--config={config_file} has no get_config(): a config file defines '
            'get_config(variant=\'\') returning an ml_collections.ConfigDict (see experiments/).')
  if isinstance(error, (AttributeError, KeyError)):
    # ml_collections names the unknown key (or the whole path it looked up), and a close field
    # when there is one.
    lookup = re.search(r'Attempting to lookup: ([\w.]+)', message)
    key = re.search(r'(\w+)\\*[\'"]', message)
    overrides = [arg.lstrip('-').split('=')[0][len('config.'):] for arg in argv
                 if arg.lstrip('-').startswith('config.')]
    bad = next((o for o in overrides if (lookup and o == lookup.group(1))
                or (key and key.group(1) in o.split('.'))), None)
    if bad:
      suggestion = re.search(r'Did you mean "(\w+)"', message)
      hint = f' (did you mean {suggestion.group(1)!r}?)' if suggestion else ''
      return (f'--config.{bad}: config.{bad} is not a config field{hint}: fix the name '
              '(experiments/base.py lists every field).')
  return f'--config={config_file}: {type(error).__name__}: {_one_line(message)}'


def parse_flags(argv: list[str], flag_values: flags.FlagValues = FLAGS) -> list[str]:
  """Parses argv (app.run's flags_parser). A bad flag, config field or config file is one line
  `error: ...` and exit code 2, as bad input found later is; --verbose raises it instead."""
  try:
    remaining = flag_values(argv)
    config = flag_values.config
    if not isinstance(config, ml_collections.ConfigDict):
      # config_flags defers the error of a file it could not load to the first use: raise it.
      hasattr(config, 'lock')
      raise ValueError(f'get_config() returned {type(config).__name__}, not an '
                       'ml_collections.ConfigDict')
  except Exception as error:  # pylint: disable=broad-except  # Config files are arbitrary code.
    if _wants_traceback(argv):
      raise
    print(f'error: {_flag_error_message(error, argv, flag_values)}', file=sys.stderr)
    sys.exit(2)
  return remaining


def run(flag_values: flags.FlagValues = FLAGS) -> int:
  """Runs the parsed flags' mode; returns the exit code (bad input: one `error:` line, 2)."""
  # Imported here so that `--help` and flag errors do not pay for importing JAX.
  from vdm_jax import cpu_devices  # pylint: disable=g-import-not-at-top
  from vdm_jax import distributed
  from vdm_jax import evaluate
  from vdm_jax import progress
  from vdm_jax import sample
  from vdm_jax import train
  from vdm_jax.errors import UserError

  config, workdir = flag_values.config, flag_values.workdir
  if not flag_values.verbose:
    progress.quiet_library_logs()
  try:
    # Before anything touches devices.
    processes = distributed.settings(
        coordinator_address=flag_values.coordinator_address,
        num_processes=flag_values.num_processes, process_id=flag_values.process_id,
        auto=flag_values.multihost)
    cpu_devices.configure(config, num_processes=(processes or {}).get('num_processes'))
    distributed.initialize(processes, auto=flag_values.multihost)
    if flag_values.step is not None and flag_values.mode not in ('sample', 'eval'):
      raise UserError(f'--step={flag_values.step} picks the checkpoint of --mode sample or eval, not '
                      f'--mode {flag_values.mode}: drop --step (training resumes from the latest).')
    if flag_values.mode == 'train':
      train.train_and_evaluate(config, workdir)
    elif flag_values.mode == 'sample':
      sample.sample(config, workdir, flag_values.prompt, step=flag_values.step)
    elif flag_values.mode == 'inspect':
      from vdm_jax import inspect_model  # pylint: disable=g-import-not-at-top
      inspect_model.inspect_and_print(config)
    else:
      evaluate.evaluate(config, workdir, step=flag_values.step)
  except (UserError, FloatingPointError) as error:
    if flag_values.verbose:
      raise
    logging.flush()
    print(f'error: {error}', file=sys.stderr)
    return 2 if isinstance(error, UserError) else 1
  return 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  return run(FLAGS)


def cli(argv: list[str]) -> int:
  """All of launch.py on `argv` (argv[0]: the program), in this process; returns the exit code.

  Flags go to a fresh `FlagValues`, so tests can call it again and again.
  """
  flag_values = flags.FlagValues()
  define_flags(flag_values, sys_argv=argv)
  # config_flags loads every config file as module `config_config`, into the previous one when
  # there is one: a file without get_config would then find the last file's.
  sys.modules.pop('config_config', None)
  try:
    remaining = parse_flags(argv, flag_values)
  except SystemExit as exit_:
    return exit_.code
  if len(remaining) > 1:
    raise app.UsageError(f'Unexpected arguments: {remaining[1:]}')
  return run(flag_values)


if __name__ == '__main__':
  define_flags(FLAGS)
  app.run(main, flags_parser=parse_flags)

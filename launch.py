r"""Runs a vdm_jax experiment: train (then sample and evaluate), sample, or evaluate.

  python launch.py --config experiments/moving_shapes.py --workdir runs/moving_shapes
  python launch.py --config experiments/moving_shapes.py --workdir runs/moving_shapes \
      --mode sample --prompt "a red circle moving left" --config.sample.guidance_weight=3

Bad input (an unknown config field, a value out of range, a missing checkpoint) is reported in
one line with exit code 2; `--verbose` shows the traceback.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, optionally with a variant: experiments/X.py[:variant].',
    lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard logs, samples and eval.')
flags.DEFINE_enum('mode', 'train', ['train', 'sample', 'eval', 'inspect'],
                  'train: train (resuming), then sample and evaluate; sample / eval: from the latest checkpoint; '
                  'inspect: print parameters, FLOPs and memory of the compiled train step, without training.')
flags.DEFINE_multi_string('prompt', None, 'Prompt(s) for --mode sample (repeatable); default: config.sample.prompts.')
flags.DEFINE_bool('verbose', False, 'Show tracebacks for bad input and libraries\' INFO logs.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Imported here so that `--help` and flag errors do not pay for importing JAX.
  from vdm_jax import evaluate  # pylint: disable=g-import-not-at-top
  from vdm_jax import progress
  from vdm_jax import sample
  from vdm_jax import train
  from vdm_jax.errors import UserError

  config = FLAGS.config
  if not FLAGS.verbose:
    progress.quiet_library_logs()
  try:
    if FLAGS.mode == 'train':
      train.train_and_evaluate(config, FLAGS.workdir)
    elif FLAGS.mode == 'sample':
      sample.sample(config, FLAGS.workdir, FLAGS.prompt)
    elif FLAGS.mode == 'inspect':
      from vdm_jax import inspect_model  # pylint: disable=g-import-not-at-top
      inspect_model.inspect_and_print(config)
    else:
      evaluate.evaluate(config, FLAGS.workdir)
  except (UserError, FloatingPointError) as error:
    if FLAGS.verbose:
      raise
    logging.flush()
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2 if isinstance(error, UserError) else 1)


if __name__ == '__main__':
  app.run(main)

"""Does a run survive preemption bit for bit? Kills a training run again and again, restarts it
with the same command each time, and compares its final state with an uninterrupted run's.

Each interruption starts `launch.py` on the workdir, waits until the run has written a checkpoint
newer than the one it resumed from, waits a random further moment (mid-step, mid-save, anywhere),
then sends SIGKILL (`kill -9`: nothing is saved, the run resumes from its last checkpoint) or
SIGTERM (how clusters preempt: the run must save its current step and exit 0). A last start
finishes the run. Every parameter, EMA parameter, optimizer moment and counter of the final
state must equal the uninterrupted run's exactly (not approximately).

  python benchmarks/preemption.py                           # 5 kills over 40 smoke steps
  python benchmarks/preemption.py --kills kill kill term kill kill --num_steps 60

Prints a table and writes JSON (--json). tests/test_reliability.py runs the same code on a
shorter run.
"""

import argparse
import dataclasses
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # Run from anywhere.

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

SIGNALS = {'kill': signal.SIGKILL, 'term': signal.SIGTERM}


@dataclasses.dataclass
class Interruption:
  signal: str  # 'kill' or 'term'
  resumed_from: int | None  # Latest checkpoint when the process started (None: a fresh run).
  checkpoint_at_signal: int  # Latest checkpoint when the signal was sent.
  checkpoint_after: int | None  # Latest checkpoint after the process ended.
  exit_code: int
  seconds_to_exit: float  # From the signal to the end of the process.
  saved_on_signal: int | None  # The step the run says it saved on SIGTERM (None: it did not).


def launch_command(config: str, workdir: str, overrides: list[str]) -> list[str]:
  return [sys.executable, os.path.join(ROOT, 'launch.py'), '--config', config,
          '--workdir', workdir, *overrides]


def latest_checkpoint(workdir: str) -> int | None:
  """The newest finished checkpoint step (orbax renames a save's temporary directory when done)."""
  directory = os.path.join(workdir, 'checkpoints')
  steps = [int(n) for n in os.listdir(directory) if n.isdigit()] if os.path.isdir(directory) else []
  return max(steps, default=None)


def run_interrupted(command: list[str], workdir: str, kills: list[str], *, seed: int,
                    max_delay: float, final_step: int, env: dict[str, str] | None = None,
                    timeout: float = 600, report=lambda interruption: None,
                    ) -> tuple[list[Interruption], subprocess.CompletedProcess]:
  """Starts `command` once per entry of `kills`, interrupting it as described in the module
  docstring, then once more to finish. Returns the interruptions and the finishing run.
  Interruptions stop early once the checkpoint of `final_step` exists (the run is over).
  `report` is called with each interruption as it ends."""
  rng = random.Random(seed)
  interruptions = []
  for kind in kills:
    resumed_from = latest_checkpoint(workdir)
    if resumed_from == final_step:
      break
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while (latest_checkpoint(workdir) or 0) <= (resumed_from or 0):
      if process.poll() is not None:
        raise RuntimeError(f'the run ended (exit {process.returncode}) before writing a new '
                           f'checkpoint:\n{process.stderr.read()[-3000:]}')
      if time.monotonic() > deadline:
        process.kill()
        raise TimeoutError(f'no new checkpoint after {timeout} s')
      time.sleep(0.05)
    time.sleep(rng.uniform(0, max_delay))
    at_signal = latest_checkpoint(workdir)
    sent = time.monotonic()
    process.send_signal(SIGNALS[kind])
    _, stderr = process.communicate(timeout=timeout)
    seconds = time.monotonic() - sent
    saved = re.search(r'SIGTERM: saved checkpoint \S+/(\d+)', stderr)
    interruptions.append(Interruption(kind, resumed_from, at_signal, latest_checkpoint(workdir),
                                      process.returncode, seconds, saved and int(saved.group(1))))
    report(interruptions[-1])
    if kind == 'term' and process.returncode != 0:
      raise RuntimeError(f'SIGTERM gave exit code {process.returncode}:\n{stderr[-3000:]}')
  finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
  return interruptions, finished


def compare_states(config, workdir_a: str, workdir_b: str) -> dict[str, object]:
  """Restores both workdirs' latest train states and compares every leaf exactly."""
  from vdm_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from vdm_jax import train  # pylint: disable=g-import-not-at-top
  run = train.setup(config)
  tx, _ = train.create_optimizer(config)
  states = []
  for workdir in (workdir_a, workdir_b):
    checkpointer = checkpoints.Checkpointer(workdir, read_only=True)
    step, state = checkpointer.restore_latest(config,
                                              abstract_state=train.abstract_train_state(run, tx))
    checkpointer.close()
    states.append(jax.device_get(state))
  a, b = states
  leaves_a, tree_a = jax.tree.flatten_with_path(a)
  leaves_b, tree_b = jax.tree.flatten_with_path(b)
  assert tree_a == tree_b, 'the two states have different structures'
  different = [jax.tree_util.keystr(path) for (path, x), (_, y) in zip(leaves_a, leaves_b)
               if not np.array_equal(np.asarray(x), np.asarray(y))]
  return {'step_a': int(a.step), 'step_b': int(b.step), 'num_leaves': len(leaves_a),
          'different_leaves': different, 'identical': not different}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='experiments/moving_shapes.py:smoke')
  parser.add_argument('--num_steps', type=int, default=40)
  parser.add_argument('--checkpoint_every', type=int, default=5)
  parser.add_argument('--kills', nargs='+', choices=sorted(SIGNALS),
                      default=['kill', 'kill', 'term', 'kill', 'kill'])
  parser.add_argument('--max_delay', type=float, default=3.0,
                      help='seconds: the random wait after a new checkpoint, before the signal')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--data_dir', default='/tmp/vdm_jax_preemption/tfds')
  parser.add_argument('--workdir', default='/tmp/vdm_jax_preemption')
  parser.add_argument('--json', default='benchmarks/results/preemption.json')
  args = parser.parse_args()

  import shutil  # pylint: disable=g-import-not-at-top
  from experiments import moving_shapes  # pylint: disable=g-import-not-at-top

  overrides = [f'--config.data.data_dir={args.data_dir}', f'--config.train.num_steps={args.num_steps}',
               f'--config.train.checkpoint_every={args.checkpoint_every}',
               '--config.train.sample_at_end=False', '--config.train.eval_at_end=False']
  straight, interrupted = (os.path.join(args.workdir, n) for n in ('straight', 'interrupted'))
  for workdir in (straight, interrupted):
    shutil.rmtree(workdir, ignore_errors=True)  # This script's own scratch directories only.
  start = time.monotonic()
  done = subprocess.run(launch_command(args.config, straight, overrides), cwd=ROOT,
                        capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  straight_seconds = time.monotonic() - start
  start = time.monotonic()
  interruptions, finished = run_interrupted(
      launch_command(args.config, interrupted, overrides), interrupted, args.kills,
      seed=args.seed, max_delay=args.max_delay, final_step=args.num_steps,
      report=lambda k: print(f'  {k}', flush=True))
  assert finished.returncode == 0, finished.stderr[-3000:]
  interrupted_seconds = time.monotonic() - start

  path, _, variant = args.config.partition(':')
  assert path.endswith('moving_shapes.py'), 'compare_states builds the config of moving_shapes'
  config = moving_shapes.get_config(variant)
  config.data.data_dir = args.data_dir
  config.train.num_steps = args.num_steps
  config.train.checkpoint_every = args.checkpoint_every
  config.train.sample_at_end = config.train.eval_at_end = False
  comparison = compare_states(config, straight, interrupted)

  print(f'\n{args.config}, {args.num_steps} steps, checkpoint every {args.checkpoint_every}')
  print(f'{"#":>2} | {"signal":6} | {"resumed from":>12} | {"ckpt at signal":>14} | '
        f'{"saved on signal":>15} | {"ckpt after":>10} | {"exit":>4} | {"s to exit":>9}')
  for i, k in enumerate(interruptions):
    print(f'{i + 1:>2} | {k.signal:6} | {str(k.resumed_from):>12} | {k.checkpoint_at_signal:>14} | '
          f'{str(k.saved_on_signal or "-"):>15} | {str(k.checkpoint_after):>10} | '
          f'{k.exit_code:>4} | {k.seconds_to_exit:>9.2f}')
  print(f'final state identical to the uninterrupted run: {"yes" if comparison["identical"] else "NO"} '
        f'({comparison["num_leaves"]} arrays, step {comparison["step_b"]}; '
        f'different: {comparison["different_leaves"][:5]})')
  print(f'wall time: uninterrupted {straight_seconds:.0f} s, interrupted {interrupted_seconds:.0f} s')
  os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
  with open(args.json, 'w') as f:
    json.dump({'config': args.config, 'num_steps': args.num_steps,
               'checkpoint_every': args.checkpoint_every, 'seed': args.seed,
               'interruptions': [dataclasses.asdict(k) for k in interruptions],
               'comparison': comparison, 'uninterrupted_seconds': straight_seconds,
               'interrupted_seconds': interrupted_seconds, 'machine': platform.processor() or
               platform.machine(), 'date': time.strftime('%Y-%m-%d')}, f, indent=2)
  print(f'wrote {args.json}')
  sys.exit(0 if comparison['identical'] else 1)


if __name__ == '__main__':
  main()

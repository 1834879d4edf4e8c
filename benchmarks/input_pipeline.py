"""Is the input pipeline ever the bottleneck? Videos per second read by the grain pipeline of each
built-in dataset, next to what the training step of its experiment consumes.

For each dataset, with its experiment's config (`experiments/<name>.py`): the train pipeline
(`pipeline.make_train_dataset`: shard, shuffle, batch, [-1, 1], tokens) is read for `--batches`
batches after `--warmup` ones, in the main process (`workers 0`) and with grain worker processes
(`mp_prefetch`); then, with `--step`, the jitted train step is timed on one fixed batch (fastest of
`--steps`, after compilation). The pipeline keeps up when its videos/s exceed the step's.

  python benchmarks/input_pipeline.py                          # default configs (prepares ~3 GB once)
  python benchmarks/input_pipeline.py --builder_config smoke --data_dir /tmp/tfds --workers 0 2

Prints a table and writes JSON (--json). Measured 2026-11-25 on the project's 2-core CPU while it
was shared with a training run (`--builder_config smoke --workers 0 2 --batches 30`, 7 min, mostly
compiling), videos/s:

  dataset       | shape      | workers 0 | workers 2 | train step
  moving_shapes | 16x32x32x3 |       727 |       770 |        1.2
  moving_digits | 16x64x64x3 |       769 |       254 |        1.2

The pipeline outruns the step by more than 200x; worker processes do not help on two cores (for
64x64 videos, copying batches between processes costs more than it saves).

At the default configs (20,000 training videos each), alone, 2026-12-02 (`--workers 0 2
--batches 50 --json benchmarks/input_pipeline_default.json`), videos/s:

  dataset       | shape      | workers 0 | workers 2 | train step
  moving_shapes | 16x32x32x3 |     10958 |      5176 |        9.8
  moving_digits | 16x64x64x3 |      6242 |      1680 |       14.6
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # Run from anywhere.

from absl import flags
import grain
import jax

from experiments import moving_digits as moving_digits_experiment
from experiments import moving_shapes as moving_shapes_experiment
from vdm_jax import mesh as mesh_lib
from vdm_jax import train
from vdm_jax.data import pipeline
from vdm_jax.data import registry

EXPERIMENTS = {'moving_shapes': moving_shapes_experiment, 'moving_digits': moving_digits_experiment}


def pipeline_videos_per_second(config, builder, *, workers: int, batches: int,
                               warmup: int) -> float:
  """Videos/s of this process's train batches, steady state (after `warmup` batches)."""
  ds = pipeline.make_train_dataset(
      builder=builder, split='train', global_batch_size=config.batch_size, seed=config.seed,
      max_text_length=config.data.max_text_length, text_tokenizer=config.model.text_tokenizer,
      process_index=0, process_count=1)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=4))
  if workers:
    it_ds = it_ds.mp_prefetch(grain.multiprocessing.MultiprocessingOptions(num_workers=workers))
  it = iter(it_ds)
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  elapsed = time.perf_counter() - start
  if hasattr(it, 'close'):
    it.close()
  return batches * config.batch_size / elapsed


def step_videos_per_second(config, builder, *, steps: int) -> float:
  """Videos/s the jitted train step consumes: batch size / its fastest time on one real batch."""
  run = train.setup(config)
  tx, _ = train.create_optimizer(config)
  rng = jax.random.PRNGKey(config.seed)
  state = jax.jit(lambda: train.create_train_state(run.model, tx, config, run.video_shape, rng),
                  out_shardings=mesh_lib.replicated(run.mesh))()
  train_step = train.make_train_step(run.model, logsnr_fn=run.logsnr_fn, tx=tx, config=config,
                                     mesh=run.mesh)
  ds = pipeline.make_train_dataset(
      builder=builder, split='train', global_batch_size=config.batch_size, seed=config.seed,
      max_text_length=config.data.max_text_length, text_tokenizer=config.model.text_tokenizer,
      process_index=0, process_count=1)
  batch = mesh_lib.global_batch(ds[0], run.mesh)
  state, metrics = train_step(state, batch)  # Compiles.
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = train_step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return config.batch_size / min(times)  # Fastest: other load on a shared machine only adds time.


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--datasets', nargs='+', default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
  parser.add_argument('--builder_config', default=None,
                      help="Override the experiments' data.builder_config (e.g. 'smoke').")
  parser.add_argument('--data_dir', default=None, help="Override data.data_dir.")
  parser.add_argument('--workers', type=int, nargs='+', default=[0, 2],
                      help='grain worker processes to try (0: the main process only).')
  parser.add_argument('--batches', type=int, default=50)
  parser.add_argument('--warmup', type=int, default=5)
  parser.add_argument('--step', action=argparse.BooleanOptionalAction, default=True,
                      help="Also time the experiment's train step (compiles it).")
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--json', default=None, help='Write the results here.')
  args = parser.parse_args(argv)
  flags.FLAGS(sys.argv[:1])  # grain's worker processes read absl flags (their defaults here).

  rows = []
  for name in args.datasets:
    config = EXPERIMENTS[name].get_config()
    if args.builder_config:
      config.data.builder_config = args.builder_config
    if args.data_dir:
      config.data.data_dir = args.data_dir
    builder = registry.load_builder(config)
    row = {'dataset': name, 'builder_config': config.data.builder_config,
           'batch_size': config.batch_size,
           'video_shape': list(registry.video_shape(config))}
    for workers in args.workers:
      row[f'pipeline_videos_per_s_workers_{workers}'] = pipeline_videos_per_second(
          config, builder, workers=workers, batches=args.batches, warmup=args.warmup)
    if args.step:
      row['train_step_videos_per_s'] = step_videos_per_second(config, builder, steps=args.steps)
    rows.append(row)
    print(json.dumps(row), flush=True)

  header = ['dataset', 'shape'] + [f'workers {w}' for w in args.workers] + (
      ['train step'] if args.step else [])
  print(f'\nvideos/s on {platform.node()} ({os.cpu_count()} CPUs, {jax.devices()[0].platform}):')
  print(' | '.join(header))
  for row in rows:
    cells = [row['dataset'], 'x'.join(map(str, row['video_shape']))]
    cells += [f'{row[f"pipeline_videos_per_s_workers_{w}"]:.0f}' for w in args.workers]
    if args.step:
      cells.append(f'{row["train_step_videos_per_s"]:.1f}')
    print(' | '.join(cells))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'rows': rows, 'argv': sys.argv[1:]}, f, indent=2)


if __name__ == '__main__':
  main()

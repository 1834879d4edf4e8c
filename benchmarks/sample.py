"""Sampling speed: videos per second per sampler and number of steps, for benchmark configs.

Every row is one whole sampling run as `--mode sample` makes it (sample.make_generate_fn: one
jitted call, the sampler's loop inside it as a `lax.scan`, classifier-free guidance batching the
conditional and unconditional passes into one network call per evaluation). The first call
compiles (reported as compile_s); the timed figure is the median of `--repeats` later calls on
`sample.batch_size` prompts. Parameters are the config's initialisation, perturbed so that no
layer is zero (a trained checkpoint runs at the same speed; `--workdir` uses one anyway).

  python benchmarks/sample.py                                   # config default, all samplers
  python benchmarks/sample.py --configs S --samplers ddim dpmpp_2m --steps 20 50

Prints a table and writes JSON (--json).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # Run from anywhere.

import jax
import numpy as np

from benchmarks import common
from benchmarks import train_step
from vdm_jax import cpu_devices
from vdm_jax import samplers
from vdm_jax import train


def random_params(run):
  """The config's initial parameters, perturbed (common.perturbed_params)."""
  rng = jax.random.PRNGKey(0)
  return common.perturbed_params(jax.jit(
      lambda: train.init_params(run.model, run.config, run.video_shape, rng))())


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', nargs='+', default=['default'], choices=train_step.CONFIG_NAMES)
  parser.add_argument('--samplers', nargs='+', default=list(samplers.SAMPLERS),
                      choices=samplers.SAMPLERS)
  parser.add_argument('--steps', type=int, nargs='+', default=[20, 50])
  parser.add_argument('--guidance_weight', type=float, default=3.0, help='0: no guidance (B per call)')
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--workdir', default='', help='restore this run\'s EMA parameters instead')
  parser.add_argument('--cpu_devices', type=int, default=0,
                      help='config.mesh.cpu_devices, as launch.py sets it (0: one CPU device per '
                           "core, as many as the first config's batches split over; 1: one device)")
  parser.add_argument('--json', default='benchmarks/sample.json')
  args = parser.parse_args()

  first = train_step.make_config(args.configs[0], None)
  first.mesh.cpu_devices = args.cpu_devices
  cpu_devices.configure(first)  # Before JAX starts its CPU backend (the whole process's devices).

  print(f'{jax.device_count()} {jax.default_backend()} device(s), {os.cpu_count()} cpus')
  header = (f'{"config":>7} {"sampler":>9} {"steps":>5} {"NFE":>4} {"batch":>5} {"compile_s":>9} '
            f'{"run_s":>7} {"videos/s":>8} {"s/NFE":>6}')
  print(header)
  rows = []
  for name in args.configs:
    config = train_step.make_config(name, None)
    config.sample.guidance_weight = args.guidance_weight
    config.mesh.cpu_devices = args.cpu_devices
    # Parameters once per config; each row only rebuilds the sampler (train.use_schedule).
    run = (train.restore_for_inference(config, args.workdir) if args.workdir
           else train.setup(config))
    params = run.ema_params if args.workdir else random_params(run)
    for sampler in args.samplers:
      for steps in args.steps:
        config.sample.sampler, config.sample.num_steps = sampler, steps
        train.use_schedule(run, run.schedule_params)  # A fresh generate fn for this sampler.
        prompts = ['a red circle moving left'] * config.sample.batch_size
        start = time.perf_counter()
        run.generate(params, prompts, jax.random.PRNGKey(0))
        compile_s = time.perf_counter() - start
        times = []
        for i in range(args.repeats):
          start = time.perf_counter()
          videos = run.generate(params, prompts, jax.random.PRNGKey(i + 1))
          times.append(time.perf_counter() - start)
        assert videos.shape[0] == len(prompts) and videos.dtype == np.uint8, videos.shape
        run_s = statistics.median(times)
        nfe = samplers.nfe(sampler, steps)
        batch = config.sample.batch_size * (2 if args.guidance_weight > 0 else 1)
        row = dict(config=name, sampler=sampler, steps=steps, nfe=nfe, network_batch=batch,
                   videos=len(prompts), compile_s=compile_s - run_s, run_s=run_s,
                   videos_per_s=len(prompts) / run_s, s_per_nfe=run_s / nfe)
        print(f'{name:>7} {sampler:>9} {steps:5d} {nfe:4d} {batch:5d} {row["compile_s"]:9.1f} '
              f'{run_s:7.2f} {row["videos_per_s"]:8.3f} {row["s_per_nfe"]:6.3f}', flush=True)
        rows.append(row)
  result = dict(jax=jax.__version__, backend=jax.default_backend(), cpus=os.cpu_count(),
                devices=jax.device_count(),
                guidance_weight=args.guidance_weight, workdir=args.workdir, rows=rows)
  common.write_json(args.json, result)


if __name__ == '__main__':
  main()

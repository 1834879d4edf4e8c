"""Training-step speed, FLOPs and memory of vdm_jax's real train step, side by side with Hugging
Face diffusers' UNet3DConditionModel (PyTorch) at the same parameter count and input.

Configs (issue 8): `S` = batch 8 of 16 x 32x32x3, base 64 channels x (1, 2, 4), attention at 16x16
and 8x8; `M` = batch 4 of 16 x 64x64x3, x (1, 2, 4, 8); `default` = experiments/moving_shapes.py.
For each config and each combination of `--conv_impls`, `--remats`, `--grad_accums`,
`--cpu_ynn_reductions` and `--cpu_devices` a fresh process (so that peak memory is its own) compiles
`train.make_train_step` on synthetic data and reports: parameters, FLOPs per step (XLA cost
analysis of the plain network's forward and backward pass: lax.conv, attention all at once, no
remat; inspect_model.model_flops), compile seconds, median
seconds per step after warm-up, training videos per second, achieved GFLOP/s against this
machine's float32 matmul ceiling (measured in this run, before and after), sampler seconds per
network evaluation (DDIM with classifier-free guidance: one network call at batch 2 x
sample.batch_size per step) and peak memory (process max RSS, also as it stood after compiling
and after the timed steps, which tells the phase that sets it; XLA's own estimate of arguments +
temporaries). The diffusers reference runs in its own virtualenv
(created on first use, see benchmarks/torch_reference.py) right after the JAX rows of the same
config, so their ratio is measured side by side.

  python benchmarks/train_step.py                              # S and M, default conv_impl, + diffusers
  python benchmarks/train_step.py --configs S default --conv_impls xla matmul_grad --no_reference
  python benchmarks/train_step.py --configs S --grad_accums 1 2 --no_reference   # memory vs microbatches
  python benchmarks/train_step.py --configs S --cpu_ynn_reductions on off        # memory vs YNNPACK reductions
  python benchmarks/train_step.py --configs S --remats none block                # memory vs rematerialisation
  python benchmarks/train_step.py --configs S --cpu_devices 1 0                   # one CPU device vs one per core
  python benchmarks/train_step.py --configs S --rounds 3      # JAX and diffusers alternating, median ratio

Prints a table and writes JSON (--json).
"""

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # Run from anywhere.

from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIG_NAMES = ('S', 'M', 'default')


def make_config(name: str, conv_impl: str | None, remat: str | None = None,
                grad_accum_steps: int | None = None, ynn_reductions: bool | None = None):
  """The ml_collections config of benchmark config `name` (a moving_shapes-shaped task)."""
  from experiments import moving_shapes  # pylint: disable=g-import-not-at-top
  config = moving_shapes.get_config()
  if name in ('S', 'M'):
    # The paper-style U-Net of issue 8 on raw pixels: no patches, no temporal conv, eps target.
    config.model.patch_size = 1
    config.model.temporal_conv = False
    config.model.channels = 64
    config.model.attention_resolutions = (16, 8)
    config.model.num_res_blocks = 1
    config.diffusion.parameterization = 'eps'
    config.diffusion.loss_weighting = 'eps_mse'
  if name == 'S':
    config.batch_size = 8
    config.model.channel_mult = (1, 2, 4)
  elif name == 'M':
    config.batch_size = 4
    config.data.builder_config = 'res64'
    config.model.channel_mult = (1, 2, 4, 8)
  elif name != 'default':
    raise ValueError(f'config {name!r}: use one of {CONFIG_NAMES}.')
  config.sample.batch_size = config.batch_size
  config.sample.sampler = 'ddim'
  if conv_impl is not None:
    config.model.conv_impl = conv_impl
  if remat is not None:
    config.model.remat = remat
  if grad_accum_steps is not None:
    config.train.grad_accum_steps = grad_accum_steps
  if ynn_reductions is not None:
    config.train.cpu_ynn_reductions = ynn_reductions
  config.lock()  # A misspelled field is an error, not a new field.
  return config


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
  """This machine's float32 matmul rate now: the best of `repeats` jitted size^3 matmuls."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  matmul(a, a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size ** 3 / best / 1e9


def measure_jax(name: str, conv_impl: str | None, *, steps: int, sample_steps: int,
                remat: str | None = None, grad_accum_steps: int | None = None,
                ynn_reductions: bool | None = None, cpu_devices: int | None = None) -> dict:
  """One config's row, measured in this process (run by the parent in a fresh one)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vdm_jax import cpu_devices as cpu_devices_lib  # pylint: disable=g-import-not-at-top
  from vdm_jax import host_memory  # pylint: disable=g-import-not-at-top
  from vdm_jax import inspect_model  # pylint: disable=g-import-not-at-top
  from vdm_jax import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vdm_jax import train  # pylint: disable=g-import-not-at-top
  from vdm_jax.models import layers  # pylint: disable=g-import-not-at-top

  config = make_config(name, conv_impl, remat, grad_accum_steps, ynn_reductions)
  config.sample.num_steps = sample_steps  # Locked: changing a field is fine, adding one is not.
  if cpu_devices is not None:
    config.mesh.cpu_devices = cpu_devices
  cpu_devices_lib.configure(config)  # As launch.py does, before JAX starts its CPU backend.
  run = train.setup(config)
  tx, _ = train.create_optimizer(config)
  rng = jax.random.PRNGKey(0)
  state = jax.jit(lambda: train.create_train_state(run.model, tx, config, run.video_shape, rng))()
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  train_step = train.make_train_step(run.model, logsnr_fn=run.logsnr_fn, tx=tx, config=config,
                                     mesh=run.mesh)
  batch = common.synthetic_batch(config, run.model, config.batch_size, run.video_shape)
  batch = mesh_lib.global_batch(batch, run.mesh)

  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  host_memory.release_freed_heap()  # As train.py does after compiling its step.
  peak_rss_gib = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
  rss_after_compile = peak_rss_gib()  # Process maxima so far: which phase sets the peak.
  # Model FLOPs: those of the plain network (lax.conv, attention all at once, no remat), the same
  # for every implementation (XLA counts a loop's body once, so the chunked convolutions and
  # attention would read as fewer). Until 2026-12-06 the attention was counted chunked: S's
  # FLOPs then read 1256 GFLOP instead of 1314 (4.6% fewer).
  flops = inspect_model.model_flops(config, batch_size=config.batch_size)
  memory = compiled.memory_analysis()
  xla_bytes = (memory.argument_size_in_bytes + memory.output_size_in_bytes
               + memory.temp_size_in_bytes - memory.alias_size_in_bytes)

  state, metrics, times = common.time_steps(compiled, state, batch, steps)
  step_s = statistics.median(times)
  rss_after_train = peak_rss_gib()

  prompts = ['a red circle moving left'] * config.sample.batch_size
  start = time.perf_counter()
  run.generate(state.ema_params, prompts, jax.random.PRNGKey(1))  # Compiles the whole sampler.
  sample_compile_s = time.perf_counter() - start
  start = time.perf_counter()
  run.generate(state.ema_params, prompts, jax.random.PRNGKey(2))
  sample_s = time.perf_counter() - start
  return dict(
      config=name, framework='vdm_jax', conv_impl=layers.check_conv_impl(config.model.conv_impl),
      remat=config.model.remat, grad_accum_steps=config.train.grad_accum_steps,
      cpu_ynn_reductions=config.train.cpu_ynn_reductions, devices=jax.device_count(),
      batch=config.batch_size, video_shape=list(run.video_shape), params=int(num_params),
      flops_per_step=flops, compile_s=compile_s, step_s=step_s,
      step_s_min=min(times), videos_per_s=config.batch_size / step_s,
      gflops_per_s=flops / step_s / 1e9,
      sample_s_per_nfe=sample_s / sample_steps, sample_batch=2 * config.sample.batch_size,
      sample_compile_s=sample_compile_s,
      peak_rss_gib=peak_rss_gib(), peak_rss_after_compile_gib=rss_after_compile,
      peak_rss_after_train_gib=rss_after_train,
      xla_memory_gib=xla_bytes / 2 ** 30, jax=jax.__version__, backend=jax.default_backend())


def run_worker(name: str, conv_impl: str | None, remat: str | None, grad_accum_steps: int | None,
               ynn_reductions: bool | None, cpu_devices: int | None, args) -> dict:
  """measure_jax in a fresh process: its own peak memory, no caches from other rows."""
  command = [sys.executable, os.path.abspath(__file__), '--_worker', name,
             '--_conv_impl', conv_impl or '', '--steps', str(args.steps),
             '--sample_steps', str(args.sample_steps), '--_remat', remat or '']
  if grad_accum_steps is not None:
    command += ['--_grad_accum_steps', str(grad_accum_steps)]
  if ynn_reductions is not None:
    command += ['--_ynn_reductions', str(int(ynn_reductions))]
  if cpu_devices is not None:
    command += ['--_cpu_devices', str(cpu_devices)]
  result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout_s,
                          cwd=REPO, check=False)
  if result.returncode != 0:
    tail = result.stderr.strip().splitlines()[-1:] or ['(no output)']
    raise RuntimeError(f'config {name} (conv_impl {conv_impl}) failed: {tail[0]}')
  return json.loads(result.stdout.strip().splitlines()[-1])


def measure_config(name: str, args, show) -> list[dict]:
  """One config's JAX rows (every combination of the compared settings), then diffusers' at the
  same parameter count and input, each JAX row's speedup over it recorded."""
  jax_rows = []
  for conv_impl, remat, grad_accum_steps, ynn, devices in itertools.product(
      args.conv_impls, args.remats, args.grad_accums, args.cpu_ynn_reductions, args.cpu_devices):
    row = run_worker(name, conv_impl, remat, grad_accum_steps,
                     None if ynn is None else ynn == 'on', devices, args)
    show(row)
    jax_rows.append(row)
  if args.no_reference or name == 'default':
    return jax_rows
  from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
  config = make_config(name, None)
  frames, size = jax_rows[0]['video_shape'][:2]
  ref = torch_reference.run_reference(
      venv_dir=args.reference_venv, config_name=name, batch=config.batch_size, frames=frames,
      size=size, target_params=jax_rows[0]['params'], text_length=config.data.max_text_length,
      text_dim=config.model.text_width, steps=args.steps, threads=os.cpu_count(),
      timeout_s=args.timeout_s)
  ref.setdefault('config', name)
  ref['framework'] = 'diffusers'
  if ref.get('flops_per_step'):
    ref['gflops_per_s'] = ref['flops_per_step'] / ref['step_s'] / 1e9
  show(ref)
  for row in jax_rows:
    row['speedup_vs_diffusers'] = row['videos_per_s'] / ref['videos_per_s']
    print(f'        {name} {row_key(row)}: {row["speedup_vs_diffusers"]:.2f}x diffusers\' '
          'training videos/s')
  return jax_rows + [ref]


def row_key(row: dict) -> str:
  """The settings that tell a config's JAX rows apart."""
  return (f'{row["conv_impl"]} remat {row["remat"]} accum {row["grad_accum_steps"]} ynn reductions '
          f'{row["cpu_ynn_reductions"]} devices {row["devices"]}')


def speedup_summary(rows: list[dict]) -> dict[str, dict]:
  """Per config and JAX settings, the median, least and greatest speedup over diffusers across
  rounds (each round's ratio measured side by side)."""
  ratios = {}
  for row in rows:
    if 'speedup_vs_diffusers' in row:
      ratios.setdefault(f'{row["config"]} {row_key(row)}', []).append(row['speedup_vs_diffusers'])
  return {key: dict(median=statistics.median(r), min=min(r), max=max(r), rounds=len(r))
          for key, r in ratios.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', nargs='+', default=['S', 'M'], choices=CONFIG_NAMES)
  parser.add_argument('--conv_impls', nargs='+', default=[None],
                      help="model.conv_impl values to compare (default: the config's)")
  parser.add_argument('--steps', type=int, default=5, help='timed steps after 2 warm-up steps')
  parser.add_argument('--sample_steps', type=int, default=3, help='DDIM steps of the sampler timing')
  parser.add_argument('--remats', nargs='+', choices=('none', 'block', 'full'), default=[None],
                      help="model.remat values to compare (default: the config's, 'none'): "
                           "'block' keeps only each block's inputs for the backward pass")
  parser.add_argument('--grad_accums', nargs='+', type=int, default=[None],
                      help="train.grad_accum_steps values to compare (default: the config's, 1): "
                           'the same step in that many microbatches, less activation memory')
  parser.add_argument('--cpu_ynn_reductions', nargs='+', choices=('on', 'off'), default=[None],
                      help="train.cpu_ynn_reductions values to compare (default: the config's, "
                           "on): off keeps XLA:CPU's reductions out of YNNPACK, less memory")
  parser.add_argument('--cpu_devices', nargs='+', type=int, default=[None],
                      help="config.mesh.cpu_devices values to compare (default: the config's, 0 = "
                           'one CPU device per core, the batch split over them); 1 = one device')
  parser.add_argument('--no_reference', action='store_true', help='skip diffusers')
  parser.add_argument('--rounds', type=int, default=1,
                      help='measure everything this many times, JAX rows and diffusers alternating, '
                           'and report the median speedup (the machine is shared and noisy)')
  parser.add_argument('--reference_venv', default=os.path.join(REPO, '.venv_torch_bench'))
  parser.add_argument('--timeout_s', type=float, default=1800)
  parser.add_argument('--json', default='benchmarks/results/train_step.json')
  parser.add_argument('--_worker', help=argparse.SUPPRESS)
  parser.add_argument('--_conv_impl', help=argparse.SUPPRESS)
  parser.add_argument('--_grad_accum_steps', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--_ynn_reductions', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--_remat', help=argparse.SUPPRESS)
  parser.add_argument('--_cpu_devices', type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args._worker:  # pylint: disable=protected-access
    row = measure_jax(args._worker, args._conv_impl or None, steps=args.steps,  # pylint: disable=protected-access
                      sample_steps=args.sample_steps, remat=args._remat or None,  # pylint: disable=protected-access
                      grad_accum_steps=args._grad_accum_steps,  # pylint: disable=protected-access
                      ynn_reductions=(None if args._ynn_reductions is None  # pylint: disable=protected-access
                                      else bool(args._ynn_reductions)),  # pylint: disable=protected-access
                      cpu_devices=args._cpu_devices)  # pylint: disable=protected-access
    print(json.dumps(row))
    return

  ceiling_before = matmul_gflops()
  print(f'{os.cpu_count()} cpus, float32 matmul ceiling {ceiling_before:.0f} GFLOP/s (2048^3)')
  header = (f'{"config":>7} {"framework":>9} {"conv_impl":>11} {"remat":>5} {"accum":>5} {"ynn_red":>7} '
            f'{"devs":>4} {"params":>7} {"GFLOP":>7} '
            f'{"compile_s":>9} {"step_s":>7} {"videos/s":>8} {"GFLOP/s":>7} {"%ceil":>5} '
            f'{"s/NFE":>6} {"peak_GiB":>8}')
  print(header)
  rows = []

  def show(row):
    gflops = row.get('gflops_per_s')
    print(f'{row["config"]:>7} {row["framework"]:>9} {row.get("conv_impl", "-"):>11} '
          f'{row.get("remat", "-"):>5} '
          f'{row.get("grad_accum_steps", "-"):>5} {str(row.get("cpu_ynn_reductions", "-")):>7} '
          f'{row.get("devices", "-"):>4} {row["params"] / 1e6:6.1f}M {(row.get("flops_per_step") or 0) / 1e9:7.0f} '
          f'{row.get("compile_s", 0):9.1f} {row["step_s"]:7.3f} {row["videos_per_s"]:8.2f} '
          f'{gflops or 0:7.0f} {100 * (gflops or 0) / ceiling_before:5.0f} '
          f'{row["sample_s_per_nfe"]:6.3f} {row["peak_rss_gib"]:8.2f}', flush=True)

  for round_index in range(args.rounds):  # Rounds alternate JAX and diffusers: noise shows.
    if args.rounds > 1:
      print(f'round {round_index + 1} of {args.rounds}', flush=True)
    for name in args.configs:
      for row in measure_config(name, args, show):
        row['round'] = round_index
        rows.append(row)
  summary = speedup_summary(rows)
  for key, ratios in summary.items():
    print(f'        {key}: {ratios["median"]:.2f}x diffusers (median of {ratios["rounds"]} rounds; '
          f'{ratios["min"]:.2f}-{ratios["max"]:.2f})')

  ceiling_after = matmul_gflops()
  print(f'float32 matmul ceiling after: {ceiling_after:.0f} GFLOP/s')
  result = dict(matmul_gflops_before=ceiling_before, matmul_gflops_after=ceiling_after,
                machine=platform.machine(), cpus=os.cpu_count(), steps=args.steps,
                sample_steps=args.sample_steps, rounds=args.rounds, speedup_summary=summary,
                rows=rows)
  common.write_json(args.json, result)


if __name__ == '__main__':
  main()

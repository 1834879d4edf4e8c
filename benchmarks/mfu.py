r"""Model FLOPs utilisation (MFU) of vdm_jax's real training step on this machine's accelerator.

MFU (Chowdhery et al. 2022, PaLM, appendix B) = model FLOPs per second / the device's peak. Model
FLOPs per step are `inspect_model.model_flops`: XLA's count of the plain network's forward and
backward pass (lax.conv, attention written out, no remat), so rematerialisation and the
optimizer's elementwise updates count as overhead, not work. Two peaks, both reported:
- the data sheet's dense rate for the compute dtype (`SPEC_PEAK_TFLOPS`; NVIDIA H100 SXM and
  H200: 989.4 bfloat16 TFLOP/s without sparsity), the usual denominator of MFU;
- the best of a few large matmuls in that dtype, measured in the same run (what XLA reaches on
  this device now: 769-798 TFLOP/s in bfloat16 on the lent H100s, /work/.library/device/KINDS.md).

For each `--batch_sizes` value (the global batch, split over every device) the script compiles
`train.make_train_step` on synthetic data of the config's shape, times `--steps` steps after two
warm-up steps and reports: parameters, model TFLOP per step, compile seconds, median seconds per
step, training videos per second, achieved TFLOP/s, MFU against both peaks, the attention kernels
in the compiled step (cuDNN flash attention calls vs none) and peak device memory. A batch that
does not fit is reported as such and ends the sweep.

  # The paper-scale UCF-101 model (Ho et al. 2022) in bfloat16 on one GPU ('auto' attention on a
  # GPU is cuDNN's flash attention where it applies):
  python benchmarks/mfu.py --config experiments/ucf101.py --config.model.dtype=bfloat16 \
      --batch_sizes 8 16 32 --json benchmarks/mfu_ucf101_h100.json
  # The same maths on this CPU, small (peak: the measured float32 matmul only):
  python benchmarks/mfu.py --config experiments/ucf101.py:laptop --batch_sizes 4 --steps 2

Prints a table and writes JSON (--json).
"""

import os
import re
import resource
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # Run from anywhere.

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position

config_flags.DEFINE_config_file('config', os.path.join(REPO, 'experiments', 'ucf101.py'),
                                'Experiment config file[:variant]; --config.* overrides apply.',
                                lock_config=True)
flags.DEFINE_multi_integer('batch_sizes', None, 'Global batch sizes to measure, ascending '
                           "(default: the config's batch_size).")
flags.DEFINE_integer('steps', 5, 'Timed steps after 2 warm-up steps.')
flags.DEFINE_float('flops_per_example', None, 'Model FLOPs of one training example, counted '
                   'beforehand (`python launch.py --config X --mode inspect` prints it, on any '
                   'machine): saves compiling the plain network on the device. Default: counted here.')
flags.DEFINE_float('peak_tflops', None, "Override the data sheet's peak (TFLOP/s) for this "
                   'device and dtype, e.g. for a device kind missing from SPEC_PEAK_TFLOPS.')
flags.DEFINE_string('json', 'benchmarks/results/mfu.json', 'Where to write the results.')
FLAGS = flags.FLAGS

# Dense (no sparsity) tensor-core / MXU peaks in TFLOP/s by device-kind substring (lower case,
# first match wins) and compute dtype, from the vendors' data sheets: NVIDIA H100 (SXM5 989.4
# bf16, 494.7 tf32; PCIe 756 / 378), H200 (as H100 SXM), A100 (312 bf16, 156 tf32); Google Cloud
# TPU system architecture pages (v4 275, v5e 197, v5p 459, v6e 918 bf16).
SPEC_PEAK_TFLOPS = (
    ('h100 pcie', {'bfloat16': 756.0, 'float32': 378.0}),
    ('h100', {'bfloat16': 989.4, 'float32': 494.7}),
    ('h200', {'bfloat16': 989.4, 'float32': 494.7}),
    ('a100', {'bfloat16': 312.0, 'float32': 156.0}),
    ('tpu v4', {'bfloat16': 275.0}),
    ('tpu v5 lite', {'bfloat16': 197.0}),
    ('tpu v5', {'bfloat16': 459.0}),
    ('tpu v6 lite', {'bfloat16': 918.0}),
)


def spec_peak_tflops(device_kind: str, dtype: str) -> float | None:
  """The data sheet's dense peak for `device_kind` (jax.Device.device_kind) in `dtype`; None
  where not listed (CPUs: use the measured matmul rate)."""
  kind = device_kind.lower()
  for key, peaks in SPEC_PEAK_TFLOPS:
    if key in kind:
      return peaks.get(dtype)
  return None


def matmul_tflops(dtype: str, *, repeats: int = 5) -> float:
  """This machine's matmul rate now, all devices together: the best of `repeats` jitted n^3
  products per device (n = 8192 on accelerators, 2048 on CPUs), each device its own product."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  n = 2048 if jax.default_backend() == 'cpu' else 8192
  devices = jax.devices()
  mesh = jax.make_mesh((len(devices),), ('d',), devices=devices)
  sharding = NamedSharding(mesh, P('d'))
  a = jax.jit(lambda k: jax.random.normal(k, (len(devices), n, n), jnp.dtype(dtype)),
              out_shardings=sharding)(jax.random.PRNGKey(0))
  product = jax.jit(lambda a: jnp.einsum('dij,djk->dik', a, a), out_shardings=sharding)
  product(a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    product(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * len(devices) * n ** 3 / best / 1e12


def attention_kernels(hlo_text: str) -> dict[str, int]:
  """Attention kernels in a compiled program: cuDNN's fused forward calls (custom calls to
  '__cudnn$fmha...', backward ones not counted); XLA's written-out attention shows as 0."""
  targets = re.findall(r'custom_call_target="__cudnn\$(fmha\w*)"', hlo_text)
  return {'cudnn_fmha': sum(1 for t in targets if 'Backward' not in t)}


def peak_memory_gib() -> float:
  """Peak memory so far: the devices' allocator peak (GPU/TPU), else this process's max RSS."""
  import jax  # pylint: disable=g-import-not-at-top
  stats = [d.memory_stats() or {} for d in jax.local_devices()]
  peaks = [s['peak_bytes_in_use'] for s in stats if 'peak_bytes_in_use' in s]
  if peaks:
    return max(peaks) / 2 ** 30
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def measure(config, batch_size: int, steps: int, flops_per_example: float | None) -> dict:
  """One batch size's row (the config is copied, not changed)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vdm_jax import host_memory  # pylint: disable=g-import-not-at-top
  from vdm_jax import inspect_model  # pylint: disable=g-import-not-at-top
  from vdm_jax import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vdm_jax import train  # pylint: disable=g-import-not-at-top
  from vdm_jax.models import layers  # pylint: disable=g-import-not-at-top

  config = config.copy_and_resolve_references()
  config.batch_size = batch_size
  config.sample.batch_size = batch_size
  run = train.setup(config)
  tx, _ = train.create_optimizer(config)
  state = jax.jit(lambda: train.create_train_state(run.model, tx, config, run.video_shape,
                                                   jax.random.PRNGKey(0)))()
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  train_step = train.make_train_step(run.model, logsnr_fn=run.logsnr_fn, tx=tx, config=config,
                                     mesh=run.mesh)
  batch = mesh_lib.global_batch(common.synthetic_batch(config, run.model, batch_size,
                                                       run.video_shape),
                                run.mesh)
  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  host_memory.release_freed_heap()
  kernels = attention_kernels(compiled.as_text())
  if flops_per_example is None:  # Linear in the batch: count one example's, compiled once.
    flops_per_example = inspect_model.model_flops(config, batch_size=1)
  state, metrics, times = common.time_steps(compiled, state, batch, steps)
  step_s = statistics.median(times)
  flops = flops_per_example * batch_size
  device = jax.devices()[0]
  return dict(
      backend=jax.default_backend(), device_kind=device.device_kind, devices=jax.device_count(),
      dtype=config.model.dtype, conv_impl=layers.check_conv_impl(config.model.conv_impl),
      attention_impl=config.model.attention_impl, remat=config.model.remat, **kernels,
      batch=batch_size, video_shape=[run.video_shape[0] + config.data.num_images_per_video,
                                     *run.video_shape[1:]],
      params=int(num_params), flops_per_example=flops_per_example, flops_per_step=flops,
      compile_s=compile_s, step_s=step_s, step_s_min=min(times),
      videos_per_s=batch_size / step_s, tflops_per_s=flops / step_s / 1e12,
      loss=float(metrics['train/loss']), peak_memory_gib=peak_memory_gib(), jax=jax.__version__)


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from vdm_jax import cpu_devices  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  cpu_devices.configure(config)  # As launch.py does, before JAX starts its CPU backend.
  dtype = config.model.dtype
  kind = jax.devices()[0].device_kind
  spec = FLAGS.peak_tflops or spec_peak_tflops(kind, dtype)
  spec_total = spec * jax.device_count() if spec else None
  matmul_before = matmul_tflops(dtype)
  print(f'{jax.device_count()} x {kind} ({jax.default_backend()}), {dtype}: data-sheet peak '
        f'{spec_total or "-"} TFLOP/s, measured {dtype} matmul {matmul_before:.1f} TFLOP/s')
  print(f'{"batch":>5} {"params":>8} {"TFLOP/step":>10} {"compile_s":>9} {"step_s":>7} '
        f'{"videos/s":>8} {"TFLOP/s":>8} {"MFU":>6} {"vs_mm":>6} {"cudnn":>5} {"peak_GiB":>8}')
  rows, flops_per_example = [], FLAGS.flops_per_example
  for batch_size in FLAGS.batch_sizes or [config.batch_size]:
    try:
      row = measure(config, batch_size, FLAGS.steps, flops_per_example)
    except Exception as e:  # pylint: disable=broad-except
      if 'RESOURCE_EXHAUSTED' not in str(e) and 'Out of memory' not in str(e):
        raise
      print(f'{batch_size:>5} does not fit: {str(e).splitlines()[0][:160]}', flush=True)
      rows.append(dict(batch=batch_size, out_of_memory=True))
      break
    flops_per_example = row['flops_per_example']
    row['mfu'] = row['tflops_per_s'] / spec_total if spec_total else None
    row['mfu_vs_matmul'] = row['tflops_per_s'] / matmul_before
    rows.append(row)
    mfu = f'{100 * row["mfu"]:5.1f}%' if row['mfu'] is not None else '     -'
    print(f'{batch_size:>5} {row["params"] / 1e6:7.1f}M {row["flops_per_step"] / 1e12:10.2f} '
          f'{row["compile_s"]:9.1f} {row["step_s"]:7.3f} {row["videos_per_s"]:8.2f} '
          f'{row["tflops_per_s"]:8.2f} {mfu} {100 * row["mfu_vs_matmul"]:5.1f}% '
          f'{row["cudnn_fmha"]:>5} {row["peak_memory_gib"]:8.2f}', flush=True)
  matmul_after = matmul_tflops(dtype)
  print(f'measured {dtype} matmul after: {matmul_after:.1f} TFLOP/s')
  common.write_json(FLAGS.json, dict(
      arguments=sys.argv[1:],
      device_kind=kind, devices=jax.device_count(), dtype=dtype, spec_peak_tflops=spec_total,
      matmul_tflops_before=matmul_before, matmul_tflops_after=matmul_after, steps=FLAGS.steps,
      rows=rows))


if __name__ == '__main__':
  app.run(main)

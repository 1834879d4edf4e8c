"""Peak activation memory of a training step with config.model.remat 'none', 'block' and 'full'.

For each mode, the gradient of a denoising loss through the network (the forward and backward
passes of a train step; vdm_jax.inspect_model.compile_network_gradient) is compiled on abstract
inputs, never run, and XLA's `memory_analysis()` gives its temporary buffers (activations kept
for the backward pass, workspace); `cost_analysis()` gives its FLOPs, which remat raises by the
recomputed forward pass. A mid-size model by default: experiments/moving_shapes.py at 64
channels x (1, 2, 2), 2 res blocks per level, attention at 16 and 8, on 16 frames of 32x32
without patches, batch 4. Three compiles, 1.5 to 3 minutes each on the shared 2-core CPU.

Measured 2026-12-06 on that CPU (XLA:CPU, jax 0.10.2, the CPU defaults conv_impl=im2col_chunks
and attention_impl=chunked; benchmarks/remat_memory.json): 9.87M parameters, batch 4 of
16x32x32x3:

  remat   temp memory   GFLOP (as XLA counts them: a chunk loop's body once)
  none     3898.4 MiB   267.8
  block    1571.3 MiB   350.9  (x1.31)
  full     3893.8 MiB   359.8  (x1.34)

'block' keeps 40% of the temporaries. 'full' keeps only the network's input for the backward
pass, but that pass then recomputes every activation at once, so the network's peak is the same;
it lowers memory only where something outside the network is alive beside it. Until 2026-12-06
remat was jax.checkpoint (through nn.remat), and every row had the same memory (4655.7 MiB on 2026-11-25, with
the conv and attention implementations of that day):
XLA:CPU expands jax.checkpoint's optimization barriers early and CSE merges the recomputation
with the forward pass (jax-ml/jax#19822); vdm_jax/models/remat.py ties the recomputation to the
cotangent instead. Config S's whole train step, side by side: benchmarks/train_step.py --remats.

  python benchmarks/remat_memory.py
  python benchmarks/remat_memory.py --batch 8 --channels 128

Prints a table and writes JSON (--json).
"""

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # Run from anywhere.

import jax

from experiments import moving_shapes
from benchmarks import common
from vdm_jax import config_validation
from vdm_jax import inspect_model
from vdm_jax import train
from vdm_jax.models import unet


def mid_size_config(channels: int):
  config = moving_shapes.get_config()
  config.model.patch_size = 1
  config.model.channels = channels
  config.model.channel_mult = (1, 2, 2)
  config.model.num_res_blocks = 2
  config.model.attention_resolutions = (16, 8)
  return config


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--channels', type=int, default=64)
  parser.add_argument('--json', default='benchmarks/remat_memory.json')
  args = parser.parse_args()

  config = mid_size_config(args.channels)
  rows = []
  for mode in unet.REMAT_MODES:
    model = train.create_model(config).clone(remat=mode)
    start = time.time()
    compiled, params = inspect_model.compile_network_gradient(config, batch_size=args.batch,
                                                              model=model)
    memory = compiled.memory_analysis()
    rows.append(dict(remat=mode, temp_bytes=int(memory.temp_size_in_bytes),
                     flops=float(inspect_model._cost(compiled)['flops']),  # pylint: disable=protected-access
                     compile_s=round(time.time() - start, 1)))
  parameters = int(sum(x.size for x in jax.tree.leaves(params)))
  video_shape = list(config_validation.video_shape(config))
  base = rows[0]
  print(f'{parameters:,} parameters; gradient of batch {args.batch} x '
        f'{"x".join(map(str, video_shape))} ({jax.devices()[0].platform})')
  print(f'{"remat":<6} {"temp memory":>12} {"vs none":>8} {"GFLOP":>9} {"vs none":>8}')
  for row in rows:
    row['temp_vs_none'] = row['temp_bytes'] / base['temp_bytes']
    row['flops_vs_none'] = row['flops'] / base['flops']
    print(f'{row["remat"]:<6} {row["temp_bytes"] / 2**20:>9.1f} MiB {row["temp_vs_none"]:>8.2f} '
          f'{row["flops"] / 1e9:>9.1f} {row["flops_vs_none"]:>8.2f}')
  result = dict(benchmark='remat_memory', batch=args.batch, channels=args.channels,
                channel_mult=list(config.model.channel_mult),
                num_res_blocks=config.model.num_res_blocks,
                attention_resolutions=list(config.model.attention_resolutions),
                video_shape=video_shape, parameters=parameters, rows=rows,
                backend=jax.devices()[0].platform, jax=jax.__version__,
                machine=platform.machine(), cpus=os.cpu_count(),
                date=time.strftime('%Y-%m-%d'))
  common.write_json(args.json, result)


if __name__ == '__main__':
  main()

"""Training-step cost of VideoUNet on this machine per conv_impl ('xla', 'im2col', 'matmul_grad',
'im2col_chunks', 'winograd'), model sizes, and where the time goes (convs vs attention vs norms).

Each row times one jitted forward+backward (jax.value_and_grad of an MSE) in steady state, after
compilation; the median of `--steps` runs. The cost split times every FrameConv / GroupNorm /
Attention call the model makes, standalone (forward+backward at the same shapes), and sums by
kind; 'rest' = step time - sum (elementwise ops, concatenations, the text encoder's MLPs...).

  python benchmarks/conv_impl.py                      # defaults: batch 8, 16 x 32x32x3
  python benchmarks/conv_impl.py --channels 32 --attention 8 --split
  python benchmarks/conv_impl.py --passes             # one 3x3 conv: forward, input and kernel
                                                      # gradient apart, per conv_impl and shape

--passes is where 'matmul_grad' and 'im2col_chunks' come from: XLA's CPU kernel-gradient
convolution runs at a fraction of its forward convolution's rate at the U-Net's high-resolution
shapes, and its forward convolution below its matmul rate. (XLA's cost analysis counts a loop's
body once, so the GFLOP column reads low for the chunked impls: compare step_s. 'winograd'
does 1/4 or 4/9 of the direct convolution's multiplies, so its GFLOP/s in --passes, counted with
the direct convolution's FLOPs, are effective rates and may exceed the matmul ceiling.)

Prints a table and writes JSON (--json).
"""

import argparse
import collections
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # Run from anywhere.

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from vdm_jax.models import attention as attention_lib
from vdm_jax.models import layers
from vdm_jax.models.unet import VideoUNet


def time_fn(fn, *args, steps: int) -> float:
  """Fastest of `steps` calls of a jitted fn, after one compile+run (min, not median: the
  machine may be shared, and other load only ever adds time)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.min(times))


def fwd_bwd(apply_fn):
  """jit(value_and_grad) of sum(out^2) w.r.t. all inputs (params and activations)."""
  def loss(*args):
    return jnp.mean(jnp.square(apply_fn(*args).astype(jnp.float32)))
  return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(2))))


def make_inputs(args):
  rng = np.random.default_rng(0)
  shape = (args.batch, args.frames, args.size, args.size, 3)
  z = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  tokens = np.zeros((args.batch, args.text_length), np.int32)
  tokens[:, :24] = rng.integers(1, 257, (args.batch, 24))
  return z, dict(logsnr=jnp.asarray(rng.uniform(-10, 10, args.batch), jnp.float32),
                 text_tokens=jnp.asarray(tokens), drop_text=jnp.asarray(rng.random(args.batch) < 0.1))


def step_time(model, z, kwargs, *, steps: int) -> tuple[float, float, int]:
  params = jax.jit(model.init)(jax.random.PRNGKey(0), z, **kwargs)
  params = common.perturbed_params(params)  # No gradient identically zero (zero-init output layers).
  grad_fn = fwd_bwd(lambda p, zz: model.apply(p, zz, **kwargs))
  cost = grad_fn.lower(params, z).cost_analysis()
  flops = float((cost[0] if isinstance(cost, (list, tuple)) else cost).get('flops', np.nan))
  start = time.perf_counter()
  jax.block_until_ready(grad_fn(params, z))
  compile_s = time.perf_counter() - start
  num_params = sum(x.size for x in jax.tree.leaves(params))
  return time_fn(grad_fn, params, z, steps=steps), compile_s, num_params, flops


def record_calls(model, z, kwargs):
  """(kind, name, module, arg shapes/dtypes, kwargs shapes) for every leaf-op module call."""
  calls = []

  def interceptor(next_fun, args, kw, context):
    module = context.module
    if context.method_name == '__call__' and isinstance(
        module, (layers.FrameConv, layers.GroupNorm, attention_lib.Attention)):
      kind = {layers.FrameConv: 'conv', layers.GroupNorm: 'norm',
              attention_lib.Attention: 'attention'}[type(module)]
      spec = lambda x: None if x is None else jax.ShapeDtypeStruct(x.shape, x.dtype)
      calls.append((kind, module.name, module.clone(parent=None, name=None),
                    [spec(a) for a in args], {k: spec(v) for k, v in kw.items()}))
    return next_fun(*args, **kw)

  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), z, **kwargs)
  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda p: model.apply(p, z, **kwargs), params)
  return calls


def cost_split(model, z, kwargs, *, steps: int) -> dict:
  """Seconds per step by op kind, timing each distinct (module, shapes) once."""
  groups = collections.defaultdict(list)
  for kind, name, module, arg_specs, kw_specs in record_calls(model, z, kwargs):
    # Attention sub-kinds by module name: attn_space / attn_time / attn_text / text encoder.
    if kind == 'attention':
      kind = name if name in ('attn_space', 'attn_time', 'attn_text') else 'text_encoder_attn'
    key = (kind, repr(module), tuple((s.shape, str(s.dtype)) for s in arg_specs if s is not None),
           tuple(sorted((k, None if s is None else (s.shape, str(s.dtype)))
                        for k, s in kw_specs.items())))
    groups[key].append((module, arg_specs, kw_specs))
  totals = collections.defaultdict(float)
  rng = np.random.default_rng(0)

  def sample(s):
    if s is None:
      return None
    if s.dtype == jnp.bool_:
      return jnp.ones(s.shape, bool)
    return jnp.asarray(rng.standard_normal(s.shape), s.dtype)

  for (kind, *_), calls in groups.items():
    module, arg_specs, kw_specs = calls[0]
    inputs = [sample(s) for s in arg_specs]
    kw = {k: sample(s) for k, s in kw_specs.items()}
    params = module.init(jax.random.PRNGKey(0), *inputs, **kw)
    x, rest = inputs[0], inputs[1:]
    grad_fn = fwd_bwd(lambda p, xx: module.apply(p, xx, *rest, **kw))
    totals[kind] += len(calls) * time_fn(grad_fn, params, x, steps=steps)
  return dict(totals)


PASS_SHAPES = ((32, 64), (16, 128), (8, 256), (32, 128))  # (height = width, channels) of 3x3 convs


def conv_passes(frames: int, *, steps: int) -> list[dict]:
  """GFLOP/s of the forward pass, the input gradient and the kernel gradient of one SAME 3x3
  conv (stride 1, Cin = Cout) on [frames, size, size, channels], per conv_impl: each pass jitted
  alone (a VJP with the residuals computed inside, as in a training step's backward pass)."""
  rows = []
  impls = [i for i in layers.CONV_IMPLS if i != 'auto']
  for size, channels in PASS_SHAPES:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, frames, size, size, channels)), jnp.float32)
    dy = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    flops = 2 * frames * size * size * channels * channels * 9
    row = dict(size=size, channels=channels, frames=frames, gflop_per_pass=flops / 1e9)
    for impl in impls:
      conv = layers.FrameConv(channels, conv_impl=impl)
      params = conv.init(jax.random.PRNGKey(0), x)
      forward = jax.jit(conv.apply)
      input_grad = jax.jit(lambda p, x, dy: jax.vjp(lambda x: conv.apply(p, x), x)[1](dy))
      kernel_grad = jax.jit(lambda p, x, dy: jax.vjp(lambda p: conv.apply(p, x), p)[1](dy))
      row[impl] = dict(
          forward=flops / time_fn(forward, params, x, steps=steps) / 1e9,
          input_grad=flops / time_fn(input_grad, params, x, dy, steps=steps) / 1e9,
          kernel_grad=flops / time_fn(kernel_grad, params, x, dy, steps=steps) / 1e9)
      # The input- and kernel-gradient timings include the forward the VJP needs for residuals
      # only where the conv_impl keeps some (im2col's columns); lax.conv keeps x itself.
      print(f'{size:>4}x{size:<3} {channels:>4} ch {impl:>11}: forward {row[impl]["forward"]:5.0f}, '
            f'input grad {row[impl]["input_grad"]:5.0f}, kernel grad '
            f'{row[impl]["kernel_grad"]:5.0f} GFLOP/s', flush=True)
    rows.append(row)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--frames', type=int, default=16)
  parser.add_argument('--size', type=int, default=32)
  parser.add_argument('--text_length', type=int, default=64)
  parser.add_argument('--channels', type=int, nargs='+', default=[32, 48, 64])
  parser.add_argument('--channel_mult', type=int, nargs='+', default=[1, 2, 2])
  parser.add_argument('--attention', nargs='+', default=['8', '8,16'],
                      help='attention_resolutions per row, comma-separated sizes')
  parser.add_argument('--impls', nargs='+', default=list(layers.CONV_IMPLS))
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--num_res_blocks', type=int, default=1)
  parser.add_argument('--split', action='store_true', help='also time convs/attention/norms')
  parser.add_argument('--passes', action='store_true',
                      help='only time one conv\'s forward / input grad / kernel grad per conv_impl')
  parser.add_argument('--json', default='benchmarks/conv_impl.json')
  args = parser.parse_args()

  if args.passes:
    frames = args.batch * args.frames
    print(f'3x3 conv on [{frames} frames, size, size, channels], {os.cpu_count()} cpus; GFLOP/s '
          f'counts 2 * frames * size^2 * channels^2 * 9 per pass')
    rows = conv_passes(frames, steps=args.steps)
    common.write_json(args.json, dict(jax=jax.__version__, cpus=os.cpu_count(), passes=rows))
    return

  z, kwargs = make_inputs(args)
  rows = []
  header = (f'{"channels":>8} {"attn_res":>8} {"conv_impl":>9} {"params":>9} {"compile_s":>9} '
            f'{"GFLOP":>7} {"step_s":>7} {"GFLOP/s":>7}')
  print(f'batch {args.batch}, video {args.frames}x{args.size}x{args.size}x3, fwd+bwd, '
        f'{jax.device_count()} {jax.devices()[0].platform} device(s), {os.cpu_count()} cpus')
  print(header)
  for channels in args.channels:
    for attn in args.attention:
      attn_res = tuple(int(a) for a in attn.split(',') if a)
      for impl in args.impls:
        model = VideoUNet(channels=channels, channel_mult=tuple(args.channel_mult),
                          attention_resolutions=attn_res, num_res_blocks=args.num_res_blocks,
                          max_text_length=args.text_length,
                          conv_impl=impl)
        step_s, compile_s, num_params, flops = step_time(model, z, kwargs, steps=args.steps)
        row = dict(channels=channels, attention_resolutions=list(attn_res), conv_impl=impl,
                   params=num_params, gflop=flops / 1e9, compile_s=compile_s, step_s=step_s)
        print(f'{channels:>8} {attn:>8} {impl:>9} {num_params / 1e6:8.2f}M {compile_s:9.1f} '
              f'{flops / 1e9:7.0f} {step_s:7.3f} {flops / 1e9 / step_s:7.0f}', flush=True)
        if args.split:
          split = cost_split(model, z, kwargs, steps=args.steps)
          split['rest'] = step_s - sum(split.values())
          row['split_s'] = split
          print('         split: ' + ', '.join(f'{k} {v:.3f}s ({100 * v / step_s:.0f}%)'
                                             for k, v in sorted(split.items())), flush=True)
        rows.append(row)
  result = dict(batch=args.batch, frames=args.frames, size=args.size, text_length=args.text_length,
                channel_mult=args.channel_mult, steps=args.steps, jax=jax.__version__,
                machine=platform.machine(), cpus=os.cpu_count(), rows=rows)
  common.write_json(args.json, result)


if __name__ == '__main__':
  main()

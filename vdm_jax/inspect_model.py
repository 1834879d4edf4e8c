"""`--mode inspect`: the size and cost of a config's model, without initialising or training it.

Everything is abstract: the parameters come from `jax.eval_shape`, the gradient of a denoising
loss through the network is lowered on `jax.ShapeDtypeStruct`s and compiled (never run), and
XLA's analyses of the compiled gradient give

  parameters            the U-Net's (and its text encoder's) parameter count;
  FLOPs / example       `cost_analysis()['flops']` of the loss gradient through the network (the
                        forward and backward passes of a training step) at batch 1: a video and
                        its `data.num_images_per_video` appended images, as training runs it.
                        Model FLOPs: counted on the plain network (lax.conv, attention all at
                        once, no remat), the same maths as any conv_impl / attention_impl, since
                        XLA counts the body of the CPU defaults' chunk loops only once and
                        remat's recomputation is not model work;
  activation memory     `memory_analysis().temp_size_in_bytes` of the configured network's
                        gradient at batch 1: the buffers XLA allocates besides its inputs and
                        outputs (activations kept for the backward pass, workspace);
  state memory          4 x the parameters' bytes: params, EMA and Adam's two moments (the
                        gradient, another copy, is the compiled function's output).

The numbers are the compiler's for the machine it runs on (the CPU here): GPU/TPU compilers fuse
and schedule differently, so treat the memory as an estimate. The compile uses XLA's lowest CPU
backend optimisation level: it changes the generated machine code only, not the HLO that the
analyses read, and takes a fraction of the time.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from vdm_jax import conditioning
from vdm_jax import config_validation
from vdm_jax import train
from vdm_jax.models import attention
from vdm_jax.models import layers
from vdm_jax.models import unet

# Analysis-only compile: LLVM's cheapest settings (machine code we never run).
ANALYSIS_COMPILER_OPTIONS = {'xla_backend_optimization_level': 0,
                             'xla_llvm_disable_expensive_passes': True}


@dataclasses.dataclass
class Report:
  parameters: int
  flops_per_example: float
  activation_bytes_per_example: int
  state_bytes: int
  video_shape: tuple[int, ...]

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  return cost[0] if isinstance(cost, (list, tuple)) else cost  # A list in older JAX versions.


def lower_network_gradient(config: ml_collections.ConfigDict, *, batch_size: int = 1,
                           model: unet.VideoUNet | None = None,
                           lowering_platforms: tuple[str, ...] | None = None):
  """The gradient of a denoising loss through the config's network, lowered on abstract inputs
  (never run): the forward and backward passes of a training step, which are all but a
  negligible part of its FLOPs and activation memory (the optimizer and EMA updates are
  elementwise over the parameters). `lowering_platforms` (e.g. ('cuda',)) lowers for another
  platform than this machine's, which shows the GPU program (its cuDNN calls) on a CPU host.

  Returns (lowered, abstract params). `model` overrides the config's (benchmarks compare
  variants of one config).
  """
  frames, *frame_shape = config_validation.video_shape(config)
  num_images = config.data.num_images_per_video  # Joint image-video training: T + K frames.
  model = train.create_model(config) if model is None else model
  z = jax.ShapeDtypeStruct((batch_size, frames + num_images, *frame_shape), jnp.float32)
  inputs = dict(logsnr=jax.ShapeDtypeStruct((batch_size,), jnp.float32),
                **conditioning.abstract_inputs(config, model, batch_size=batch_size,
                                               video_shape=z.shape[1:]),
                drop_text=jax.ShapeDtypeStruct((batch_size,), jnp.bool_))
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), z, **inputs)['params']

  def loss(params, z, target, inputs):
    out = model.apply({'params': params}, z, **inputs, train=True, num_images=num_images,
                      rngs={'dropout': jax.random.PRNGKey(0)})
    return jnp.mean(jnp.square(out - target))  # float32, as diffusion.py's losses.

  traced = jax.jit(jax.value_and_grad(loss)).trace(params, z, z, inputs)
  lowered = (traced.lower() if lowering_platforms is None
             else traced.lower(lowering_platforms=lowering_platforms))
  return lowered, params


def compile_network_gradient(config: ml_collections.ConfigDict, *, batch_size: int = 1,
                             model: unet.VideoUNet | None = None,
                             compiler_options: dict[str, Any] | None = None):
  """`lower_network_gradient`, compiled for this machine (never run). Compiling the train step
  itself (train.make_train_step) measured 20.34 TFLOP per example for experiments/ucf101.py
  against 20.32 here (2026-11, 16 frames, lax.conv), and took five times longer to compile on
  the 2-core CPU.

  Returns (compiled, abstract params).
  """
  lowered, params = lower_network_gradient(config, batch_size=batch_size, model=model)
  compiled = lowered.compile(
      ANALYSIS_COMPILER_OPTIONS if compiler_options is None else compiler_options)
  return compiled, params


def _is_plain(config: ml_collections.ConfigDict) -> bool:
  """Whether the config's network, on this backend, already is the plain one of model_flops."""
  return (layers.check_conv_impl(config.model.conv_impl) == 'xla'
          and attention.check_attention_impl(config.model.attention_impl) == 'dot_product_attention'
          and config.model.remat == 'none')


def model_flops(config: ml_collections.ConfigDict, *, batch_size: int = 1,
                compiled=None) -> float:
  """FLOPs of the loss gradient through the config's network, counted on the plain network
  (lax.conv, attention all at once, no remat): XLA counts a loop's body once, so the chunked CPU
  implementations would read as fewer (config S: the chunked attention alone 4.6% fewer, the
  chunked convolutions several times fewer), and remat's recomputation is not model work.
  `compiled`: the config's own compiled gradient at `batch_size`, reused when the network
  already is the plain one (GPUs' defaults) instead of compiling it again."""
  if compiled is None or not _is_plain(config):
    plain = train.create_model(config).clone(conv_impl='xla',
                                             attention_impl='dot_product_attention', remat='none')
    compiled, _ = compile_network_gradient(config, batch_size=batch_size, model=plain)
  return float(_cost(compiled)['flops'])


def inspect(config: ml_collections.ConfigDict) -> Report:
  """Parameters, FLOPs and memory of one training example of `config`'s model (nothing runs)."""
  config_validation.validate(config)
  compiled, params = compile_network_gradient(config, batch_size=1)
  param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  return Report(
      parameters=int(sum(x.size for x in jax.tree.leaves(params))),
      flops_per_example=model_flops(config, batch_size=1, compiled=compiled),
      activation_bytes_per_example=int(compiled.memory_analysis().temp_size_in_bytes),
      state_bytes=int(4 * param_bytes),  # params, EMA, Adam's two moments.
      video_shape=tuple(config_validation.video_shape(config)))


def _human(n: float, unit: str = '') -> str:
  for scale, suffix in ((1e15, 'P'), (1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if abs(n) >= scale:
      return f'{n / scale:.2f} {suffix}{unit}'
  return f'{n:.0f} {unit}'


def format_report(config: ml_collections.ConfigDict, report: Report) -> str:
  m = config.model
  batch = config.batch_size
  accum = config.train.grad_accum_steps
  held = batch // accum  # Gradient accumulation holds one microbatch's activations at a time.
  return '\n'.join([
      f'model: {m.channels} channels x {tuple(m.channel_mult)}, {m.num_res_blocks} res blocks per '
      f'level, attention at {tuple(m.attention_resolutions)}, head dim {m.head_dim}, '
      f'dtype {m.dtype}, remat {m.remat}; video {"x".join(map(str, report.video_shape))}'
      + (f' + {config.data.num_images_per_video} images (joint training)'
         if config.data.num_images_per_video else ''),
      f'parameters:                       {report.parameters:,} ({_human(report.parameters)})',
      f'train FLOPs per example:          {_human(report.flops_per_example, "FLOP")}'
      f'  (x batch {batch}: {_human(report.flops_per_example * batch, "FLOP")} per step)',
      f'activation memory per example:    {_human(report.activation_bytes_per_example, "B")}'
      f'  (XLA temp buffers of the compiled gradient at batch 1, this backend;'
      f' x {held} videos held at once: {_human(report.activation_bytes_per_example * held, "B")}'
      + (f', batch {batch} in train.grad_accum_steps={accum} microbatches)' if accum > 1 else ')'),
      f'state memory:                     {_human(report.state_bytes, "B")}'
      f'  (params, EMA, Adam moments)',
  ])


def inspect_and_print(config: ml_collections.ConfigDict) -> Report:
  """The body of `launch.py --mode inspect`."""
  report = inspect(config)
  print(format_report(config, report), flush=True)
  return report

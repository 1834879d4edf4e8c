"""--mode inspect: parameters, FLOPs and memory of the compiled network gradient, nothing run."""

import jax

from experiments import moving_shapes
from vdm_jax import config_validation
from vdm_jax import inspect_model
from vdm_jax import train
from vdm_jax.models import attention as attention_lib
from vdm_jax.models import layers


def tiny_config():
  config = moving_shapes.get_config('smoke')
  config.model.channels = 8
  config.model.channel_mult = (1,)
  config.model.attention_resolutions = (16,)  # smoke data: 32x32 frames, patch 2
  config.model.head_dim = 8
  config.model.text_width = 8
  config.model.text_heads = 1
  config.data.max_text_length = 8
  return config


def test_inspect_reports_the_compiled_gradient():
  config = tiny_config()
  report = inspect_model.inspect(config)
  shapes = jax.eval_shape(lambda: train.init_params(
      train.create_model(config), config, config_validation.video_shape(config),
      jax.random.PRNGKey(0)))
  params = sum(x.size for x in jax.tree.leaves(shapes))
  assert report.parameters == params > 0
  # A training step uses every parameter at least once forward (2 FLOPs per multiply-add) and
  # twice backward; the convolutions reuse theirs at every pixel of every frame, so far more.
  assert report.flops_per_example > 6 * params * 10
  # The state holds params, EMA and Adam's two moments: at least 4 float32 copies.
  assert report.state_bytes >= 16 * params
  assert report.activation_bytes_per_example > 0
  text = inspect_model.format_report(config, report)
  assert f'{params:,}' in text and 'FLOP' in text
  assert f'x {config.batch_size} videos held at once' in text
  config.batch_size, config.train.grad_accum_steps = 8, 4  # Accumulation holds a microbatch.
  assert 'x 2 videos held at once' in inspect_model.format_report(config, report)


def test_inspect_counts_model_flops_whatever_the_implementation(monkeypatch):
  """The CPU defaults run convolutions and attention in loops over chunks, whose body XLA's cost
  analysis counts once, and remat recomputes blocks: the reported FLOPs are the plain network's
  (with the chunked loops counted as XLA counts them they read as less than half), while the
  activation memory is the configured network's (lower with remat='block')."""
  # Small chunks, so that this small network's loops run several chunks, as a large one's do.
  monkeypatch.setattr(layers, 'CHUNK_BYTES', 64 * 1024)
  monkeypatch.setattr(attention_lib, 'ATTENTION_CHUNK_BYTES', 64 * 1024)
  config = tiny_config()
  config.model.conv_impl, config.model.attention_impl = 'im2col_chunks', 'chunked'
  plain_flops = inspect_model.model_flops(config)
  chunked = inspect_model.compile_network_gradient(config)[0]
  assert inspect_model._cost(chunked)['flops'] < 0.5 * plain_flops  # pylint: disable=protected-access
  config.model.remat = 'block'
  report = inspect_model.inspect(config)
  assert report.flops_per_example == plain_flops
  assert report.activation_bytes_per_example < chunked.memory_analysis().temp_size_in_bytes
  # A network that already is the plain one (GPUs' defaults) is compiled once, not twice.
  config.model.conv_impl, config.model.attention_impl = 'xla', 'dot_product_attention'
  config.model.remat = 'none'
  compiles = []
  compile_once = inspect_model.compile_network_gradient
  monkeypatch.setattr(inspect_model, 'compile_network_gradient',
                      lambda *a, **k: compiles.append(1) or compile_once(*a, **k))
  assert inspect_model.inspect(config).flops_per_example == plain_flops
  assert len(compiles) == 1

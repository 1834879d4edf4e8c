"""--mode inspect: parameters, FLOPs and memory of the compiled network gradient, nothing run."""

import jax

from experiments import moving_shapes
from vdm_jax import config_validation
from vdm_jax import inspect_model
from vdm_jax import train


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

"""Default experiment: text-to-video on the built-in `moving_shapes` dataset (16 frames of 32x32).

Run the main job (train, then sample and evaluate) with:

  python launch.py --config experiments/moving_shapes.py --workdir runs/moving_shapes

Expected: finishes in under 30 minutes on a 2-core laptop CPU; caption adherence (color, shape and
direction all right, 64 test captions, DDIM 50 steps) is reported in the README's results table.

The `smoke` variant runs the whole job in about a minute, to check that everything works:

  python launch.py --config experiments/moving_shapes.py:smoke --workdir /tmp/smoke
"""

from experiments import base


def get_config(variant: str = ''):
  config = base.get_base_config()
  config.data.builder_config = 'default'

  if variant == 'smoke':
    config.data.builder_config = 'smoke'
    config.batch_size = 4
    config.model.channels = 16
    config.model.channel_mult = (1, 2)
    config.model.attention_resolutions = (16,)
    config.model.head_dim = 16
    config.model.text_width = 32
    config.model.text_layers = 1
    config.model.text_heads = 2
    config.optim.warmup_steps = 2
    config.train.num_steps = 4
    config.train.log_every = 1
    config.train.checkpoint_every = 2
    config.train.sample_every = 0
    config.sample.num_steps = 4
    config.sample.batch_size = 4
    config.sample.num_videos = 1
    config.sample.prompts = ('a red circle moving left', 'a blue square moving up')
    config.eval.num_captions = 4
  elif variant:
    raise ValueError(f"Unknown variant {variant!r} of experiments/moving_shapes.py; allowed: '' or 'smoke'.")
  return config

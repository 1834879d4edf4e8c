"""Text-to-video on the built-in `moving_digits` dataset: scikit-learn's handwritten digits bouncing
in 64x64 frames (16 frames), captioned `digit 3`.

Run the main job (train, then write samples of `sample.prompts`) with:

  python launch.py --config experiments/moving_digits.py --workdir runs/moving_digits

Not yet measured to convergence: there is no automatic metric of caption adherence for digits (the
tracker of `vdm_jax/data/tracker.py` reads moving_shapes captions only), so `eval_at_end` is off
and the samples are the result to look at. The `smoke` variant runs the whole job (tiny model,
4 steps) as a check:

  python launch.py --config experiments/moving_digits.py:smoke --workdir /tmp/smoke_digits
"""

from experiments import base


def get_config(variant: str = ''):
  config = base.get_base_config()
  config.data.name = 'moving_digits'
  config.data.builder_config = 'default'  # 10,000 + 1,000 videos of one digit, 16 x 64x64.
  config.batch_size = 8
  # Sized for a CPU: 4x4 patches (16x16 positions, then 8x8 with space + time + text attention).
  config.model.patch_size = 4
  config.model.channels = 32
  config.model.channel_mult = (1, 2)
  config.model.attention_resolutions = (8,)
  config.model.temporal_conv = True
  config.diffusion.parameterization = 'v'
  config.diffusion.loss_weighting = 'v_mse'
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 100
  config.train.num_steps = 1000
  config.train.checkpoint_every = 200
  config.train.sample_every = 500
  config.train.eval_at_end = False  # No digit tracker (see docstring).
  config.sample.guidance_weight = 3.0
  config.sample.batch_size = 8
  config.sample.prompts = ('digit 0', 'digit 3', 'digit 7', 'digit 9')

  if variant == 'smoke':
    config.data.builder_config = 'smoke'
    config.batch_size = 4
    config.model.channels = 16
    config.model.attention_resolutions = (16, 8)
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
    config.sample.prompts = ('digit 3', 'digit 7')
    config.eval.num_captions = 4
  elif variant:
    raise ValueError(f"Unknown variant {variant!r} of experiments/moving_digits.py; allowed: '' or 'smoke'.")
  return config

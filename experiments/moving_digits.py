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
from experiments import moving_shapes


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
    # The tiny model and 4-step job of moving_shapes' smoke variant, on 256 + 64 digit videos.
    smoke = moving_shapes.get_config('smoke')
    config.batch_size = smoke.batch_size
    for section in ('model', 'optim', 'train', 'sample', 'eval'):
      config[section] = smoke[section]
    config.data.builder_config = 'smoke'
    config.model.patch_size = 4  # 64x64 frames: the same 16x16 and 8x8 levels as 32x32 with 2.
    config.train.eval_at_end = False
    config.sample.prompts = ('digit 3', 'digit 7')
  elif variant:
    raise ValueError(f"Unknown variant {variant!r} of experiments/moving_digits.py; allowed: '' or 'smoke'.")
  return config

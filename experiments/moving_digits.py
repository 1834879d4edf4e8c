"""Text-to-video on the built-in `moving_digits` dataset: scikit-learn's handwritten digits bouncing
in 64x64 frames (16 frames), captioned `digit 3`.

Run the main job (train, then write samples of `sample.prompts`) with:

  python launch.py --config experiments/moving_digits.py --workdir runs/moving_digits

Not yet measured to convergence. The tracker of `vdm_jax/data/tracker.py` reads moving_shapes
captions only; the caption metric here is 'digit_accuracy', scored by a digit classifier trained
offline (experiments/digit_classifier.py gives the commands). It needs that classifier's workdir,
so `eval_at_end` is off. The `smoke` variant runs the whole job (tiny model, 4 steps) as a check:

  python launch.py --config experiments/moving_digits.py:smoke --workdir /tmp/smoke_digits
"""

from experiments import moving_shapes


def get_config(variant: str = ''):
  if variant not in ('', 'smoke'):
    raise ValueError(f"Unknown variant {variant!r} of experiments/moving_digits.py; allowed: '' or 'smoke'.")
  # The default experiment's model and job (and, for 'smoke', its tiny model and 4-step job), on
  # 64x64 digits: 4x4 patches give the same 16x16 and 8x8 levels as 32x32 frames with 2x2.
  config = moving_shapes.get_config(variant)
  config.data.name = 'moving_digits'
  # default: 10,000 + 1,000 videos of one digit, 16 x 64x64; smoke: 256 + 64.
  config.data.builder_config = variant or 'default'
  config.model.patch_size = 4
  config.train.eval_at_end = False  # 'digit_accuracy' needs a trained classifier (see docstring).
  config.eval.metrics = ('bpd',)  # The tracker of 'adherence' reads moving_shapes captions only.
  config.sample.prompts = (('digit 3', 'digit 7') if variant else
                           ('digit 0', 'digit 3', 'digit 7', 'digit 9'))
  return config

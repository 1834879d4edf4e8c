"""The caption classifier of `moving_digits` (vdm_jax/metrics/video_classifier.py: a softmax over
the digits 0-9, frame by frame), the scorer of the metric 'digit_accuracy' (and the features of
'fvd_learned' there), for the moving_digits experiment's data (16 frames of 64x64, one digit).
Train it with:

  python -m vdm_jax.metrics.train_classifier --config experiments/digit_classifier.py \\
      --workdir runs/digit_classifier

Measured on a 2-core CPU shared with other jobs: 328 s for the 1,000 steps (5 min 42 s in all,
with compiling and the test videos); on the 1,000 test videos (scans never seen in training) the
digit is right in 98.5% (the ceiling of 'digit_accuracy'). Then evaluate a diffusion run with it:

  python launch.py --config experiments/moving_digits.py --workdir runs/moving_digits --mode eval \\
      --config.eval.metrics="('digit_accuracy', 'bpd')" \\
      --config.eval.classifier_workdir=runs/digit_classifier

For two digits per video, train one on their data (the same head: right when the caption's two
digits are its two most probable) with --config.data.builder_config=two_digits; not yet measured.
The `smoke` variant trains a tiny one on the smoke data in seconds, as a check.
"""

from experiments import feature_classifier
from experiments import moving_digits


def get_config(variant: str = ''):
  if variant not in ('', 'smoke'):
    raise ValueError(f"Unknown variant {variant!r} of experiments/digit_classifier.py; allowed: "
                     "'' or 'smoke'.")
  config = moving_digits.get_config(variant)  # the data (and seed) of the experiment it serves
  # Four levels: a receptive field of 31 px covers a 28 px digit; narrow first levels, as 64x64
  # frames cost 4x the 32x32 of moving_shapes there. Frames read alone (a digit is told by its
  # shape, not its motion) and the strongest response in the frame, wherever the digit is: after
  # 200 steps, 84% of 200 test videos right, against 14% with temporal convs, 25% with mean pooling.
  config.classifier.widths = (8, 16, 32, 64)
  config.classifier.time_conv = False
  config.classifier.pool = 'max'
  if variant == 'smoke':
    feature_classifier.shrink_to_smoke(config.classifier)
  return config

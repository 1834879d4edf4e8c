"""The feature classifier of the learned-feature FVD (vdm_jax/metrics/video_classifier.py), for
the default experiment's data (moving_shapes, 16 frames of 32x32). Train it with:

  python -m vdm_jax.metrics.train_classifier --config experiments/feature_classifier.py \\
      --workdir runs/feature_classifier

Measured on a 2-core CPU shared with other jobs: 905 s for the 1,000 steps; on 1,000 test videos
color 100%, direction 100%, shape 84.8%. Its FVD between 64 training videos and 1,000 test videos
(the floor at eval.num_captions=64) is 118 (README, Results). Then evaluate a diffusion run with it:

  python launch.py --config experiments/moving_shapes.py --workdir runs/moving_shapes --mode eval \\
      --config.eval.metrics="('adherence', 'bpd', 'fvd_learned')" \\
      --config.eval.classifier_workdir=runs/feature_classifier

The `smoke` variant trains a tiny one on the smoke data in seconds, as a check.
"""

from experiments import moving_shapes


def get_config(variant: str = ''):
  if variant not in ('', 'smoke'):
    raise ValueError(f"Unknown variant {variant!r} of experiments/feature_classifier.py; allowed: "
                     "'' or 'smoke'.")
  config = moving_shapes.get_config(variant)  # the data (and seed) of the experiment it serves
  if variant == 'smoke':
    shrink_to_smoke(config.classifier)
  return config


def shrink_to_smoke(classifier) -> None:
  """`config.classifier` of the `smoke` variants (this file's, digit_classifier.py's): a tiny
  classifier, 10 steps, 16 test videos; seconds."""
  classifier.widths = (4, 8)
  classifier.feature_dim = 8
  classifier.batch_size = 8
  classifier.num_steps = 10
  classifier.log_every = 5
  classifier.eval_videos = 16

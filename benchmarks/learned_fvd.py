"""What the learned-feature FVD (vdm_jax/metrics/fvd.py, 'fvd_learned') reads: its value for
real videos (the floor) at several sample sizes, and for corrupted real videos, with a trained
feature classifier (python -m vdm_jax.metrics.train_classifier).

  python benchmarks/learned_fvd.py --config experiments/feature_classifier.py \\
      --classifier_workdir runs/feature_classifier

Every row: FD between the classifier features of N videos of the training split (first N, then
transformed) and the first --num_reference test videos. Transformations that keep the data
distribution (time reversal: directions come in opposite pairs; a cyclic shift of the RGB
channels: the color set maps onto itself) should stay at the floor; those that break it
(frames shuffled, a still frame, blur, noise) should rise far above it. Prints a table, writes JSON
next to the classifier.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # Run from anywhere.

import numpy as np

from benchmarks.caption_probe import load_config
from vdm_jax.data import pipeline
from vdm_jax.data import registry
from vdm_jax.metrics import fvd
from vdm_jax.metrics import train_classifier
from vdm_jax.metrics import video_classifier


def _blur(videos):
  """3x3 box blur of every frame (edges repeated)."""
  x = np.pad(videos.astype(np.float32), ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), mode='edge')
  H, W = videos.shape[2:4]
  return (sum(x[:, :, i:i + H, j:j + W] for i in range(3) for j in range(3)) / 9).astype(np.uint8)


TRANSFORMS = {
    'none (the floor)': lambda v, rng: v,
    'time reversed': lambda v, rng: v[:, ::-1],
    'RGB shifted cyclically': lambda v, rng: np.roll(v, 1, axis=-1),
    'frames shuffled': lambda v, rng: v[:, rng.permutation(v.shape[1])],
    'first frame held': lambda v, rng: np.repeat(v[:, :1], v.shape[1], axis=1),
    '3x3 blur': lambda v, rng: _blur(v),
    'uniform noise': lambda v, rng: rng.integers(0, 256, v.shape, dtype=np.uint8),
}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='experiments/feature_classifier.py')
  parser.add_argument('--classifier_workdir', required=True)
  parser.add_argument('--num_reference', type=int, default=1000)
  parser.add_argument('--sizes', default='64,256,1000', help='N of the floor rows.')
  parser.add_argument('--num_videos', type=int, default=64, help='N of the transformed rows.')
  parser.add_argument('--data_dir', default=None, help='config.data.data_dir, if not the config\'s.')
  args = parser.parse_args()
  config = load_config(args.config)
  if args.data_dir:
    config.data.data_dir = args.data_dir
  builder = registry.load_builder(config)
  model, variables, info = video_classifier.load(args.classifier_workdir)
  feature_fn = video_classifier.make_feature_fn(model, variables)
  reference, captions = pipeline.make_eval_source(builder=builder, split='test',
                                                  num_examples=args.num_reference)
  batch = config.classifier.batch_size
  accuracy = train_classifier.accuracy_of(model, variables['params'], reference, captions,
                                          batch_size=batch)
  sizes = [int(s) for s in args.sizes.split(',')]
  train_videos, _ = pipeline.make_eval_source(builder=builder, split='train',
                                              num_examples=max(sizes + [args.num_videos]))
  rows = {}
  for n in sizes:
    rows[f'floor, N={n}'] = fvd.fvd_with_floor(
        feature_fn, generated=train_videos[:n], reference=reference, floor=train_videos[:n],
        batch_size=batch, name='fvd')['fvd/generated']
  rng = np.random.default_rng(0)
  for name, transform in TRANSFORMS.items():
    videos = transform(train_videos[:args.num_videos], rng)
    rows[f'{name}, N={args.num_videos}'] = fvd.fvd_with_floor(
        feature_fn, generated=videos, reference=reference, floor=videos, batch_size=batch,
        name='fvd')['fvd/generated']
  print(f'classifier: {info["widths"]}, {info["feature_dim"]} features; test accuracy '
        + ', '.join(f'{k} {v:.3f}' for k, v in accuracy.items()))
  print(f'{"videos (vs " + str(args.num_reference) + " test videos)":<45} learned-feature FVD')
  for name, value in rows.items():
    print(f'{name:<45} {value:10.3f}')
  path = os.path.join(args.classifier_workdir, 'learned_fvd_benchmark.json')
  with open(path, 'w') as f:
    json.dump({'test_accuracy': accuracy, 'num_reference': args.num_reference, 'fvd': rows}, f,
              indent=2)
  print(f'Wrote {path}')


if __name__ == '__main__':
  main()

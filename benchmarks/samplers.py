"""Samplers compared at equal network evaluations (NFE) on a trained checkpoint.

For each sampler (vdm_jax/samplers.py) and each NFE budget, the largest number of steps within
the budget is used (`samplers.steps_for_nfe`: pc and heun spend 2 evaluations per step), one video
is generated for each of the first `--num_videos` test captions (EMA parameters, the config's
guidance weight, seed and time spacing, the same captions and seed for every row), and:

  * caption adherence, as `--mode eval` scores it (vdm_jax/data/tracker.py): color, shape,
    direction, all three, object count, consistency;
  * FD, a Frechet distance between Gaussian fits of cheap per-video features of the generated
    videos and of `--num_reference` other test videos (disjoint from the captions' own):
        FD = |m_g - m_r|^2 + Tr(C_g + C_r - 2 (C_g C_r)^(1/2)),
    features = per channel a 4-bin histogram of pixel values over all frames (12), mean-pooled
    pixels over 4 time segments x 2 x 2 spatial blocks x 3 channels (48), and per channel the mean
    absolute frame-to-frame difference (3): 63 numbers, pixels in [0, 1]. It is not FVD (no
    learned features) and is biased upwards at small sample sizes: compare rows at one
    --num_videos only; the `ground truth` row (the true videos of the same captions) is its floor;
  * wall time per video, sampling alone (the call is compiled ahead of time; compile time is
    reported apart).

  python benchmarks/samplers.py --config experiments/moving_shapes.py --workdir runs/moving_shapes

Prints a table and writes JSON (default `<workdir>/eval/samplers_step_<N>.json`). Cost: about
sum(NFE) x samplers x num_videos / batch batched network calls; on a 2-core CPU the default
(64 videos, NFE 10..250, 5 samplers) takes hours.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # Run from anywhere.

import jax
import numpy as np

from benchmarks.caption_probe import load_config
from vdm_jax import sample as sample_lib
from vdm_jax import samplers
from vdm_jax.data import pipeline
from vdm_jax.data import tracker
from vdm_jax.metrics import frechet

ADHERENCE = ('color', 'shape', 'direction', 'all', 'count', 'consistency')


def video_features(videos: np.ndarray) -> np.ndarray:
  """uint8 [N, T, H, W, 3] -> float64 [N, 63], the FD features of the module docstring."""
  x = videos.astype(np.float64) / 255.0
  N, T, H, W, C = x.shape
  assert T % 4 == 0 and H % 2 == 0 and W % 2 == 0, x.shape
  histogram = np.stack([np.stack([np.histogram(v[..., c], bins=4, range=(0.0, 1.0))[0]
                                  for c in range(C)]) for v in x]).reshape(N, -1) / (T * H * W)
  pooled = x.reshape(N, 4, T // 4, 2, H // 2, 2, W // 2, C).mean(axis=(2, 4, 6)).reshape(N, -1)
  motion = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2, 3))
  return np.concatenate([histogram, pooled, motion], axis=1)


# FD between Gaussian fits of feature rows a [N, D] and b [M, D] (formula in the docstring).
frechet_distance = frechet.frechet_distance_of_features


def benchmark(run, captions, reference_features, *, sampler_names, nfe_budgets, seed):
  """Rows (dicts) of adherence, FD and timings for each sampler and NFE budget."""
  rows = []
  rng = jax.random.PRNGKey(seed)
  for name in sampler_names:
    for budget in nfe_budgets:
      config = run.config.copy_and_resolve_references()
      config.sample.sampler = name
      config.sample.num_steps = samplers.steps_for_nfe(name, budget)
      generate = sample_lib.make_generate_fn(run.model, logsnr_fn=run.logsnr_fn, config=config,
                                             video_shape=run.video_shape, mesh=run.mesh)
      start = time.perf_counter()
      generate.warm_up(run.ema_params)
      compile_seconds = time.perf_counter() - start
      start = time.perf_counter()
      videos = generate(run.ema_params, captions, rng)
      seconds = time.perf_counter() - start
      scores = tracker.score_caption_adherence(videos, captions)
      rows.append({
          'sampler': name, 'num_steps': config.sample.num_steps,
          'nfe': samplers.nfe(name, config.sample.num_steps),
          'time_spacing': samplers.resolve_time_spacing(name, config.sample.time_spacing),
          **{f'caption_adherence/{k}': float(scores[k]) for k in ADHERENCE},
          'frechet_distance': frechet_distance(video_features(videos), reference_features),
          'seconds_per_video': seconds / len(captions), 'compile_seconds': compile_seconds})
      print(f'{name} NFE {rows[-1]["nfe"]}: all {scores["all"]:.3f}, '
            f'FD {rows[-1]["frechet_distance"]:.4f}, {rows[-1]["seconds_per_video"]:.2f} s/video',
            flush=True)
  return rows


def print_table(rows, ground_truth, *, step: int, num_videos: int) -> None:
  from rich import console, table as rich_table  # pylint: disable=g-import-not-at-top
  t = rich_table.Table(title=f'Samplers at step {step}: {num_videos} test captions')
  for column in ('sampler', 'steps', 'NFE', *ADHERENCE, 'FD', 's/video'):
    t.add_column(column, justify='left' if column == 'sampler' else 'right')
  for r in rows:
    t.add_row(r['sampler'], str(r['num_steps']), str(r['nfe']),
              *(f'{r[f"caption_adherence/{k}"]:.3f}' for k in ADHERENCE),
              f'{r["frechet_distance"]:.4f}', f'{r["seconds_per_video"]:.2f}')
  t.add_row('ground truth', '', '', *(f'{ground_truth[f"caption_adherence/{k}"]:.3f}'
                                      for k in ADHERENCE),
            f'{ground_truth["frechet_distance"]:.4f}', '')
  console.Console(width=max(132, console.Console().width)).print(t)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='experiments/X.py[:variant]')
  parser.add_argument('--workdir', required=True, help='A trained run (its latest checkpoint).')
  parser.add_argument('--data_dir', default=None,
                      help="Where the dataset is prepared, if not the config's data.data_dir.")
  parser.add_argument('--samplers', default=','.join(samplers.SAMPLERS),
                      help='Comma-separated sampler names.')
  parser.add_argument('--nfe', default='10,20,50,100,250',
                      help='Comma-separated network-evaluation budgets.')
  parser.add_argument('--num_videos', type=int, default=64, help='Test captions, one video each.')
  parser.add_argument('--num_reference', type=int, default=512,
                      help='Other test videos that the FD compares against.')
  parser.add_argument('--json', default=None, help='Output path (default: in <workdir>/eval).')
  args = parser.parse_args()
  sampler_names = [s for s in args.samplers.split(',') if s]
  for name in sampler_names:
    samplers.check_sampler(name)
  nfe_budgets = [int(n) for n in args.nfe.split(',') if n]

  from vdm_jax import train  # pylint: disable=g-import-not-at-top
  config = load_config(args.config)
  if args.data_dir:
    config.data.data_dir = args.data_dir
  run = train.restore_for_inference(config, args.workdir)
  builder = train.load_dataset_builder(config)
  videos, captions = pipeline.make_eval_source(builder=builder, split='test',
                                               num_examples=args.num_videos + args.num_reference)
  true_videos, captions = videos[:args.num_videos], captions[:args.num_videos]
  reference = video_features(videos[args.num_videos:])

  rows = benchmark(run, captions, reference, sampler_names=sampler_names, nfe_budgets=nfe_budgets,
                   seed=config.sample.seed)
  true_scores = tracker.score_caption_adherence(true_videos, captions)
  ground_truth = {**{f'caption_adherence/{k}': float(true_scores[k]) for k in ADHERENCE},
                  'frechet_distance': frechet_distance(video_features(true_videos), reference)}
  print_table(rows, ground_truth, step=run.step, num_videos=len(captions))
  path = args.json or os.path.join(args.workdir, 'eval', f'samplers_step_{run.step}.json')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump({'step': run.step, 'num_videos': len(captions), 'num_reference': args.num_reference,
               'guidance_weight': config.sample.guidance_weight, 'seed': config.sample.seed,
               'features': 'video_features: 4-bin histogram per channel, 4x2x2 mean-pooled '
                           'pixels, mean |frame difference| per channel (63 dims)',
               'results': rows, 'ground_truth': ground_truth}, f, indent=2)
  print(f'Wrote {path}')


if __name__ == '__main__':
  main()

"""Video prediction, frame interpolation or super-resolution with reconstruction guidance against
replacement, and against a trained super-resolution stage, on a trained checkpoint.

For the first `--num_clips` test clips of the configured dataset (moving_shapes or moving_digits),
the model is given part of each clip and generates the rest (`--mode sample`'s tasks,
vdm_jax/tasks.py), each clip under its own caption: with `--task predict` the first
`--num_known_frames` frames; with `--task interpolate` every other frame (0, 2, 4, ...: the clip
at half its frame rate, the frames between generated); with `--task super_resolve` the clip
average-pooled by `config.sample.super_resolution_factor` (every pixel generated). Methods:

  * reconstruction guidance (Ho et al. 2022, sec. 3.1, eq. 7; for super-resolution through the
    downsampler) at each weight of `--weights`;
  * replacement (Song et al. 2021), the paper's baseline (its Table 6: FVD 451 against 136);
  * with `--stage_workdir`, a trained super-resolution stage (vdm_jax/cascade.py: temporal for
    interpolate, spatial for super_resolve) given the same low-frame-rate or low-resolution
    clips, as a cascade would give it its base's videos;
  * no model: for predict, the last given frame held (what an object that stops scores); for
    interpolate, each missing frame the mean of its two given neighbours (the last frame, which
    has one, a copy of it): linear interpolation in time, which blurs a moving object into two
    half-bright copies; for super_resolve, the pooled clip upsampled bilinearly.

Scores of the generated frames against the true continuation (vdm_jax/metrics/reconstruction.py):
PSNR over the generated frames, SSIM (Gaussian 11x11 window), and on moving_shapes the tracker's
trajectory error: the mean distance in pixels between the centroid of each true object and of the
generated object of its color, over the generated frames where both are found, with the fraction
found. Every method uses the same clips, captions and seed, and the config's sampler settings.

  python benchmarks/conditional.py --config experiments/moving_shapes.py --workdir runs/moving_shapes
  python benchmarks/conditional.py ... --task interpolate --stage_workdir runs/tsr
  python benchmarks/conditional.py ... --task super_resolve --stage_workdir runs/sr

A frame-conditioned run (e.g. `experiments/moving_shapes.py:prediction`) is also given, as its
network's input, the given frames it was trained on (vdm_jax/tasks.py); both methods hold it to
the rest:

  python benchmarks/conditional.py --config experiments/moving_shapes.py:prediction \
      --workdir runs/prediction --num_known_frames 1

Prints a table and writes JSON (default `<workdir>/eval/conditional_step_<N>.json`) and a PNG of
the first clips: truth, then each method's prediction.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # Run from anywhere.

import jax
import numpy as np

from benchmarks.caption_probe import apply_overrides, load_config
from vdm_jax import tasks
from vdm_jax import video_io


def last_frame_baseline(truth: np.ndarray, num_known: int) -> np.ndarray:
  """uint8 [N, T, H, W, 3]: the given frames, then the last of them repeated."""
  held = truth.copy()
  held[:, num_known:] = truth[:, num_known - 1:num_known]
  return held


def linear_interpolation_baseline(truth: np.ndarray) -> np.ndarray:
  """uint8 [N, T, H, W, 3]: the even frames kept, each odd frame the mean of its neighbours (the
  last one, if odd, a copy of the one before)."""
  x = truth.astype(np.float32)
  out = x.copy()
  T = truth.shape[1]
  for t in range(1, T, 2):
    out[:, t] = 0.5 * (x[:, t - 1] + x[:, t + 1]) if t + 1 < T else x[:, t - 1]
  return np.round(out).astype(np.uint8)


def bilinear_upsampling_baseline(truth: np.ndarray, factor: int) -> np.ndarray:
  """uint8 [N, T, H, W, 3]: the clip average-pooled f x f, then resized back bilinearly."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  N, T, H, W, C = truth.shape
  x = truth.astype(np.float32).reshape(N, T, H // factor, factor, W // factor, factor, C)
  low = jnp.asarray(x.mean(axis=(3, 5)))
  up = jax.image.resize(low, (N, T, H, W, C), method='bilinear')
  return np.clip(np.round(np.asarray(up)), 0, 255).astype(np.uint8)


def trained_stage_videos(config, stage_workdir: str, truth: np.ndarray, captions: list[str], *,
                         task: str, rng: jax.Array) -> tuple[np.ndarray, str]:
  """(uint8 [N, T, H, W, 3], row name): the super-resolution stage of `stage_workdir` given the
  clips as the task gives them (every other frame / pooled); refuses a stage of the other kind."""
  from vdm_jax import cascade  # pylint: disable=g-import-not-at-top
  from vdm_jax import sample as sample_lib  # pylint: disable=g-import-not-at-top
  from vdm_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  stage = cascade.restore_stage(config, stage_workdir, field='--stage_workdir')
  stage_config = stage.run.config
  wanted = ((sample_lib.frame_stride_of(stage_config) == 2) if task == 'interpolate' else
            (sample_lib.low_res_factor_of(stage_config) == config.sample.super_resolution_factor))
  if not wanted:
    raise UserError(f'--stage_workdir {stage_workdir!r} is not a '
                    + ('temporal super-resolution stage of stride 2' if task == 'interpolate' else
                       f'super-resolution stage of factor {config.sample.super_resolution_factor}')
                    + f' (what --task {task} gives): pick one trained for it.')
  videos = stage.run.generate(stage.run.ema_params, captions, rng,
                              frames=sample_lib.given_frames(stage_config, truth))
  return videos, f'trained stage ({os.path.basename(stage.workdir)}, step {stage.step})'


def print_table(rows: list[dict], *, title: str) -> None:
  from rich import console, table as rich_table  # pylint: disable=g-import-not-at-top
  columns = [c for c in ('psnr', 'ssim', 'trajectory_error_px', 'objects_found') if c in rows[0]]
  t = rich_table.Table(title=title)
  t.add_column('method')
  for column in columns:
    t.add_column(column, justify='right')
  for r in rows:
    t.add_row(r['method'], *(f'{r[c]:.3f}' for c in columns))
  console.Console(width=max(100, console.Console().width)).print(t)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='experiments/X.py[:variant]')
  parser.add_argument('--workdir', required=True, help='A trained run (its latest checkpoint).')
  parser.add_argument('--data_dir', default=None,
                      help="Where the dataset is prepared, if not the config's data.data_dir.")
  parser.add_argument('--task', default='predict', choices=('predict', 'interpolate',
                                                             'super_resolve'),
                      help='What the model is given: the first frames, every other frame, or the '
                           'average-pooled clip.')
  parser.add_argument('--num_clips', type=int, default=64, help='Test clips completed.')
  parser.add_argument('--num_known_frames', type=int, default=None,
                      help='Frames given (default: config.sample.num_known_frames).')
  parser.add_argument('--weights', default='5',
                      help='Comma-separated reconstruction-guidance weights w_r.')
  parser.add_argument('--stage_workdir', default=None,
                      help='A trained super-resolution stage, compared on the same clips '
                           '(temporal for interpolate, spatial for super_resolve).')
  parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                      help='A config override the run was trained with, as launch.py\'s '
                           '--config.FIELD=VALUE (e.g. train.num_cond_frames=4); repeatable.')
  parser.add_argument('--json', default=None, help='Output path (default: in <workdir>/eval).')
  args = parser.parse_args()
  weights = [float(w) for w in args.weights.split(',') if w]

  from vdm_jax import config_validation, train  # pylint: disable=g-import-not-at-top
  config = apply_overrides(load_config(args.config), args.set)
  if args.data_dir:
    config.data.data_dir = args.data_dir
  config.sample.task = args.task
  if args.num_known_frames is not None:
    config.sample.num_known_frames = args.num_known_frames
  config_validation.validate(config)
  run = train.restore_for_inference(config, args.workdir)
  rng = jax.random.PRNGKey(config.sample.seed)
  k = config.sample.num_known_frames

  rows, pictures, truth = [], {}, None
  for method, weight in [('reconstruction', w) for w in weights] + [('replacement', 0.0)]:
    config.sample.conditioning_method, config.sample.reconstruction_weight = method, weight
    generate = tasks.make_conditional_generate_fn(run.model, logsnr_fn=run.logsnr_fn,
                                                  config=config, video_shape=run.video_shape,
                                                  mesh=run.mesh,
                                                  factor=tasks.task_factor(args.task, config),
                                                  expert=run.expert)
    result = tasks.run_test_clip_task(run, generate, task=args.task, num_clips=args.num_clips,
                                      rng=rng, directory=None)
    name = f'reconstruction (w_r={weight:g})' if method == 'reconstruction' else 'replacement'
    rows.append({'method': name, **result['mean'], 'per_clip': result['scores']})
    pictures[name], truth, captions = result['generated'], result['truth'], result['captions']
    print(name, {m: round(v, 4) for m, v in result['mean'].items()})
  factor = config.sample.super_resolution_factor
  if args.task == 'predict':
    baseline, baseline_name = last_frame_baseline(truth, k), 'last frame repeated'
    what = f'Prediction {k} -> {run.video_shape[0] - k} frames'
  elif args.task == 'interpolate':
    baseline, baseline_name = linear_interpolation_baseline(truth), 'linear interpolation'
    what = f'Interpolation {(run.video_shape[0] + 1) // 2} -> {run.video_shape[0]} frames'
  else:
    baseline, baseline_name = bilinear_upsampling_baseline(truth, factor), 'bilinear upsampling'
    side = run.video_shape[1]
    what = f'Super-resolution {side // factor}x{side // factor} -> {side}x{side}'
  conditioning = tasks.task_conditioning(args.task, truth.astype(np.float32) / 127.5 - 1,
                                         num_known_frames=k, super_resolution_factor=factor)
  others = [(baseline, baseline_name)]
  if args.stage_workdir:
    others.insert(0, trained_stage_videos(config, args.stage_workdir, truth, captions,
                                          task=args.task, rng=rng))
  for videos, name in others:
    scores = tasks.score(videos, truth, conditioning, dataset=config.data.name)
    rows.append({'method': name,
                 **{m: float(np.nanmean(v)) for m, v in scores.items()}, 'per_clip': scores})
    pictures[name] = videos
    print(name, {m: round(v, 4) for m, v in rows[-1].items() if m not in ('method', 'per_clip')})

  print_table(rows, title=f'{what} at step {run.step}: {args.num_clips} {config.data.name} test '
                          f'clips, {config.sample.sampler} {config.sample.num_steps} steps')
  path = args.json or os.path.join(args.workdir, 'eval', f'{args.task}_step_{run.step}.json')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump({'task': args.task, 'step': run.step, 'dataset': config.data.name,
               'num_clips': args.num_clips,
               'num_known_frames': k if args.task == 'predict' else None,
               'sampler': config.sample.sampler,
               'num_steps': config.sample.num_steps,
               'guidance_weight': config.sample.guidance_weight, 'seed': config.sample.seed,
               'results': rows}, f, indent=2)
  shown = min(4, args.num_clips)
  labels = [f'{name} {i}' for i in range(shown) for name in ('truth', *pictures)]
  videos = np.stack([truth[:shown], *(p[:shown] for p in pictures.values())], axis=1)
  video_io.write_labelled_grid_png(path[:-len('.json')] + '.png', labels,
                                   videos.reshape(-1, *truth.shape[1:]))
  print(f'Wrote {path}')


if __name__ == '__main__':
  main()

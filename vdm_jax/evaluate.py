"""Evaluation: caption adherence of generated videos, scored by the analytic tracker.

For each of the first `config.eval.num_captions` captions of the evaluation split, one video is
sampled (EMA parameters, `config.sample.*` sampler settings) and the tracker checks color, shape
and direction of motion. The ground-truth videos of the same captions are scored alongside, as the
ceiling the tracker allows. Prints a table, writes JSON and a PNG of generated vs true videos.
"""

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from rich import console as rich_console
from rich import table as rich_table

from vdm_jax import video_io
from vdm_jax.data import pipeline
from vdm_jax.data import tracker
from vdm_jax.errors import UserError


def print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
  """rows: {row name: {column: value}}; one table on stdout."""
  columns = list(next(iter(rows.values())))
  table = rich_table.Table(title=title)
  table.add_column('videos')
  for column in columns:
    table.add_column(column, justify='right')
  for name, values in rows.items():
    table.add_row(name, *(f'{values[c]:.3f}' for c in columns))
  rich_console.Console().print(table)


def evaluate_run(run, workdir: str, *, builder=None) -> dict[str, Any]:
  """Caption adherence of `run.ema_params` (a `train.Run`); returns the scores of generated videos."""
  config: ml_collections.ConfigDict = run.config
  if builder is None:
    from vdm_jax import train  # pylint: disable=g-import-not-at-top
    builder = train.load_dataset_builder(config)
  available = len(builder.as_data_source(split=config.eval.split))
  if config.eval.num_captions > available:
    raise UserError(f'config.eval.num_captions={config.eval.num_captions} exceeds the '
                    f'{available} examples of the {config.eval.split!r} split: lower it.')
  true_videos, captions = pipeline.make_eval_source(builder=builder, split=config.eval.split,
                                                     num_examples=config.eval.num_captions)
  rng = jax.random.fold_in(jax.random.PRNGKey(config.sample.seed), 1)
  logging.info('Evaluating caption adherence on %d %s captions (%s, %d steps, guidance %.2f)',
               len(captions), config.eval.split, config.sample.sampler, config.sample.num_steps,
               config.sample.guidance_weight)
  generated = run.generate(run.ema_params, captions, rng)

  generated_scores = tracker.score_caption_adherence(generated, captions)
  true_scores = tracker.score_caption_adherence(true_videos, captions)
  results = {
      'step': run.step,
      'num_captions': len(captions),
      'sampler': config.sample.sampler,
      'sample_steps': config.sample.num_steps,
      'guidance_weight': config.sample.guidance_weight,
      **{f'caption_adherence/{k}': float(v) for k, v in generated_scores.items()},
      **{f'ground_truth/{k}': float(v) for k, v in true_scores.items()},
  }
  if jax.process_index() == 0:
    directory = os.path.join(workdir, 'eval')
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f'step_{run.step}.json'), 'w') as f:
      json.dump({**results, 'captions': captions}, f, indent=2)
    shown = min(8, len(captions))
    # Rows alternate generated / true for the same caption.
    pairs = np.stack([generated[:shown], true_videos[:shown]], axis=1).reshape(-1, *generated.shape[1:])
    video_io.write_grid_png(os.path.join(directory, f'step_{run.step}_generated_vs_true.png'), pairs)
    print_table(f'Caption adherence at step {run.step} ({len(captions)} {config.eval.split} captions)',
                {'generated': {k: float(v) for k, v in generated_scores.items()},
                 'ground truth': {k: float(v) for k, v in true_scores.items()}})
    logging.info('Wrote %s', os.path.join(directory, f'step_{run.step}.json'))
  return results


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`--mode eval`: restores the latest checkpoint and evaluates it."""
  from vdm_jax import train  # pylint: disable=g-import-not-at-top

  run = train.restore_for_inference(config, workdir)
  return evaluate_run(run, workdir)

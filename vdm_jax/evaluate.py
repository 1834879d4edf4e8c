"""Evaluation: caption adherence of generated videos, scored by the analytic tracker, and the
likelihood of test videos.

For each of the first `config.eval.num_captions` captions of the evaluation split, one video is
sampled (EMA parameters, `config.sample.*` sampler settings) and the tracker checks color, shape
and direction of motion. The ground-truth videos of the same captions are scored alongside, as the
ceiling the tracker allows. Prints a table, writes JSON and a PNG of generated vs true videos.

Likelihood: the VDM variational bound (vdm_jax/likelihood.py: prior KL + diffusion term +
8-bit reconstruction) of the first `config.eval.bpd_num_videos` videos of the split given their
captions, in bits per dimension (an upper bound on -log2 p(video | caption) / dims), with
`config.eval.bpd_num_t` antithetic t samples per video for the diffusion term.
"""

import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from rich import console as rich_console
from rich import table as rich_table

from vdm_jax import likelihood
from vdm_jax import mesh as mesh_lib
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


def make_bpd_fn(run):
  """Returns bpd(params, video [B, ...] float in [-1, 1], tokens [B, L], rng) -> {term: bits/dim [B]},
  jitted and sharded like sampling (B = config.sample.batch_size), conditioned on the captions."""
  config = run.config

  def bpd(params, video, tokens, rng):
    def network(z, logsnr):
      return run.model.apply({'params': params}, z, logsnr=logsnr, text_tokens=tokens,
                             drop_text=jnp.zeros((video.shape[0],), bool))
    terms = likelihood.vlb(network, video, rng=rng, logsnr_fn=run.logsnr_fn,
                           parameterization=config.diffusion.parameterization,
                           num_t=config.eval.bpd_num_t, decoder='discrete')
    dims = math.prod(video.shape[1:])
    return {k: v / (dims * math.log(2.0)) for k, v in terms.items() if k != 'bpd'}

  sharded, replicated = mesh_lib.batch_sharded(run.mesh), mesh_lib.replicated(run.mesh)
  return jax.jit(bpd, in_shardings=(replicated, sharded, sharded, replicated),
                 out_shardings=sharded)


def evaluate_bpd(run, builder) -> dict[str, float]:
  """Mean bits per dimension (and its terms, and the standard error of the total) of the first
  `config.eval.bpd_num_videos` videos of `config.eval.split`; {} when that is 0."""
  config = run.config
  # A config made before the field existed (a run started with older code) estimates none.
  n = config.eval.get('bpd_num_videos', 0)
  if n == 0:
    return {}
  videos, captions = pipeline.make_eval_source(builder=builder, split=config.eval.split,
                                               num_examples=n)
  batch = config.sample.batch_size
  pad = -n % batch  # the last chunk is filled with repeats, whose results are dropped
  videos = np.concatenate([videos, videos[np.arange(pad) % n]])
  captions = captions + [captions[i % n] for i in range(pad)]
  logging.info('Estimating bits/dim of %d %s videos (%d t samples each)', n, config.eval.split,
               config.eval.bpd_num_t)
  if run.bpd_fn is None:
    run.bpd_fn = make_bpd_fn(run)
  sharded = mesh_lib.batch_sharded(run.mesh)
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2)
  chunks = []
  for start in range(0, len(captions), batch):
    inputs = pipeline.to_model_inputs(
        {'video': videos[start:start + batch], 'caption': captions[start:start + batch]},
        max_text_length=config.data.max_text_length)
    global_inputs = [jax.make_array_from_callback(a.shape, sharded, lambda index, a=a: a[index])
                     for a in (inputs['video'], inputs['tokens'])]
    out = run.bpd_fn(run.ema_params, *global_inputs, jax.random.fold_in(rng, start))
    chunks.append({k: mesh_lib.to_host(v) for k, v in out.items()})
  per_video = {k: np.concatenate([c[k] for c in chunks])[:n] for k in chunks[0]}
  results = {f'bpd/{k}': float(np.mean(v)) for k, v in per_video.items()}
  results['bpd/total_stderr'] = float(np.std(per_video['total']) / math.sqrt(n))
  results['bpd/num_videos'] = n
  results['bpd/num_t'] = config.eval.bpd_num_t
  return results


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
      **evaluate_bpd(run, builder),
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
    if 'bpd/total' in results:
      print_table(f'Bits per dimension at step {run.step} ({results["bpd/num_videos"]} '
                  f'{config.eval.split} videos, {results["bpd/num_t"]} t samples each)',
                  {'test videos': {k: results[f'bpd/{k}'] for k in
                                   ('total', 'total_stderr', 'prior', 'diffusion', 'reconstruction')}})
    logging.info('Wrote %s', os.path.join(directory, f'step_{run.step}.json'))
  return results


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`--mode eval`: restores the latest checkpoint and evaluates it."""
  from vdm_jax import train  # pylint: disable=g-import-not-at-top

  run = train.restore_for_inference(config, workdir)
  return evaluate_run(run, workdir)

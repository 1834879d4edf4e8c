"""Which caption words does a trained denoiser use? A probe that answers long before samples do.

Caption adherence (`--mode eval`) says whether sampled videos match their captions, but it stays
at zero until the model draws clean objects, and 64 samples cost minutes. This probe reads the
denoiser directly: on N test videos noised at fixed log-SNRs (the same noise for every run), it
measures the denoising error

    x-MSE(lambda) = mean || x - clip(x_hat(z_lambda, caption)) ||^2

with the true caption, with one attribute word swapped for another value (color, shape or
direction: `a red circle moving left` -> `a red circle moving up`), and with the null text.
A model that uses a word has a larger error when that word is wrong: the gap
x-MSE(swapped) / x-MSE(true) - 1 is the model's use of that attribute, per noise level.
The null-text row is the unconditional model's error.

  python benchmarks/caption_probe.py --config experiments/moving_shapes.py --workdir runs/moving_shapes

Prints a table and writes JSON (default `<workdir>/eval/caption_probe_step_<N>.json`).
"""

import argparse
import ast
import importlib.util
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # Run from anywhere.

import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax import diffusion
from vdm_jax.noise_prior import NoisePrior
from vdm_jax.data import moving_shapes
from vdm_jax.data import pipeline
from vdm_jax.data import tokenizer
from vdm_jax.data import tracker

ATTRIBUTES = {'color': tuple(moving_shapes.COLORS), 'shape': moving_shapes.SHAPES,
              'direction': tuple(moving_shapes.DIRECTIONS)}
LOGSNRS = (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0)


def swap_attribute(caption: str, attribute: str, rng: np.random.Generator) -> str:
  """The caption with every object's `attribute` replaced by a different value, drawn by `rng`.

  'a red circle moving left' -> e.g. 'a red circle moving up' for attribute='direction'.
  """
  index = tuple(ATTRIBUTES).index(attribute)
  objects = [list(obj) for obj in tracker.parse_caption(caption)]
  for obj in objects:
    obj[index] = str(rng.choice([v for v in ATTRIBUTES[attribute] if v != obj[index]]))
  return moving_shapes.format_caption(objects)


def probe(run, videos: np.ndarray, captions: list[str], *, batch_size: int, seed: int = 0,
          logsnrs=LOGSNRS) -> dict[str, dict[float, float]]:
  """x-MSE per log-SNR for the true captions, each attribute swapped, and the null text.

  run: a `train.Run` with EMA parameters; videos: uint8 [N, T, H, W, 3]; captions: N str.
  Returns {'true' | 'color' | 'shape' | 'direction' | 'null': {logsnr: x-MSE}}.
  """
  config = run.config
  x_all = videos.astype(np.float32) / 127.5 - 1.0
  # The noise the model was trained with (correlated across frames under a noise prior).
  noise_all = np.asarray(NoisePrior.from_config(config).sample(jax.random.PRNGKey(seed),
                                                               x_all.shape, jnp.float32))
  rng = np.random.default_rng(seed)
  variants = {'true': captions, **{a: [swap_attribute(c, a, rng) for c in captions]
                                   for a in ATTRIBUTES}, 'null': captions}

  @jax.jit
  def x_mse(params, x, noise, tokens, drop_text, logsnr):
    logsnr = jnp.full((x.shape[0],), logsnr)
    z = diffusion.q_sample(x, logsnr=logsnr, noise=noise)
    out = run.model.apply({'params': params}, z, logsnr=logsnr, text_tokens=tokens,
                          drop_text=drop_text)
    x_hat, _ = diffusion.predict_x_eps(out, z=z, logsnr=logsnr,
                                       parameterization=config.diffusion.parameterization)
    return jnp.sum(jnp.mean(jnp.square(jnp.clip(x_hat, -1.0, 1.0) - x), axis=(1, 2, 3, 4)))

  n = len(captions) - len(captions) % batch_size
  if n == 0:
    raise ValueError(f'{len(captions)} videos < batch size {batch_size}.')
  results = {}
  for name, texts in variants.items():
    tokens_all = tokenizer.tokenize(texts, max_length=config.data.max_text_length,
                                    kind=config.model.text_tokenizer)
    drop = np.full((batch_size,), name == 'null')
    results[name] = {}
    for logsnr in logsnrs:
      total = sum(float(x_mse(run.ema_params, x_all[i:i + batch_size], noise_all[i:i + batch_size],
                              tokens_all[i:i + batch_size], drop, logsnr))
                  for i in range(0, n, batch_size))
      results[name][logsnr] = total / n
  return results


def caption_mean_errors(train_chunks, videos: np.ndarray, captions: list[str]) -> dict[str, float]:
  """The x-MSE on `videos` of predicting each one by the mean training video of its caption: the
  optimal denoiser's error as log-SNR -> -inf (z then says nothing; E[x | caption] is all there
  is), and of the same with one attribute unknown (the mean over its values), per attribute.

  train_chunks: an iterable of (uint8 [n, T, H, W, 3], n captions) of training videos;
  videos: uint8 [N, T, H, W, 3] with `captions`.
  Returns {'caption' | 'color' | 'shape' | 'direction' | 'null' | 'frames_pooled': x-MSE};
  'null' is the mean of all training videos, 'color' .. 'direction' leave that attribute out of
  the caption's key, and 'frames_pooled' is the caption mean averaged over its frames: the best
  a denoiser can do at log-SNR -> -inf if it cannot tell one frame from another (a network whose
  layers are all equivariant in time sees i.i.d. noise in every frame there).
  """
  names = tuple(ATTRIBUTES)
  def key(caption, drop):
    return tuple(tuple(v for i, v in enumerate(obj) if names[i] != drop)
                 for obj in tracker.parse_caption(caption)) if drop != 'null' else ()
  drops = ('caption', *names, 'null')
  sums, counts = {d: {} for d in drops}, {d: {} for d in drops}
  for chunk, chunk_captions in train_chunks:
    x = chunk.astype(np.float64) / 127.5 - 1.0
    for j, caption in enumerate(chunk_captions):
      for d in drops:
        k = key(caption, d)
        sums[d][k] = sums[d].get(k, 0.0) + x[j]
        counts[d][k] = counts[d].get(k, 0) + 1
  x = videos.astype(np.float64) / 127.5 - 1.0
  errors = {}
  for d in drops:
    total = 0.0
    for j, caption in enumerate(captions):
      k = key(caption, d)
      if k not in counts[d]:
        raise ValueError(f'caption {caption!r} ({d} left out) has no training video.')
      total += np.mean(np.square(sums[d][k] / counts[d][k] - x[j]))
    errors[d] = total / len(captions)
  errors['frames_pooled'] = float(np.mean([
      np.mean(np.square(np.mean(sums['caption'][key(c, 'caption')], axis=0, keepdims=True)
                        / counts['caption'][key(c, 'caption')] - x[j]))
      for j, c in enumerate(captions)]))
  return errors


def print_table(results, step: int) -> None:
  from rich import console, table as rich_table  # pylint: disable=g-import-not-at-top
  t = rich_table.Table(title=f'Denoising x-MSE by log-SNR at step {step} (swap rows: % above true)')
  t.add_column('caption')
  logsnrs = list(results['true'])
  for logsnr in logsnrs:
    t.add_column(f'{logsnr:+.0f}', justify='right')
  t.add_row('true', *(f'{results["true"][l]:.4f}' for l in logsnrs))
  for name in [k for k in results if k != 'true']:
    t.add_row(f'{name} {"swapped" if name != "null" else "text"}',
              *(f'{100 * (results[name][l] / results["true"][l] - 1):+.1f}%' for l in logsnrs))
  console.Console().print(t)


def apply_overrides(config, overrides: list[str]):
  """Sets each 'section.field=value' (a Python literal, or a bare string) on config."""
  for override in overrides:
    field, sep, text = override.partition('=')
    if not sep:
      raise SystemExit(f'--set {override!r}: expected FIELD=VALUE, e.g. model.layout_embedding=True.')
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *sections, name = field.split('.')
    node = config
    for section in sections:
      node = node[section]
    if name not in node:
      raise SystemExit(f'--set {override!r}: the config has no field {field!r}.')
    node[name] = type(node[name])(value) if isinstance(node[name], tuple) else value
  return config


def load_config(spec: str):
  """'experiments/X.py[:variant]' -> X.get_config(variant), as launch.py's --config reads it."""
  path, _, variant = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('experiment_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='experiments/X.py[:variant]')
  parser.add_argument('--workdir', required=True, help='A trained run.')
  parser.add_argument('--step', type=int, default=None,
                      help='The checkpoint probed (default: the latest).')
  parser.add_argument('--data_dir', default=None,
                      help='Where the dataset is prepared, if not the config\'s data.data_dir.')
  parser.add_argument('--num_videos', type=int, default=64, help='Test videos probed.')
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--json', default=None, help='Output path (default: in <workdir>/eval).')
  parser.add_argument('--caption_mean_videos', type=int, default=20000,
                      help='Training videos whose per-caption means give the log-SNR -> -inf '
                           'optimum to compare with (0: skip).')
  parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                      help='A config override the run was trained with, as launch.py\'s '
                           '--config.FIELD=VALUE (e.g. model.layout_embedding=True); repeatable.')
  args = parser.parse_args()

  from vdm_jax import train  # pylint: disable=g-import-not-at-top
  config = apply_overrides(load_config(args.config), args.set)
  if args.data_dir:
    config.data.data_dir = args.data_dir
  run = train.restore_for_inference(config, args.workdir, args.step)
  builder = train.load_dataset_builder(config)
  videos, captions = pipeline.make_eval_source(builder=builder, split='test',
                                               num_examples=args.num_videos)
  results = probe(run, videos, captions, batch_size=args.batch_size)
  print_table(results, run.step)
  baseline = None
  if args.caption_mean_videos:
    source = builder.as_data_source(split='train')
    n = min(args.caption_mean_videos, len(source))
    def chunks(size=1000):
      for start in range(0, n, size):
        examples = [source[i] for i in range(start, min(start + size, n))]
        yield (np.stack([e['video'] for e in examples]),
               [c.decode() if isinstance(c, bytes) else str(c) for c in (e['caption'] for e in examples)])
    baseline = caption_mean_errors(chunks(), videos, captions)
    print(f'Caption-mean predictor from {n} training videos (the optimum as log-SNR -> -inf): '
          f'x-MSE {baseline["caption"]:.4f}; with one attribute unknown: ' +
          ', '.join(f'{a} {100 * (baseline[a] / baseline["caption"] - 1):+.1f}%'
                    for a in (*ATTRIBUTES, 'null')) +
          f'; the same averaged over frames (blind to the frame index): '
          f'{100 * (baseline["frames_pooled"] / baseline["caption"] - 1):+.1f}%')
  path = args.json or os.path.join(args.workdir, 'eval', f'caption_probe_step_{run.step}.json')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump({'step': run.step, 'num_videos': len(captions) - len(captions) % args.batch_size,
               'x_mse': {k: {str(l): v for l, v in r.items()} for k, r in results.items()},
               'caption_mean_x_mse': baseline},
              f, indent=2)
  print(f'Wrote {path}')


if __name__ == '__main__':
  main()

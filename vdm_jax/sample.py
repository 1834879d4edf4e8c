"""Text-to-video generation with a trained denoiser, and `--mode sample`.

One compiled call generates `config.sample.batch_size` videos from noise (the whole sampling loop is
a `lax.scan` inside it); longer prompt lists are padded and run in chunks through the same
compilation, so training-time samples, evaluation and `--mode sample` share one compile.
"""

import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vdm_jax import config_validation
from vdm_jax import mesh as mesh_lib
from vdm_jax import samplers
from vdm_jax import video_io
from vdm_jax.data import tokenizer

GenerateFn = Callable[[object, Sequence[str], jax.Array], np.ndarray]


def make_generate_fn(model, *, logsnr_fn: Callable, config: ml_collections.ConfigDict,
                     video_shape: tuple[int, int, int, int], mesh: jax.sharding.Mesh) -> GenerateFn:
  """Returns generate(params, prompts, rng) -> uint8 videos [len(prompts), frames, height, width, 3].

  Sampling uses classifier-free guidance (Ho & Salimans 2022) with the conditional and
  unconditional passes batched into one network call: eps = (1 + w) eps_cond - w eps_uncond.
  """
  sample_config = config.sample
  batch = sample_config.batch_size
  weight = sample_config.guidance_weight

  def generate_batch(params, tokens, rng):
    """tokens: int32 [batch, text_length] -> float videos [batch, frames, height, width, 3] in [-1, 1]."""
    if weight == 0.0:
      def network(z, logsnr):
        return model.apply({'params': params}, z, logsnr=logsnr, text_tokens=tokens,
                           drop_text=jnp.zeros((batch,), bool))
      denoise_fn = samplers.model_denoiser(
          network, parameterization=config.diffusion.parameterization,
          dynamic_threshold_percentile=sample_config.dynamic_threshold)
    else:
      both_tokens = jnp.concatenate([tokens, tokens])
      drop_text = jnp.concatenate([jnp.zeros((batch,), bool), jnp.ones((batch,), bool)])

      def network_cond_uncond(z2, logsnr2):
        return model.apply({'params': params}, z2, logsnr=logsnr2, text_tokens=both_tokens,
                           drop_text=drop_text)
      # Clip x only after guidance: the two unclipped predictions are combined first.
      denoise_fn = samplers.classifier_free_guidance(
          samplers.model_denoiser(network_cond_uncond, clip_x=False,
                                  parameterization=config.diffusion.parameterization),
          guidance_weight=weight, dynamic_threshold_percentile=sample_config.dynamic_threshold)
    return samplers.sample(
        denoise_fn, rng=rng, shape=(batch, *video_shape), logsnr_fn=logsnr_fn,
        num_steps=sample_config.num_steps, sampler=sample_config.sampler,
        time_spacing=sample_config.time_spacing, eta=sample_config.eta, gamma=sample_config.gamma)

  sharded = mesh_lib.batch_sharded(mesh)
  replicated = mesh_lib.replicated(mesh)
  generate_jit = jax.jit(generate_batch, in_shardings=(replicated, sharded, replicated),
                         out_shardings=sharded)
  compiled = []  # generate_jit compiled ahead of time by `warm_up`, when it has run

  def global_tokens_of(chunk_tokens):
    # Every process holds all prompts; each device takes its slice of the batch.
    return jax.make_array_from_callback(chunk_tokens.shape, sharded,
                                        lambda index, t=chunk_tokens: t[index])

  def generate(params, prompts: Sequence[str], rng: jax.Array) -> np.ndarray:
    prompts = list(prompts)
    num_chunks = -(-len(prompts) // batch)
    padded = prompts + [''] * (num_chunks * batch - len(prompts))
    tokens = tokenizer.tokenize(padded, config.data.max_text_length)
    call = compiled[0] if compiled else generate_jit
    videos = []
    for chunk in range(num_chunks):
      out = call(params, global_tokens_of(tokens[chunk * batch:(chunk + 1) * batch]),
                 jax.random.fold_in(rng, chunk))
      videos.append(video_io.to_uint8(mesh_lib.to_host(out)))
    return np.concatenate(videos)[:len(prompts)]

  def warm_up(params) -> None:
    """Compiles the sampling call for `params` ahead of time; later `generate` calls use it, so
    their wall time is sampling alone (benchmarks/samplers.py times it so)."""
    tokens = global_tokens_of(tokenizer.tokenize([''] * batch, config.data.max_text_length))
    rng = jax.device_put(jax.random.PRNGKey(0), replicated)
    compiled[:] = [generate_jit.lower(params, tokens, rng).compile()]

  generate.warm_up = warm_up
  return generate


def write_samples(generate: GenerateFn, params, *, prompts: Sequence[str], num_videos: int,
                  rng: jax.Array, directory: str, fps: int) -> list[str]:
  """Generates `num_videos` per prompt and writes GIF, MP4 and PNG grid per prompt into `directory`."""
  repeated = [p for p in prompts for _ in range(num_videos)]
  videos = generate(params, repeated, rng)
  videos = videos.reshape(len(prompts), num_videos, *videos.shape[1:])
  if jax.process_index() != 0:
    return []
  return video_io.write_prompt_videos(directory, prompts, videos, fps=fps)


def sample(config: ml_collections.ConfigDict, workdir: str, prompts: Sequence[str] | None = None) -> list[str]:
  """`--mode sample`: restores the latest checkpoint's EMA parameters and writes sample videos."""
  from vdm_jax import train  # pylint: disable=g-import-not-at-top  (train builds the pieces)

  # Before any model is built or file written: a bad prompt costs nothing.
  config_validation.check_prompts(prompts or [], max_text_length=config.data.max_text_length)
  run = train.restore_for_inference(config, workdir)
  prompts = list(prompts or config.sample.prompts)
  c = config.sample
  # Named by the settings, so sampling again with others never overwrites earlier videos.
  spacing = '' if c.time_spacing == 'default' else f'_{c.time_spacing}'
  threshold = f'_dt{c.dynamic_threshold:g}' if c.dynamic_threshold else ''
  directory = os.path.join(workdir, 'samples', f'step_{run.step}_{c.sampler}{c.num_steps}{spacing}'
                           f'_w{c.guidance_weight:g}{threshold}_seed{c.seed}')
  rng = jax.random.PRNGKey(config.sample.seed)
  logging.info('Sampling %d video(s) for each of %d prompt(s) with %s, %d steps, guidance %.2f',
               config.sample.num_videos, len(prompts), config.sample.sampler,
               config.sample.num_steps, config.sample.guidance_weight)
  written = write_samples(run.generate, run.ema_params, prompts=prompts,
                          num_videos=config.sample.num_videos, rng=rng, directory=directory,
                          fps=config.sample.fps)
  logging.info('Wrote %d files to %s', len(written), directory)
  return written

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

from vdm_jax import conditioning
from vdm_jax import config_validation
from vdm_jax import experts
from vdm_jax import frame_conditioning
from vdm_jax import mesh as mesh_lib
from vdm_jax import samplers
from vdm_jax import video_io
from vdm_jax.noise_prior import NoisePrior

GenerateFn = Callable[[object, Sequence[str], jax.Array], np.ndarray]



def make_generate_fn(model, *, logsnr_fn: Callable, config: ml_collections.ConfigDict,
                     video_shape: tuple[int, int, int, int], mesh: jax.sharding.Mesh,
                     expert: experts.Expert | None = None) -> GenerateFn:
  """Returns generate(params, prompts, rng, *, frames=None) -> uint8 videos [len(prompts), frames,
  height, width, 3].

  Prompts are what config.model.conditioning reads (conditioning.prompt_inputs): captions
  ('text'), class indices or names ('class'), anything ('none': only their number counts).
  Sampling uses classifier-free guidance (Ho & Salimans 2022) with the conditional and
  unconditional passes batched into one network call: eps = (1 + w) eps_cond - w eps_uncond;
  unconditional models ('none') sample without it.

  Frame-conditioned models (config.model.frame_conditioning) need `frames`: uint8 (or float in
  [-1, 1]) videos [len(prompts), frames, height, width, 3] whose first
  config.train.num_cond_frames frames are given (noise-augmented at
  config.sample.cond_aug_logsnr); the returned videos hold those frames as given. A
  super-resolution stage (config.train.cond_frames='low_res') needs the low-resolution videos
  instead, [len(prompts), frames, height / f, width / f, 3] (f: config.train.cond_low_res_factor),
  every frame given; a temporal super-resolution stage ('low_frame_rate') the low-frame-rate
  videos, [len(prompts), frames / s, height, width, 3] (s: config.train.cond_frame_stride), which
  become frames 0, s, 2s, ... of the returned videos, as given.

  With an `expert` (experts.py) its network denoises the steps below expert.logsnr_below, with
  the same prompts and guidance.
  """
  sample_config = config.sample
  batch = sample_config.batch_size
  frame_conditioned = config.model.frame_conditioning
  low_res_factor = low_res_factor_of(config)
  frame_stride = frame_stride_of(config)
  frames_shape = given_frames_shape(config, video_shape)
  noise_prior = NoisePrior.from_config(config)

  def generate_batch(params, cond, rng, expert_inputs):
    """cond: conditioning inputs [batch, ...] (and with frame conditioning 'frames' [batch,
    frames, height, width, 3] in [-1, 1], 'cond_mask' bool [batch, frames]) -> float videos
    [batch, frames, height, width, 3] in [-1, 1]."""
    cond = dict(cond)
    if frame_conditioned:
      frames = cond.pop('frames')
      if low_res_factor:  # What the network sees: the low-resolution frames upsampled.
        frames = frame_conditioning.low_res_input(frames, factor=low_res_factor)
      elif frame_stride:  # The low-frame-rate frames at their places in the full-rate clip.
        frames = frame_conditioning.low_frame_rate_input(frames, stride=frame_stride)
      cond.update(frame_conditioning.sampling_inputs(
          frames, mask=cond['cond_mask'], logsnr=sample_config.cond_aug_logsnr,
          rng=jax.random.fold_in(rng, 1)))
    denoise_fn = conditioning.guided_denoiser(model, params, cond, config=config, batch=batch,
                                              clip_x=True)
    denoise_fn = experts.with_expert(expert, expert_inputs, denoise_fn, cond, batch=batch,
                                     clip_x=True)
    videos = samplers.sample(
        denoise_fn, rng=rng, shape=(batch, *video_shape), logsnr_fn=logsnr_fn,
        num_steps=sample_config.num_steps, sampler=sample_config.sampler,
        time_spacing=sample_config.time_spacing, eta=sample_config.eta, gamma=sample_config.gamma,
        noise_prior=noise_prior)
    if frame_conditioned and not low_res_factor:  # Given frames are inputs: returned as given.
      videos = jnp.where(cond['cond_mask'][:, :, None, None, None], frames, videos)
    return videos

  sharded = mesh_lib.batch_sharded(mesh)
  replicated = mesh_lib.replicated(mesh)
  # Parameters keep the layout they come in (replicated, or split by FSDP: XLA gathers them).
  generate_jit = jax.jit(generate_batch, in_shardings=(None, sharded, replicated, None),
                         out_shardings=sharded)
  expert_inputs = experts.jit_inputs(expert)
  compiled = []  # generate_jit compiled ahead of time by `warm_up`, when it has run

  def global_tokens_of(chunk_tokens):
    # Every process holds all prompts; each device takes its slice of the batch.
    return jax.tree.map(lambda a: jax.make_array_from_callback(
        a.shape, sharded, lambda index, t=a: t[index]), chunk_tokens)

  def inputs_of(prompts: Sequence[str], frames: np.ndarray | None) -> dict[str, np.ndarray]:
    """Host conditioning inputs [len(prompts), ...] (see generate_batch)."""
    inputs = conditioning.prompt_inputs(config, prompts)
    if frame_conditioned:
      if frames is None:
        raise ValueError('config.model.frame_conditioning=True: generate needs `frames`, the '
                         + ('low-resolution videos to super-resolve.' if low_res_factor else
                            'low-frame-rate videos to fill in.' if frame_stride else
                            'videos whose first config.train.num_cond_frames frames are given.'))
      frames = np.asarray(frames)
      if frames.dtype == np.uint8:  # As pipeline.to_model_inputs: (2k - 255) / 255.
        frames = (frames.astype(np.float32) * 2 - 255) / 255
      if frames.shape[1:] != frames_shape:
        raise ValueError(f'generate was given frames of shape {frames.shape[1:]}; this model '
                         f'takes {frames_shape} (frames, height, width, channels).')
      frames = np.concatenate([frames.astype(np.float32), np.zeros(
          (len(prompts) - len(frames), *frames.shape[1:]), np.float32)])
      mask = np.asarray(given_frames_mask(config, video_shape[0]))
      inputs.update(frames=frames, cond_mask=np.broadcast_to(mask, (len(prompts), len(mask))))
    return inputs

  def generate(params, prompts: Sequence[str], rng: jax.Array, *,
               frames: np.ndarray | None = None) -> np.ndarray:
    prompts = list(prompts)
    num_chunks = -(-len(prompts) // batch)
    padded = prompts + [''] * (num_chunks * batch - len(prompts))
    inputs = inputs_of(padded, frames)
    call = compiled[0] if compiled else generate_jit
    videos = []
    for chunk in range(num_chunks):
      out = call(params, global_tokens_of({k: v[chunk * batch:(chunk + 1) * batch]
                                           for k, v in inputs.items()}),
                 jax.random.fold_in(rng, chunk), expert_inputs)
      videos.append(video_io.to_uint8(mesh_lib.to_host(out)))
    return np.concatenate(videos)[:len(prompts)]

  def warm_up(params) -> None:
    """Compiles the sampling call for `params` ahead of time; later `generate` calls use it, so
    their wall time is sampling alone (benchmarks/samplers.py times it so)."""
    frames = np.zeros((batch, *frames_shape), np.float32) if frame_conditioned else None
    inputs = global_tokens_of(inputs_of([''] * batch, frames))
    rng = jax.device_put(jax.random.PRNGKey(0), replicated)
    compiled[:] = [generate_jit.lower(params, inputs, rng, expert_inputs).compile()]

  generate.warm_up = warm_up
  return generate


def low_res_factor_of(config: ml_collections.ConfigDict) -> int:
  """f of a super-resolution stage (config.train.cond_frames='low_res'), else 0."""
  if config.model.frame_conditioning and config.train.cond_frames == 'low_res':
    return config.train.cond_low_res_factor
  return 0


def frame_stride_of(config: ml_collections.ConfigDict) -> int:
  """s of a temporal super-resolution stage (config.train.cond_frames='low_frame_rate'), else 0."""
  if config.model.frame_conditioning and config.train.cond_frames == 'low_frame_rate':
    return config.train.cond_frame_stride
  return 0


def given_frames_mask(config: ml_collections.ConfigDict, num_frames: int) -> np.ndarray:
  """bool [num_frames]: the frames a frame-conditioned model is given at sampling: all of them
  (spatial super-resolution), 0, s, 2s, ... (temporal), or the first train.num_cond_frames."""
  if low_res_factor_of(config):
    return np.ones(num_frames, bool)
  if frame_stride_of(config):
    return np.asarray(frame_conditioning.low_frame_rate_mask(num_frames,
                                                             stride=frame_stride_of(config)))
  return np.arange(num_frames) < config.train.num_cond_frames


def given_frames_shape(config: ml_collections.ConfigDict,
                       video_shape: Sequence[int]) -> tuple[int, ...]:
  """The shape of one video `generate(frames=...)` takes: the model's own video_shape, or for a
  super-resolution stage that shape at 1/f of the resolution (spatial) or 1/s of the frames
  (temporal)."""
  T, H, W, C = video_shape
  f = low_res_factor_of(config) or 1
  return (T // (frame_stride_of(config) or 1), H // f, W // f, C)


def given_frames(config: ml_collections.ConfigDict, videos: np.ndarray) -> np.ndarray:
  """What a frame-conditioned model is given of full-resolution videos uint8 [N, T, H, W, 3]:
  the videos themselves (it reads their first frames), for a temporal super-resolution stage
  their frames 0, s, 2s, ... (uint8 [N, T / s, H, W, 3]), or for a spatial one their
  average-pooled low-resolution versions, float [N, T, H / f, W / f, 3] in [-1, 1]."""
  if frame_stride_of(config):
    return frame_conditioning.low_frame_rate(videos, stride=frame_stride_of(config))
  f = low_res_factor_of(config)
  if not f:
    return videos
  x = (np.asarray(videos, np.float32) * 2 - 255) / 255
  return np.asarray(frame_conditioning.low_res(jnp.asarray(x), factor=f))


def conditioning_videos(config: ml_collections.ConfigDict, num: int, builder=None) -> np.ndarray | None:
  """The first `num` videos of config.eval.split (cycled when it has fewer) as a
  frame-conditioned model is given them (`given_frames`: uint8 [num, frames, height, width, 3]
  whose first frames it reads, or a super-resolution stage's low-resolution float videos);
  None for other models."""
  if not config.model.frame_conditioning:
    return None
  from vdm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  if builder is None:
    from vdm_jax import train  # pylint: disable=g-import-not-at-top
    builder = train.load_dataset_builder(config)
  available = len(builder.as_data_source(split=config.eval.split))
  videos, _ = pipeline.make_eval_source(builder=builder, split=config.eval.split,
                                        num_examples=min(num, available))
  return given_frames(config, videos[np.arange(num) % len(videos)])


def write_samples(generate: GenerateFn, params, *, prompts: Sequence[str], num_videos: int,
                  rng: jax.Array, directory: str, fps: int,
                  frames: np.ndarray | None = None) -> list[str]:
  """Generates `num_videos` per prompt and writes GIF, MP4 and PNG grid per prompt into `directory`.

  frames: [len(prompts), ...] conditioning videos of a frame-conditioned model (one per prompt)."""
  repeated = [p for p in prompts for _ in range(num_videos)]
  kwargs = {} if frames is None else {'frames': np.repeat(frames, num_videos, axis=0)}
  videos = generate(params, repeated, rng, **kwargs)
  videos = videos.reshape(len(prompts), num_videos, *videos.shape[1:])
  if jax.process_index() != 0:
    return []
  return video_io.write_prompt_videos(directory, prompts, videos, fps=fps)


def sample(config: ml_collections.ConfigDict, workdir: str, prompts: Sequence[str] | None = None,
           step: int | None = None) -> list[str]:
  """`--mode sample`: restores the EMA parameters of the checkpoint at `step` (default: the latest)
  and writes sample videos."""
  # pylint: disable=g-import-not-at-top  (train builds the pieces; cascade builds on this module)
  from vdm_jax import cascade
  from vdm_jax import train

  # Before any model is built or file written: a bad prompt costs nothing.
  config_validation.check_prompts(prompts or [], max_text_length=config.data.max_text_length,
                                  text_tokenizer=config.model.text_tokenizer)
  if config.sample.task != 'generate':  # Conditional generation: prediction, extension, ...
    from vdm_jax import tasks  # pylint: disable=g-import-not-at-top
    return tasks.run_task(config, workdir, prompts, step=step)['written']
  run = train.restore_for_inference(config, workdir, step)
  stages = cascade.restore_stages(config, run.video_shape)  # super-resolution stages, if any
  run = cascade.cascaded_run(run, stages)
  prompts = list(prompts or config.sample.prompts)
  c = config.sample
  # Named by the settings, so sampling again with others never overwrites earlier videos.
  spacing = '' if c.time_spacing == 'default' else f'_{c.time_spacing}'
  threshold = f'_dt{c.dynamic_threshold:g}' if c.dynamic_threshold else ''
  directory = os.path.join(workdir, 'samples', f'step_{run.step}_{c.sampler}{c.num_steps}{spacing}'
                           f'_w{c.guidance_weight:g}{threshold}{experts.directory_suffix(run.expert)}'
                           f'{cascade.directory_suffix(stages)}_seed{c.seed}')
  rng = jax.random.PRNGKey(config.sample.seed)
  logging.info('Sampling %d video(s) for each of %d prompt(s) with %s, %d steps, guidance %.2f',
               config.sample.num_videos, len(prompts), config.sample.sampler,
               config.sample.num_steps, config.sample.guidance_weight)
  written = write_samples(run.generate, run.ema_params, prompts=prompts,
                          num_videos=config.sample.num_videos, rng=rng, directory=directory,
                          fps=config.sample.fps,
                          frames=conditioning_videos(config, len(prompts)))
  logging.info('Wrote %d files to %s', len(written), directory)
  return written

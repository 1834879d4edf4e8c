"""Conditional generation tasks of `--mode sample` (`config.sample.task`), with an unconditional
(text-conditioned) denoiser guided by vdm_jax/guidance.py (Ho et al. 2022, sec. 3.1), or a
frame-conditioned one given the known frames as well:

  'predict':       test clips from their first `num_known_frames` frames (the rest generated);
  'extend':        one long video per story of prompts, `extend_frames` long, block by block:
                   each block of T frames conditioned on the last `num_known_frames` frames of
                   the previous one, the prompts spread evenly over the blocks (one per block
                   when there are as many prompts as blocks); the first block from noise;
  'interpolate':   doubling the frame rate of test clips: every other frame given (T / 2 frames
                   at half the rate), the frames between them generated;
  'super_resolve': test clips from their average-pooled version (factor `super_resolution_factor`),
                   by guidance through the downsampler;
  'inpaint':       test clips with a centre square (side `inpaint_fraction` of the frame) hidden
                   in every frame.

A frame-conditioned model (config.model.frame_conditioning) is also given, as its own input, the
observation's frames it was trained on (`network_given_frames`); the method holds the output to
the rest. Trained with dropped frames (train.cond_drop_prob) it makes a story's first block from
the prompt alone.

Every task is one observation y = A(x) (guidance.observe: a mask and a pooling factor) and one
compiled sampling call per batch; its observation and mask are inputs of that call, so every block
of an extension runs through one compilation. Outputs are written like normal samples (GIF, MP4,
PNG grid) plus a comparison picture per task (conditioning | generated | truth) and, for the tasks
on test clips, PSNR / SSIM of the generated part against the truth (and the tracker's trajectory
error on moving_shapes) in `metrics.json`.
"""

import dataclasses
import json
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vdm_jax import conditioning
from vdm_jax import experts
from vdm_jax import frame_conditioning
from vdm_jax import guidance
from vdm_jax import mesh as mesh_lib
from vdm_jax import samplers
from vdm_jax import video_io
from vdm_jax.errors import UserError

TASKS = ('generate', 'predict', 'extend', 'interpolate', 'super_resolve', 'inpaint')
TEST_CLIP_TASKS = ('predict', 'interpolate', 'super_resolve', 'inpaint')
# generate(params, prompts, observation [N, T, h, w, C], mask [1, T, h, w, 1], rng) -> [N, T, H, W, C].
ConditionalGenerateFn = Callable[[object, Sequence[str], np.ndarray, np.ndarray, jax.Array],
                                 np.ndarray]


def check_task(task: str) -> None:
  """Raises ValueError unless task is one of TASKS."""
  if task not in TASKS:
    raise ValueError(f'Unknown task {task!r}; allowed values: {TASKS}.')


# ============================================================================ observations


@dataclasses.dataclass(frozen=True)
class Conditioning:
  """What a task gives: y = guidance.observe(x, mask=mask, factor=factor).

  observation: float32 [N, T, H/f, W/f, C] in [-1, 1] (zero where mask = 0);
  mask: float32 [1, T, H/f, W/f, 1] (or broadcastable), 1 = observed; factor: f.
  """
  observation: np.ndarray
  mask: np.ndarray
  factor: int = 1


def frame_mask(num_frames: int, known: Sequence[int]) -> np.ndarray:
  """float32 [1, T, 1, 1, 1]: 1 at the known frame indices."""
  mask = np.zeros((1, num_frames, 1, 1, 1), np.float32)
  mask[0, list(known)] = 1.0
  return mask


def task_mask(task: str, video_shape: Sequence[int], *, num_known_frames: int = 4,
              super_resolution_factor: int = 2, inpaint_fraction: float = 0.5,
              frame_stride: int = 2) -> tuple[np.ndarray, int]:
  """(mask, factor) of a TEST_CLIP_TASKS task on videos of video_shape (T, H, W, C): its first
  frames, every `frame_stride`-th frame (interpolation; 2: every other), all of the pooled clip
  (super-resolution, factor f), or all but a centre square. mask: float32 [1, T, H/f, W/f, 1]
  or broadcastable to it, 1 = observed."""
  check_task(task)
  T, H, W = video_shape[:3]
  factor = 1
  if task == 'predict':
    mask = frame_mask(T, range(num_known_frames))
  elif task == 'interpolate':
    mask = frame_mask(T, range(0, T, frame_stride))
  elif task == 'super_resolve':
    factor = super_resolution_factor
    mask = np.ones((1, T, H // factor, W // factor, 1), np.float32)
  elif task == 'inpaint':
    mask = np.ones((1, T, H, W, 1), np.float32)
    h, w = max(1, round(inpaint_fraction * H)), max(1, round(inpaint_fraction * W))
    top, left = (H - h) // 2, (W - w) // 2
    mask[:, :, top:top + h, left:left + w] = 0.0
  else:
    raise ValueError(f'Task {task!r} does not condition on test clips; those that do: '
                     f'{TEST_CLIP_TASKS}.')
  return mask, factor


def task_conditioning(task: str, videos: np.ndarray, *, num_known_frames: int = 4,
                      super_resolution_factor: int = 2, inpaint_fraction: float = 0.5,
                      frame_stride: int = 2) -> Conditioning:
  """The observation of `videos` (float [N, T, H, W, C] in [-1, 1]) that a TEST_CLIP_TASKS task
  conditions on (`task_mask`)."""
  mask, factor = task_mask(task, videos.shape[1:], num_known_frames=num_known_frames,
                           super_resolution_factor=super_resolution_factor,
                           inpaint_fraction=inpaint_fraction, frame_stride=frame_stride)
  observation = np.asarray(guidance.observe(jnp.asarray(videos, jnp.float32), mask=mask,
                                            factor=factor))
  return Conditioning(observation=observation, mask=mask, factor=factor)


def conditioning_picture(conditioning: Conditioning, *, video_shape: Sequence[int]) -> np.ndarray:
  """What the model was given, to look at: uint8 [N, T, H, W, 3]; the observation upsampled
  (nearest) to the video size, unobserved pixels mid-grey."""
  f = conditioning.factor
  y = np.asarray(guidance.upsample(jnp.asarray(conditioning.observation), factor=f))
  mask = np.broadcast_to(np.asarray(guidance.upsample(jnp.asarray(conditioning.mask), factor=f)),
                         (1, *video_shape[:-1], 1))
  return video_io.to_uint8(np.where(mask > 0, y, 0.0))


def unknown_entries(conditioning: Conditioning, *, video_shape: Sequence[int]) -> np.ndarray:
  """bool [1, T, H, W, 1]: the video entries not fixed by the observation (all of them for
  super-resolution, which fixes only block means)."""
  if conditioning.factor > 1:
    return np.ones((1, *video_shape[:-1], 1), bool)
  return np.broadcast_to(conditioning.mask == 0, (1, *video_shape[:-1], 1))


# ============================================================================ frame-conditioned models


def network_given_frames(config: ml_collections.ConfigDict, mask: np.ndarray,
                         factor: int) -> np.ndarray:
  """bool [T]: the frames a frame-conditioned model (config.model.frame_conditioning) is given as
  its own input (concatenated to z_t, noise-augmented) for an observation with `mask` [1, T, h, w,
  1] (or broadcastable, 1 = observed) and pooling `factor`; the task's method (replacement or
  reconstruction guidance) holds the output to the rest of the observation.

  The network gets only what it was trained on (train.cond_frames): 'first', the first
  train.num_cond_frames frames; 'low_frame_rate', frames 0, s, 2s, ...; 'random', every fully
  observed frame (it was trained on any k of them); 'low_res', every frame of the f x f pooled clip.
  A model trained with train.cond_drop_prob > 0 also generates given no frames: it gets none when
  the observation does not hold its frames whole (e.g. a long video's first block). Otherwise
  raises ValueError naming the mismatch.
  """
  t = config.train
  mask = np.asarray(mask)
  T = mask.shape[1]
  if t.cond_frames == 'low_res':
    f = t.cond_low_res_factor
    if factor != f or not np.all(mask > 0):
      raise ValueError(f"the model is a super-resolution stage (train.cond_frames='low_res', given "
                       f'every frame pooled {f}x{f}) and takes only super_resolve with '
                       f'sample.super_resolution_factor={f}')
    return np.ones(T, bool)
  if factor != 1:
    raise ValueError(f"the model was trained given whole frames (train.cond_frames="
                     f"'{t.cond_frames}'), not a pooled clip")
  observed = np.all(np.broadcast_to(mask, (1, T, *mask.shape[2:])).reshape(T, -1) > 0, axis=1)
  if t.cond_frames == 'random':
    if observed.any() or t.cond_drop_prob > 0:
      return observed
    raise ValueError("the model (train.cond_frames='random', train.cond_drop_prob=0) needs at "
                     'least one whole frame given; this observation has none')
  if t.cond_frames == 'first':
    wanted = np.arange(T) < t.num_cond_frames
    what = f"the first {t.num_cond_frames} frame(s) (train.cond_frames='first')"
  else:
    wanted = np.asarray(frame_conditioning.low_frame_rate_mask(T, stride=t.cond_frame_stride))
    what = (f"frames 0, {t.cond_frame_stride}, ... (train.cond_frames='low_frame_rate', "
            f'train.cond_frame_stride={t.cond_frame_stride})')
  if not np.all(observed[wanted]):
    if t.cond_drop_prob > 0:
      return np.zeros(T, bool)
    raise ValueError(f'the model was trained given {what}, and this observation gives whole '
                     f'frames {np.flatnonzero(observed).tolist()}')
  return wanted


def task_masks(config: ml_collections.ConfigDict, task: str,
               video_shape: Sequence[int]) -> list[tuple[np.ndarray, int]]:
  """(mask, factor) of every sampling call of `task` with config.sample's settings: one for the
  test-clip tasks, one per block for 'extend' (its first `known` frames given)."""
  c = config.sample
  if task == 'extend':
    plan = block_plan(total_frames=c.extend_frames, block_frames=video_shape[0],
                      num_known=c.num_known_frames)
    return [(frame_mask(video_shape[0], range(known)), 1) for _, known in plan]
  return [task_mask(task, video_shape, num_known_frames=c.num_known_frames,
                    super_resolution_factor=c.super_resolution_factor,
                    inpaint_fraction=c.inpaint_fraction)]


def check_frame_conditioned_task(config: ml_collections.ConfigDict, task: str,
                                 video_shape: Sequence[int], field: str = 'sample.task') -> None:
  """Raises UserError, naming the fix, when a frame-conditioned model cannot be given what `task`
  gives (`network_given_frames` of each of its calls); nothing for other models."""
  if not config.model.get('frame_conditioning', False) or task == 'generate':
    return
  for mask, factor in task_masks(config, task, video_shape):
    try:
      network_given_frames(config, mask, factor)
    except ValueError as e:
      if task == 'extend':
        fix = ("train it with --config.train.cond_drop_prob > 0 (a story's first block is given no "
               'frames), or use a model without frame conditioning')
      elif task == 'predict' and config.train.cond_frames == 'first':
        fix = f'set --config.sample.num_known_frames >= {config.train.num_cond_frames}'
      else:
        fix = ("use a model trained for it (train.cond_frames='random' takes any whole frames) or "
               'one without frame conditioning')
      raise UserError(f'config.{field}={task!r} cannot condition this frame-conditioned model: '
                      f'{e}: {fix}.') from None


# ============================================================================ long videos


def block_plan(*, total_frames: int, block_frames: int, num_known: int) -> list[tuple[int, int]]:
  """(start, known) of each block of an extension: block i covers frames [start, start + T) of the
  long video, its first `known` frames already made by the blocks before (0 for the first).

  Blocks advance by T - num_known frames; the last one is moved back to end at total_frames (it
  then carries more known frames). Needs total_frames >= T and 1 <= num_known < T.
  """
  T = block_frames
  if total_frames < T or not 1 <= num_known < T:
    raise ValueError(f'Need total_frames >= block_frames = {T} and 1 <= num_known < {T}; got '
                     f'total_frames={total_frames}, num_known={num_known}.')
  plan, end = [(0, 0)], T
  while end < total_frames:
    start = min(end - num_known, total_frames - T)
    plan.append((start, end - start))
    end = start + T
  return plan


def block_prompts(prompts: Sequence[str], plan: Sequence[tuple[int, int]],
                  total_frames: int, block_frames: int) -> list[str]:
  """The story's prompt of each block of `plan`: the P prompts describe equal shares of the long
  video (prompt p: frames [p L / P, (p + 1) L / P)), and a block gets the prompt of the share
  holding the middle of its new frames (the known ones are the block before's work)."""
  middles = [start + known + (block_frames - known - 1) / 2 for start, known in plan]
  return [prompts[min(int(m * len(prompts) // total_frames), len(prompts) - 1)] for m in middles]


def extend_video(sample_block: Callable[[np.ndarray, np.ndarray, int], np.ndarray], *,
                 num_videos: int, video_shape: Sequence[int], total_frames: int,
                 num_known: int) -> np.ndarray:
  """A long video made block by block (see `block_plan`).

  sample_block(observation [N, T, H, W, C], mask [1, T, 1, 1, 1], block index) -> float
  [N, T, H, W, C]: a block whose first frames (mask 1) are the observation. Returns float
  [num_videos, total_frames, H, W, C].
  """
  T = video_shape[0]
  video = np.zeros((num_videos, total_frames, *video_shape[1:]), np.float32)
  for index, (start, known) in enumerate(block_plan(total_frames=total_frames, block_frames=T,
                                                     num_known=num_known)):
    mask = frame_mask(T, range(known))
    observation = video[:, start:start + T] * mask
    video[:, start:start + T] = np.asarray(sample_block(observation, mask, index))
  return video


# ============================================================================ the sampling call


def task_factor(task: str, config: ml_collections.ConfigDict) -> int:
  """The pooling factor f of `task`'s observation (task_conditioning's): f for super_resolve,
  1 (masks only) for the others."""
  return config.sample.super_resolution_factor if task == 'super_resolve' else 1


def make_conditional_generate_fn(model, *, logsnr_fn: Callable, config: ml_collections.ConfigDict,
                                 video_shape: tuple[int, int, int, int], mesh: jax.sharding.Mesh,
                                 factor: int,
                                 expert: experts.Expert | None = None) -> ConditionalGenerateFn:
  """Returns generate(params, prompts, observation, mask, rng) -> float videos [N, T, H, W, C] in
  [-1, 1], sampled with `config.sample.conditioning_method` given y = A(x) (guidance.observe with
  `mask` and `factor`): observation [N, T, H/f, W/f, C], mask [1, T, H/f, W/f, 1] (or
  broadcastable). `factor` has no default: it must be the conditioning's (`task_factor`), or
  the guidance compares a pooled observation with an unpooled video. Text conditioning and
  classifier-free guidance as make_generate_fn's; the reconstruction gradient goes through the
  guided denoiser (see guidance.py), the expert's at the steps it takes (experts.py), when there
  is one. A frame-conditioned model (config.model.frame_conditioning) is also given the
  observation's frames it was trained on as its own input (`network_given_frames`; noise-augmented
  at config.sample.cond_aug_logsnr), and the method holds the output to all of the observation.
  """
  c = config.sample
  batch, method, w_r = c.batch_size, c.conditioning_method, c.reconstruction_weight
  frame_conditioned = config.model.get('frame_conditioning', False)

  def generate_batch(params, cond, observation, mask, given, rng, expert_inputs):
    if frame_conditioned:  # The network's own input: the frames it was trained to be given.
      frames = (frame_conditioning.low_res_input(observation, factor=factor) if factor > 1
                else observation)
      cond = dict(cond, **frame_conditioning.sampling_inputs(
          frames, mask=jnp.broadcast_to(given, (batch, given.shape[0])),
          logsnr=c.cond_aug_logsnr, rng=jax.random.fold_in(rng, 1)))
    # Unclipped: the guidance below clips after its gradient (clipped pixels pass none).
    denoise_fn = conditioning.guided_denoiser(model, params, cond, config=config, batch=batch,
                                              clip_x=False)
    denoise_fn = experts.with_expert(expert, expert_inputs, denoise_fn, cond, batch=batch,
                                     clip_x=False)
    conditional = guidance.conditional_denoiser(
        method, denoise_fn, observation=observation, mask=mask, factor=factor, weight=w_r,
        dynamic_threshold_percentile=c.dynamic_threshold)
    return samplers.sample(
        conditional, rng=rng, shape=(batch, *video_shape), logsnr_fn=logsnr_fn,
        num_steps=c.num_steps, sampler=c.sampler, time_spacing=c.time_spacing, eta=c.eta,
        gamma=c.gamma, denoiser_takes_rng=True)

  sharded, replicated = mesh_lib.batch_sharded(mesh), mesh_lib.replicated(mesh)
  # Parameters keep the layout they come in (as make_generate_fn's).
  generate_jit = jax.jit(generate_batch,
                         in_shardings=(None, sharded, sharded, replicated, replicated,
                                       replicated, None),
                         out_shardings=sharded)
  expert_inputs = experts.jit_inputs(expert)

  def global_array(a):
    # Every process holds all inputs; each device takes its slice of the batch.
    return jax.make_array_from_callback(a.shape, sharded, lambda index, a=a: a[index])

  def generate(params, prompts, observation, mask, rng):
    prompts, observation = list(prompts), np.asarray(observation, np.float32)
    assert len(prompts) == observation.shape[0], (len(prompts), observation.shape)
    num_chunks = -(-len(prompts) // batch)
    pad = num_chunks * batch - len(prompts)
    cond = conditioning.prompt_inputs(config, prompts + [''] * pad)
    observation = np.concatenate([observation, np.zeros((pad, *observation.shape[1:]),
                                                        np.float32)])
    # bool [T]: the frames a frame-conditioned network is given itself (unused by others).
    given = (network_given_frames(config, mask, factor) if frame_conditioned
             else np.zeros(observation.shape[1], bool))
    mask = jax.device_put(np.asarray(mask, np.float32), replicated)
    given = jax.device_put(given, replicated)
    videos = []
    for chunk in range(num_chunks):
      rows = slice(chunk * batch, (chunk + 1) * batch)
      out = generate_jit(params, {k: global_array(v[rows]) for k, v in cond.items()},
                         global_array(observation[rows]), mask, given,
                         jax.random.fold_in(rng, chunk),
                         expert_inputs)
      videos.append(mesh_lib.to_host(out))
    return np.concatenate(videos)[:len(prompts)]

  return generate


# ============================================================================ --mode sample


def _write_videos(directory: str, stem: str, videos: np.ndarray, *, fps: int) -> list[str]:
  """GIF and MP4 of each uint8 video [N, T, H, W, 3]."""
  written = []
  for k, video in enumerate(videos):
    for suffix, writer in (('gif', video_io.write_gif), ('mp4', video_io.write_mp4)):
      path = os.path.join(directory, f'{stem}_{k}.{suffix}')
      writer(path, video, fps=fps)
      written.append(path)
  return written


def score(generated: np.ndarray, truth: np.ndarray, conditioning: Conditioning, *,
          dataset: str) -> dict[str, list[float]]:
  """Per clip: PSNR over the unknown entries, SSIM over the frames with unknown entries, and on
  moving_shapes the tracker's trajectory error (pixels) over those frames and the fraction of the
  true object positions found. generated, truth: uint8 [N, T, H, W, 3]."""
  from vdm_jax.metrics import reconstruction  # pylint: disable=g-import-not-at-top
  unknown = unknown_entries(conditioning, video_shape=truth.shape[1:])
  frames = np.flatnonzero(unknown.reshape(unknown.shape[1], -1).any(axis=1))
  scores = {'psnr': reconstruction.psnr(generated, truth, where=unknown).tolist(),
            'ssim': reconstruction.ssim(generated[:, frames], truth[:, frames]).tolist()}
  if dataset == 'moving_shapes':
    error, found = reconstruction.trajectory_error(generated, truth, frames=frames)
    scores.update(trajectory_error_px=error.tolist(), objects_found=found.tolist())
  return scores


def run_test_clip_task(run, generate: ConditionalGenerateFn, *, task: str, num_clips: int,
                       rng: jax.Array, directory: str | None) -> dict:
  """A TEST_CLIP_TASKS task on the first `num_clips` clips of `config.eval.split`: conditioning,
  generation, scores; writes the videos, the comparison picture and metrics.json into
  `directory` (None: nothing written). Returns {'scores': per-clip lists, 'mean': their means,
  'generated', 'truth', 'conditioning': uint8 [N, T, H, W, 3], 'captions': the clips' captions}."""
  from vdm_jax import train  # pylint: disable=g-import-not-at-top
  from vdm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config, c = run.config, run.config.sample
  builder = train.load_dataset_builder(config)
  available = len(builder.as_data_source(split=config.eval.split))
  if num_clips > available:
    raise UserError(f'config.sample.num_clips={num_clips} exceeds the {available} clips of the '
                    f'{config.eval.split!r} split: lower --config.sample.num_clips.')
  true_uint8, captions = pipeline.make_eval_source(builder=builder, split=config.eval.split,
                                                    num_examples=num_clips)
  truth = pipeline.to_model_inputs({'video': true_uint8, 'caption': captions},
                                   max_text_length=config.data.max_text_length)['video']
  conditioning = task_conditioning(task, truth, num_known_frames=c.num_known_frames,
                                   super_resolution_factor=c.super_resolution_factor,
                                   inpaint_fraction=c.inpaint_fraction)
  generated = video_io.to_uint8(generate(run.ema_params, captions, conditioning.observation,
                                         conditioning.mask, rng))
  shown = conditioning_picture(conditioning, video_shape=truth.shape[1:])
  scores = score(generated, true_uint8, conditioning, dataset=config.data.name)
  mean = {k: float(np.nanmean(v)) if np.any(np.isfinite(v)) else float('nan')
          for k, v in scores.items()}
  if directory is not None and jax.process_index() == 0:
    os.makedirs(directory, exist_ok=True)
    _write_videos(directory, 'generated', generated, fps=c.fps)
    rows = min(4, num_clips)
    labels = [f'{kind} {i}' for i in range(rows) for kind in ('conditioning', 'generated', 'truth')]
    video_io.write_labelled_grid_png(
        os.path.join(directory, 'comparison.png'), labels,
        np.stack([shown[:rows], generated[:rows], true_uint8[:rows]], 1).reshape(
            -1, *generated.shape[1:]))
    with open(os.path.join(directory, 'metrics.json'), 'w') as f:
      json.dump({'task': task, 'method': c.conditioning_method, 'step': run.step,
                 'captions': captions, 'mean': mean, 'per_clip': scores}, f, indent=2)
  return dict(scores=scores, mean=mean, generated=generated, truth=true_uint8, conditioning=shown,
              captions=captions)


# Steps checked after each block boundary: a block may continue its given frames for a frame or
# two and then jump to where it would rather draw the object (measured on a trained model).
BOUNDARY_WINDOW = 4
# A jump anywhere in the video: the object, from one frame where it is found to the next, moves
# more than JUMP_PX plus MAX_SPEED_PX per frame skipped between them (frames where it is lost).
# moving_shapes' fastest object moves 2 * sqrt(2) px per frame at 32x32 (a diagonal at speed 2).
JUMP_PX = 5.0
MAX_SPEED_PX = 2.0 * np.sqrt(2.0)


def _nanmax(values: np.ndarray) -> float:
  """The largest finite value, NaN when there is none (where the object is lost all along)."""
  finite = values[np.isfinite(values)]
  return float(finite.max()) if finite.size else float('nan')


def count_jumps(centroids: np.ndarray, *, scale: float = 1.0) -> int:
  """Jumps of one tracked object (centroids float [T, 2], NaN where not found): consecutive
  found frames t < u whose centroids lie more than (JUMP_PX + MAX_SPEED_PX (u - t - 1)) * scale
  apart. An object that fades out and reappears elsewhere has jumped; one that flickers in
  place, or is lost while it moves at the dataset's speed, has not."""
  found = np.flatnonzero(np.all(np.isfinite(centroids), axis=1))
  distance = np.hypot(*np.diff(centroids[found], axis=0).T)
  allowed = (JUMP_PX + MAX_SPEED_PX * (np.diff(found) - 1)) * scale
  return int(np.sum(distance > allowed))


def boundary_report(video: np.ndarray, *, plan: Sequence[tuple[int, int]], block_frames: int,
                    prompts: Sequence[str]) -> dict:
  """Tracker check of one moving_shapes extension (uint8 [L, H, W, 3]): the largest object's step
  (pixels per frame) into the first new frame of each block ('boundary_step_px'), the largest of
  its first BOUNDARY_WINDOW steps from there ('max_step_after_boundary_px'), the median step
  outside those windows, the direction tracked over each block's new frames (from its last known
  one: the known frames are the block before's motion) against its prompt's, and the fraction of
  blocks whose direction is the prompt's. Over the whole video: the fraction of frames where the
  object is found ('frames_with_object') and its jumps anywhere, across frames where it is lost
  (`count_jumps`): a block can start where the last one ended and still lose the object
  mid-block and redraw it elsewhere."""
  from vdm_jax.data import tracker  # pylint: disable=g-import-not-at-top
  objects = tracker.track_video(video, min_frames_fraction=0.25)
  if not objects:
    return {'object_found': False}
  steps = np.hypot(*np.diff(objects[0]['centroids'], axis=0).T)  # steps[t]: frame t -> t + 1
  boundaries = [start + known - 1 for start, known in plan[1:]]
  windows = [np.arange(b, min(b + BOUNDARY_WINDOW, len(steps))) for b in boundaries]
  inside = np.delete(steps, np.concatenate(windows)) if windows else steps
  directions = []
  for start, known in plan:
    block = tracker.track_video(video[start + max(known - 1, 0):start + block_frames])
    directions.append(block[0]['direction'] if block else None)
  prompted = []
  for prompt in prompts:
    try:
      prompted.append(tracker.parse_caption(prompt)[0][2])
    except ValueError:
      prompted.append(None)
  followed = [d == p for d, p in zip(directions, prompted) if p is not None]
  centroids = objects[0]['centroids']
  return {'object_found': True,
          'frames_with_object': float(np.mean(np.all(np.isfinite(centroids), axis=1))),
          'jumps': count_jumps(centroids, scale=video.shape[2] / 32),
          'boundary_step_px': [float(steps[b]) for b in boundaries],
          'max_step_after_boundary_px': [_nanmax(steps[w]) for w in windows],
          'median_step_px': float(np.nanmedian(inside)) if inside.size else float('nan'),
          'block_directions': directions, 'prompted_directions': prompted,
          'blocks_following_prompt': float(np.mean(followed)) if followed else float('nan')}


def run_extend(run, generate: ConditionalGenerateFn, *, prompts: Sequence[str], num_videos: int,
               rng: jax.Array, directory: str | None) -> dict:
  """'extend': `num_videos` long videos of one story (`prompts` spread over the blocks). Writes
  each as GIF and MP4, a PNG with a row per block labelled by its prompt, and, on moving_shapes,
  the tracker's boundary report in metrics.json. Returns {'videos': uint8 [N, L, H, W, 3],
  'plan', 'prompts' (per block), 'reports'}."""
  c = run.config.sample
  T = run.video_shape[0]
  plan = block_plan(total_frames=c.extend_frames, block_frames=T, num_known=c.num_known_frames)
  per_block = block_prompts(prompts, plan, c.extend_frames, T)

  def sample_block(observation, mask, index):
    logging.info('Block %d/%d (%r)', index + 1, len(plan), per_block[index])
    return generate(run.ema_params, [per_block[index]] * num_videos, observation, mask,
                    jax.random.fold_in(rng, index))

  videos = video_io.to_uint8(extend_video(sample_block, num_videos=num_videos,
                                          video_shape=run.video_shape,
                                          total_frames=c.extend_frames,
                                          num_known=c.num_known_frames))
  reports = []
  if run.config.data.name == 'moving_shapes':
    reports = [boundary_report(v, plan=plan, block_frames=T, prompts=per_block) for v in videos]
  if directory is not None and jax.process_index() == 0:
    os.makedirs(directory, exist_ok=True)
    _write_videos(directory, 'story', videos, fps=c.fps)
    for k, video in enumerate(videos):
      video_io.write_labelled_grid_png(
          os.path.join(directory, f'story_{k}_blocks.png'),
          [f'{start}-{start + T - 1}: {p}' for (start, _), p in zip(plan, per_block)],
          np.stack([video[start:start + T] for start, _ in plan]))
    with open(os.path.join(directory, 'metrics.json'), 'w') as f:
      json.dump({'task': 'extend', 'method': c.conditioning_method, 'step': run.step,
                 'plan': plan, 'block_prompts': per_block, 'tracker': reports}, f, indent=2)
  return dict(videos=videos, plan=plan, prompts=per_block, reports=reports)


def task_directory(config: ml_collections.ConfigDict, workdir: str, step: int,
                   expert: experts.Expert | None = None) -> str:
  """Named by the task and its settings, so another run never overwrites earlier outputs."""
  c = config.sample
  method = (f'reconstruction{c.reconstruction_weight:g}' if c.conditioning_method == 'reconstruction'
            else 'replacement')
  detail = {'predict': f'_k{c.num_known_frames}', 'extend': f'_k{c.num_known_frames}_L{c.extend_frames}',
            'super_resolve': f'_f{c.super_resolution_factor}',
            'inpaint': f'_r{c.inpaint_fraction:g}'}.get(c.task, '')
  return os.path.join(workdir, 'samples', f'step_{step}_{c.task}{detail}_{method}_{c.sampler}'
                      f'{c.num_steps}_w{c.guidance_weight:g}{experts.directory_suffix(expert)}'
                      f'_seed{c.seed}')


def run_task(config: ml_collections.ConfigDict, workdir: str,
             prompts: Sequence[str] | None = None, step: int | None = None) -> dict:
  """`--mode sample` with config.sample.task other than 'generate': restores the EMA parameters
  of the checkpoint at `step` (default: the latest), runs the task and writes its outputs (see the module docstring).
  Returns the task's result (run_test_clip_task's or run_extend's) with 'directory' and 'written'
  (the paths written)."""
  from vdm_jax import train  # pylint: disable=g-import-not-at-top
  c = config.sample  # (validated with the rest of the config when the run is restored)
  if prompts and c.task in TEST_CLIP_TASKS:
    raise UserError(f'--prompt applies to the tasks generate and extend; config.sample.task='
                    f'{c.task!r} conditions on test clips under their own captions: drop --prompt.')
  run = train.restore_for_inference(config, workdir, step)
  generate = make_conditional_generate_fn(run.model, logsnr_fn=run.logsnr_fn, config=config,
                                          video_shape=run.video_shape, mesh=run.mesh,
                                          factor=task_factor(c.task, config), expert=run.expert)
  directory = task_directory(config, workdir, run.step, run.expert)
  rng = jax.random.PRNGKey(c.seed)
  logging.info('Task %s with %s conditioning (%s, %d steps)', c.task, c.conditioning_method,
               c.sampler, c.num_steps)
  if c.task == 'extend':
    result = run_extend(run, generate, prompts=list(prompts or c.prompts),
                        num_videos=c.num_videos, rng=rng, directory=directory)
  else:
    result = run_test_clip_task(run, generate, task=c.task, num_clips=c.num_clips, rng=rng,
                                directory=directory)
    logging.info('%s: %s', c.task, ', '.join(f'{k} {v:.3f}' for k, v in result['mean'].items()))
  written = sorted(os.path.join(directory, name) for name in os.listdir(directory)) if (
      jax.process_index() == 0) else []
  logging.info('Wrote %d files to %s', len(written), directory)
  return {**result, 'directory': directory, 'written': written}

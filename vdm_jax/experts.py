"""A high-noise expert: a second trained run that denoises the noisiest sampling steps.

eDiff-I (Balaji et al. 2022) samples with an ensemble of expert denoisers, each trained for a
range of noise levels, having found that the text steers a sample mostly at high noise. Here the
split is into two: the run sampled from (the main run) denoises every step with log-SNR at or
above `config.sample.expert_logsnr_below`, and the run in `config.sample.expert_workdir` the
steps below it.

Why `moving_shapes` needs one (README, Results): the direction word decides where the object is
in each frame, which must be settled at high noise, where every frame is exchangeable noise. A
network trained on all levels does not learn it there; one with the layout embedding
(`model.layout_embedding`) does, but loses the objects at the visible levels. Each is used here
where it is good.

The expert keeps its own model and diffusion sections (from its checkpoint's saved config); it
shares the main run's data, conditioning inputs (the same prompts feed both), sampler grid and
guidance weight. Its parameters are an argument of the compiled sampling call, not constants.

With a frame-conditioned main run (a prediction model continuing a story, tasks.py) the expert
may be one without frame conditioning, which decides the layout from the prompt and the noisy
video alone (the task's method holds that video to the given frames), or a frame-conditioned one
trained given the same frames, which reads them too (`check_compatible`).
"""

import dataclasses
import os
from typing import Any

import ml_collections
import numpy as np

from vdm_jax import checkpoints
from vdm_jax.errors import UserError

# What both runs must agree on, because one set of conditioning inputs and one video feed both.
SHARED_FIELDS = (('model', 'conditioning'), ('model', 'text_tokenizer'), ('model', 'text_encoder'),
                 ('model', 'num_classes'), ('data', 'max_text_length'),
                 ('diffusion', 'noise_prior'), ('diffusion', 'noise_prior_alpha'))


@dataclasses.dataclass
class Expert:
  """A restored expert: its model, config, EMA parameters and the level below which it is used."""
  model: Any
  config: ml_collections.ConfigDict
  params: Any
  logsnr_below: float
  step: int
  workdir: str


def expert_config(config: ml_collections.ConfigDict, saved: dict) -> ml_collections.ConfigDict:
  """The main run's config with the expert checkpoint's model and diffusion sections (`saved`:
  its saved config; fields it predates take checkpoints.ADDED_FIELDS' values) and no expert of
  its own."""
  expert = checkpoints.with_saved_sections(config, saved, ('model', 'diffusion'))
  with expert.unlocked():
    expert.sample.expert_workdir = ''
    # Its own trainable subset shaped its optimizer state, restored with it (and dropped).
    expert.optim.trainable = saved.get('optim', {}).get('trainable', '')
  return expert


def check_compatible(config: ml_collections.ConfigDict, saved: dict, workdir: str) -> None:
  """Refuses (UserError) an expert that cannot share the main run's inputs and videos.

  An expert without frame conditioning may serve any main run (a frame-conditioned main run's
  given frames are simply not its input: it decides the layout from the prompt and the noisy
  video, which holds the given frames under replacement or guidance). A frame-conditioned expert
  needs a main run given the same frames (train.cond_frames and its k / stride / factor), since
  the main run makes the frame inputs both networks read."""
  shared = SHARED_FIELDS
  if saved.get('model', {}).get('frame_conditioning', False):
    if not config.model.frame_conditioning:
      raise UserError(f'config.sample.expert_workdir={workdir!r} is frame-conditioned '
                      '(model.frame_conditioning=True) but this run is not, so nothing would give '
                      'it its frames: pick an expert trained without frame conditioning.')
    shared += tuple(('train', key)
                    for key in checkpoints.frame_conditioning_keys(config.train.cond_frames))
  for section, key in shared:
    mine = config[section][key]
    theirs = checkpoints.as_config_value(saved.get(section, {}).get(
        key, checkpoints.ADDED_FIELDS.get(section, {}).get(key, mine)))
    if theirs != mine:
      raise UserError(f'config.sample.expert_workdir={workdir!r} was trained with '
                      f'config.{section}.{key}={theirs!r} but this run has {mine!r}: both runs '
                      'read the same inputs, so pick an expert trained with the same value.')
  keys = ('name', 'num_frames', 'resolution', 'pool_factor', 'frame_skip')
  shape = tuple(saved.get('data', {}).get(k, 1 if k in ('pool_factor', 'frame_skip') else None)
                for k in keys)
  mine = tuple(config.data[k] for k in keys)
  if shape != mine:
    raise UserError(f'config.sample.expert_workdir={workdir!r} was trained on data (name, '
                    f'num_frames, resolution, pool_factor, frame_skip)={shape} but this run '
                    f'samples {mine}: pick an expert trained on the same videos.')


def restore_expert(config: ml_collections.ConfigDict) -> Expert | None:
  """The expert of config.sample.expert_workdir (at config.sample.expert_step, 0: its latest
  checkpoint), or None when none is configured."""
  workdir = config.sample.get('expert_workdir', '')
  if not workdir:
    return None
  from vdm_jax import train  # pylint: disable=g-import-not-at-top  (train imports this module)
  if not os.path.isdir(checkpoints.checkpoint_dir(workdir)):
    raise UserError(f'config.sample.expert_workdir={workdir!r} has no checkpoints '
                    f'({checkpoints.checkpoint_dir(workdir)} does not exist): point it at a '
                    "trained run's workdir, or set --config.sample.expert_workdir=''.")
  checkpointer = checkpoints.Checkpointer(workdir, read_only=True)
  steps = checkpointer.all_steps()
  step = config.sample.expert_step or (max(steps) if steps else None)
  if step not in steps:
    checkpointer.close()
    raise UserError(f'config.sample.expert_step={config.sample.expert_step} is not a checkpoint '
                    f'of {checkpointer.directory} (it has {", ".join(map(str, steps)) or "none"}): '
                    'pick one of those, or 0 for the latest.')
  saved = checkpointer.saved_config(step)
  checkpointer.close()
  check_compatible(config, saved, workdir)
  expert_run_config = expert_config(config, saved)
  run = train.restore_for_inference(expert_run_config, workdir, step)  # (validates the config)
  return Expert(model=run.model, config=expert_run_config, params=run.ema_params,
                logsnr_below=float(config.sample.expert_logsnr_below), step=run.step,
                workdir=os.path.abspath(os.path.expanduser(workdir)))


def settings(expert: Expert | None) -> dict[str, Any]:
  """The expert's part of a sampling run's settings ({} without one), for evaluation records: its
  workdir, the step restored (not expert_step's 0 for "the latest", which moves as it trains) and
  its level."""
  if expert is None:
    return {}
  return {'expert_workdir': expert.workdir, 'expert_step': expert.step,
          'expert_logsnr_below': expert.logsnr_below}


def directory_suffix(expert: Expert | None) -> str:
  """'_expert_<workdir name>_step<step>_below<level>' for sample directories ('' without one), so
  samples with and without an expert never overwrite each other."""
  if expert is None:
    return ''
  return f'_expert_{os.path.basename(expert.workdir)}_step{expert.step}_below{expert.logsnr_below:g}'


def jit_inputs(expert: Expert | None) -> dict[str, Any] | None:
  """What a compiled sampling call takes of the expert as arguments, not constants: its
  parameters and its level (so one compilation serves every level)."""
  if expert is None:
    return None
  return {'params': expert.params, 'logsnr_below': np.float32(expert.logsnr_below)}


def with_expert(expert: Expert | None, inputs: dict[str, Any] | None, low_noise_fn, cond: dict, *,
                batch: int, clip_x: bool):
  """`low_noise_fn` (the main run's denoise_fn) with the expert's guided denoiser taking the
  steps below its level; `low_noise_fn` itself without an expert. inputs: jit_inputs(expert),
  traced. cond, batch, clip_x: as conditioning.guided_denoiser's (the expert gets the same
  inputs)."""
  if expert is None:
    return low_noise_fn
  from vdm_jax import conditioning  # pylint: disable=g-import-not-at-top
  from vdm_jax import samplers  # pylint: disable=g-import-not-at-top
  # A frame-conditioned main run's frame inputs are not an input of an expert without them.
  cond = {k: v for k, v in cond.items() if k in expert.model.conditioning_inputs()}
  high_noise_fn = conditioning.guided_denoiser(expert.model, inputs['params'], cond,
                                               config=expert.config, batch=batch, clip_x=clip_x)
  return samplers.expert_denoiser(high_noise_fn, low_noise_fn,
                                  logsnr_below=inputs['logsnr_below'])

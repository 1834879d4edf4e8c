"""A cascade: the workdir's run samples low-resolution, low-frame-rate videos, then super-resolution
stages raise their resolution or frame rate in turn (Imagen Video, Ho et al. 2022b, sec. 2;
Cascaded Diffusion Models, Ho et al. 2021).

`config.sample.cascade_workdirs` lists the stages' workdirs, in order. Each is a run trained with
`train.cond_frames='low_res'` (frame_conditioning.py; spatial: given every frame at 1/f of its
resolution, it generates the video at its own) or `'low_frame_rate'` (temporal: given frames 0,
s, 2s, ..., it generates the frames between). Stage i is given what stage i - 1 (or the base run) made, with
the same prompts, and the same sampler, steps, guidance and seed settings (`config.sample`); it
keeps its own model, diffusion, data and training sections, read from its checkpoint, and its
latest checkpoint is used. The base stage of `moving_shapes` is
`experiments/moving_shapes.py:cascade_base` (the videos pooled to 16x16, `data.pool_factor`), its
super-resolution stage `:super_resolution` (16x16 -> 32x32); or, in time, `:temporal_base` (8
frames, `data.frame_skip`) and `:temporal_super_resolution` (8 -> 16 frames).

A cascade is a sampling-time setting: `--mode sample` and `--mode eval` of the base workdir use
it; training never does.
"""

import dataclasses
import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from vdm_jax import checkpoints
from vdm_jax import sample as sample_lib
from vdm_jax.errors import UserError

# Every stage reads the same prompts: the fields that decide how they become inputs.
PROMPT_FIELDS = (('model', 'conditioning'), ('model', 'text_tokenizer'), ('model', 'text_encoder'),
                 ('model', 'num_classes'), ('data', 'max_text_length'))
# What a stage keeps of its own trained config (the rest, sampling included, is the base run's).
OWN_SECTIONS = ('data', 'model', 'diffusion', 'optim', 'train')


@dataclasses.dataclass
class Stage:
  """A restored super-resolution stage: its run (train.Run: model, config, EMA parameters,
  generate), workdir, step and kind ('sr': spatial, 'tsr': temporal)."""
  run: Any
  workdir: str
  step: int
  kind: str = 'sr'


def stage_config(config: ml_collections.ConfigDict, saved: dict) -> ml_collections.ConfigDict:
  """The base run's config with the stage checkpoint's own sections (`saved`: its saved config;
  fields it predates take checkpoints.ADDED_FIELDS' values), sampling 'generate' with no expert,
  no stages of its own and no bits/dim."""
  stage = checkpoints.with_saved_sections(config, saved, OWN_SECTIONS)
  with stage.unlocked():
    stage.sample.cascade_workdirs = ()
    stage.sample.expert_workdir = ''
    stage.sample.task = 'generate'
    stage.eval.bpd_num_videos = 0  # Never evaluated alone (and not implemented for its kind).
  return stage


def is_stage(stage: ml_collections.ConfigDict) -> bool:
  """Whether a run's config is a spatial or temporal super-resolution stage."""
  return bool(sample_lib.low_res_factor_of(stage) or sample_lib.frame_stride_of(stage))


def check_stage(config: ml_collections.ConfigDict, stage: ml_collections.ConfigDict,
                 workdir: str, field: str = 'config.sample.cascade_workdirs') -> None:
  """Refuses (UserError, naming `field`, where the workdir came from) a stage that is no
  super-resolution stage or reads other prompts."""
  if not is_stage(stage):
    raise UserError(f'{field}: {workdir!r} is not a super-resolution '
                    "stage (a run trained with model.frame_conditioning=True and "
                    "train.cond_frames='low_res' or 'low_frame_rate', e.g. "
                    'experiments/moving_shapes.py:super_resolution): pick another.')
  for section, key in PROMPT_FIELDS:
    if stage[section][key] != config[section][key]:
      raise UserError(f'{field}: {workdir!r} was trained with '
                      f'config.{section}.{key}={stage[section][key]!r} but the base run has '
                      f'{config[section][key]!r}: every stage reads the same prompts, so pick a '
                      'stage trained with the same value.')


def restore_stage(config: ml_collections.ConfigDict, workdir: str,
                  field: str = 'config.sample.cascade_workdirs') -> Stage:
  """The super-resolution stage trained in `workdir` (its latest checkpoint) as a stage of the run
  of `config`: checked (check_stage), its config its own sections plus `config`'s sampling.
  Refusals name `field`, where the workdir came from."""
  from vdm_jax import train  # pylint: disable=g-import-not-at-top  (train builds runs)
  if not os.path.isdir(checkpoints.checkpoint_dir(workdir)):
    raise UserError(f'{field}: {workdir!r} has no checkpoints '
                    f'({checkpoints.checkpoint_dir(workdir)} does not exist): train the stage '
                    'there first, or pick another.')
  checkpointer = checkpoints.Checkpointer(workdir, read_only=True)
  step = checkpointer.latest_step()
  saved = checkpointer.saved_config(step) if step is not None else {}
  checkpointer.close()
  if step is None:
    raise UserError(f'{field}: {workdir!r} has no checkpoint yet: '
                    'train the stage first, or pick another.')
  stage = stage_config(config, saved)
  check_stage(config, stage, workdir, field)
  run = train.restore_for_inference(stage, workdir, step)  # (validates the config)
  return Stage(run=run, workdir=os.path.abspath(os.path.expanduser(workdir)), step=step,
               kind='tsr' if sample_lib.frame_stride_of(stage) else 'sr')


def restore_stages(config: ml_collections.ConfigDict,
                   video_shape: Sequence[int]) -> list[Stage]:
  """The stages of config.sample.cascade_workdirs ([] for none), each checked to take the
  videos of the one before (the first: the base run's, of `video_shape`)."""
  stages, shape = [], tuple(video_shape)
  for workdir in config.sample.get('cascade_workdirs', ()):
    stage = restore_stage(config, workdir)
    given = sample_lib.given_frames_shape(stage.run.config, stage.run.video_shape)
    if given != shape:
      raise UserError(f'config.sample.cascade_workdirs: {workdir!r} super-resolves videos of '
                      f'shape {given} (frames, height, width, channels), but the stage before '
                      f'makes {shape}: order the stages by resolution and frame rate, or pick '
                      'one trained for that shape.')
    stages.append(stage)
    shape = tuple(stage.run.video_shape)
  return stages


def with_stages(generate: sample_lib.GenerateFn, stages: Sequence[Stage]) -> sample_lib.GenerateFn:
  """generate(params, prompts, rng, **kw) -> uint8 [N, T, H, W, 3] of the last stage: the base
  run's `generate` (with the base parameters), then each stage's, given the videos before it.
  Stage i draws its noise from fold_in(rng, i + 1). Without stages, `generate` itself. The
  result's `.all_stages(params, prompts, rng)` returns every stage's videos, base first."""
  if not stages:
    return generate

  def all_stages(params, prompts: Sequence[str], rng: jax.Array, **kwargs) -> list[np.ndarray]:
    videos = [generate(params, prompts, rng, **kwargs)]
    for i, stage in enumerate(stages):
      videos.append(stage.run.generate(stage.run.ema_params, prompts,
                                       jax.random.fold_in(rng, i + 1), frames=videos[-1]))
    return videos

  def cascaded(params, prompts: Sequence[str], rng: jax.Array, **kwargs) -> np.ndarray:
    return all_stages(params, prompts, rng, **kwargs)[-1]

  cascaded.all_stages = all_stages
  return cascaded


def cascaded_run(run, stages: Sequence[Stage]):
  """`run` (a train.Run) seen as the whole cascade, for sampling and evaluation: its `generate`
  runs every stage, and its video shape and data section are the last stage's (so evaluation
  compares with the true videos at that resolution). `run` itself without stages."""
  if not stages:
    return run
  final = stages[-1].run
  config = run.config.copy_and_resolve_references()
  with config.unlocked():
    config.data = final.config.data.copy_and_resolve_references()
  return dataclasses.replace(run, config=config, video_shape=final.video_shape,
                             generate=with_stages(run.generate, stages), bpd_fn=None,
                             eval_task_generate=None, stages=tuple(stages))


def settings(stages: Sequence[Stage]) -> dict[str, Any]:
  """The stages' part of an evaluation's settings ({} without any): workdirs and steps."""
  if not stages:
    return {}
  return {'cascade': [{'workdir': s.workdir, 'step': s.step} for s in stages]}


def directory_suffix(stages: Sequence[Stage]) -> str:
  """'_sr_<workdir name>_step<step>' per spatial stage ('_tsr_...' per temporal one), for sample
  directories ('' without stages)."""
  return ''.join(f'_{s.kind}_{os.path.basename(s.workdir)}_step{s.step}' for s in stages)

"""A cascade (vdm_jax/cascade.py): the base run's videos go through super-resolution stages, in
order, each given the one before's output; stages that cannot take them are refused."""

import types

import jax
import ml_collections
import numpy as np
import pytest

from tests.smoke import smoke_config
from vdm_jax import cascade
from vdm_jax import config_validation
from vdm_jax import train
from vdm_jax.errors import UserError



def stand_in_stage(name, factor, log):
  """A stage whose generate repeats each pixel f x f and adds its index, recording its inputs."""
  def generate(params, prompts, rng, frames):
    log.append((name, list(prompts), np.asarray(jax.random.key_data(rng)).tolist(), frames.shape))
    return np.repeat(np.repeat(frames, factor, axis=2), factor, axis=3) + params
  run = types.SimpleNamespace(generate=generate, ema_params=np.uint8(1))
  return cascade.Stage(run=run, workdir=f'/runs/{name}', step=7)


def test_stages_run_in_order_on_the_output_before_them_with_the_same_prompts():
  log = []

  def base(params, prompts, rng):
    log.append(('base', list(prompts), np.asarray(jax.random.key_data(rng)).tolist(), None))
    return np.full((len(prompts), 2, 4, 4, 3), params, np.uint8)

  stages = [stand_in_stage('sr8', 2, log), stand_in_stage('sr32', 4, log)]
  generate = cascade.with_stages(base, stages)
  rng = jax.random.PRNGKey(3)
  videos = generate(np.uint8(10), ['a', 'b'], rng)
  assert videos.shape == (2, 2, 32, 32, 3)
  np.testing.assert_array_equal(videos, 12)  # the base's 10, plus 1 per stage
  assert [entry[0] for entry in log] == ['base', 'sr8', 'sr32']
  assert all(entry[1] == ['a', 'b'] for entry in log)
  assert [entry[3] for entry in log[1:]] == [(2, 2, 4, 4, 3), (2, 2, 8, 8, 3)]
  keys = [entry[2] for entry in log]  # every stage draws its own noise
  assert keys[0] == np.asarray(jax.random.key_data(rng)).tolist() and len(set(map(str, keys))) == 3
  log.clear()
  base_videos, low, high = generate.all_stages(np.uint8(10), ['a', 'b'], rng)
  assert low.shape == (2, 2, 8, 8, 3) and np.array_equal(high, videos)
  assert cascade.with_stages(base, []) is base
  assert cascade.directory_suffix(stages) == '_sr_sr8_step7_sr_sr32_step7'
  assert cascade.settings(stages) == {'cascade': [{'workdir': '/runs/sr8', 'step': 7},
                                                  {'workdir': '/runs/sr32', 'step': 7}]}


def test_the_cascaded_run_evaluates_against_the_last_stages_data():
  config = smoke_config('/data', 4)
  config.data.pool_factor = 2
  stage_config = smoke_config('/data', 4)
  final = types.SimpleNamespace(config=stage_config, video_shape=(16, 32, 32, 3))
  run = train.Run(config=config, mesh=None, model=None, logsnr_fn=None,
                  video_shape=(16, 16, 16, 3), generate=lambda *a, **k: None)
  stage = cascade.Stage(run=final, workdir='/runs/sr', step=3)
  seen = cascade.cascaded_run(run, [stage])
  assert seen.video_shape == (16, 32, 32, 3) and seen.config.data.pool_factor == 1
  assert seen.stages == (stage,) and config.data.pool_factor == 2  # the base run is unchanged
  assert cascade.cascaded_run(run, []) is run


def test_a_stage_that_is_not_super_resolution_or_absent_is_refused(smoke_data_dir, tmp_path):
  config = smoke_config(smoke_data_dir, 4)
  generator = cascade.stage_config(config, smoke_config(smoke_data_dir, 4).to_dict())
  with pytest.raises(UserError, match="'/runs/gen' is not a super-resolution stage"):
    cascade.check_stage(config, generator, '/runs/gen')
  reader = generator.copy_and_resolve_references()
  reader.model.frame_conditioning, reader.train.cond_frames = True, 'low_res'
  reader.model.text_tokenizer = 'words'
  with pytest.raises(UserError, match="text_tokenizer='words' but the base run has 'bytes'"):
    cascade.check_stage(config, reader, '/runs/sr')
  config.sample.cascade_workdirs = (str(tmp_path / 'nothing'),)
  with pytest.raises(UserError, match='has no checkpoints'):
    cascade.restore_stages(config, (16, 16, 16, 3))
  config.sample.task = 'predict'
  with pytest.raises(UserError, match='not after config.sample.task'):
    config_validation.validate(config)


def save_initial_state(config, workdir: str, step: int = 2) -> None:
  """Saves the initial train state of `config`'s model into `workdir` as training saves a
  checkpoint (with the data iterator and the config), without compiling a train step."""
  from vdm_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from vdm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  run = train.setup(config)
  tx, _ = train.create_optimizer(config)
  state = jax.jit(lambda: train.create_train_state(run.model, tx, config, run.video_shape,
                                                   jax.random.PRNGKey(0)))()
  iterator = pipeline.make_train_iterator(
      builder=train.load_dataset_builder(config), split='train',
      global_batch_size=config.batch_size, seed=0, max_text_length=config.data.max_text_length)
  checkpointer = checkpoints.Checkpointer(workdir)
  checkpointer.save(step, state=state, data_iterator=iterator, config=config)
  checkpointer.close()


def test_a_saved_stage_takes_the_base_shape_and_refuses_another(smoke_data_dir, tmp_path):
  """A smoke super-resolution stage's checkpoint (its initial state, saved as training saves
  one; no train step to compile): restored as a stage of a 16x16 base, it makes 32x32 videos
  from 16x16 ones; after a 32x32 base it is refused in one line; evaluated alone, it is scored
  against the true videos whose pooled versions it is given."""
  from vdm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  sr = smoke_config(smoke_data_dir, 2)
  sr.model.frame_conditioning = True
  sr.train.cond_frames = 'low_res'
  sr.eval.bpd_num_videos = 0
  save_initial_state(sr, str(tmp_path / 'sr'))
  config = smoke_config(smoke_data_dir, 4)
  config.data.pool_factor = 2
  config.sample.cascade_workdirs = (str(tmp_path / 'sr'),)
  config.sample.num_steps = 2
  [stage] = cascade.restore_stages(config, (16, 16, 16, 3))
  assert stage.step == 2 and stage.run.config.train.cond_frames == 'low_res'
  assert stage.run.config.data.pool_factor == 1 and stage.run.config.sample.num_steps == 2
  low = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 16, 3), dtype=np.uint8)
  base = lambda params, prompts, rng: low
  videos = cascade.with_stages(base, [stage])(None, ['a red circle moving left'] * 2,
                                               jax.random.PRNGKey(0))
  assert videos.shape == (2, 16, 32, 32, 3) and videos.dtype == np.uint8
  with pytest.raises(UserError, match=r'super-resolves videos of shape \(16, 16, 16, 3\).*makes '
                                      r'\(16, 32, 32, 3\)'):
    cascade.restore_stages(config, (16, 32, 32, 3))

  # Evaluated alone, the stage is given each true video's pooled version (shown upsampled), and
  # its output is scored against the true video (PSNR, SSIM, trajectory).
  from vdm_jax import evaluate  # pylint: disable=g-import-not-at-top
  true_videos, captions = pipeline.make_eval_source(
      builder=train.load_dataset_builder(sr), split='test', num_examples=2)
  sampler = evaluate.EvalVideoSampler(stage.run, true_videos=true_videos, captions=captions)
  pooled = true_videos.astype(np.float32).reshape(2, 16, 16, 2, 16, 2, 3).mean(axis=(3, 5))
  shown = np.repeat(np.repeat(pooled, 2, axis=2), 2, axis=3)
  assert np.abs(sampler.given.astype(np.float32) - shown).max() <= 1.0  # uint8 rounding
  scores = sampler.scores(sampler.sample(jax.random.PRNGKey(0)))
  assert set(scores) >= {'super_resolve/psnr', 'super_resolve/ssim',
                         'super_resolve/trajectory_error_px'}
  near = sampler.scores(true_videos ^ 1)  # every pixel off by one level: PSNR 48.1 dB
  assert near['super_resolve/psnr'] == pytest.approx(20 * np.log10(255), abs=1e-3)
  assert near['super_resolve/trajectory_error_px'] < 0.5
  assert scores['super_resolve/psnr'] < 30  # an untrained network is not the true video


def test_a_stage_keeps_its_own_sections_and_the_base_runs_sampling():
  """stage_config: model, data, train, ... from the stage's checkpoint (a field it predates
  takes its old value, never the base run's), sampling settings from the base run."""
  base = smoke_config('/data', 4)
  base.data.pool_factor = 2
  base.model.attention_resolutions = (8, 4)
  base.sample.num_steps, base.sample.guidance_weight = 7, 2.5
  base.sample.cascade_workdirs = ('/runs/sr',)
  saved = ml_collections.ConfigDict(smoke_config('/data', 4).to_dict()).to_dict()
  saved['model'].update(frame_conditioning=True, attention_resolutions=[8])
  saved['train'].update(cond_frames='low_res')
  del saved['data']['pool_factor']  # a stage trained before the field existed: not pooled
  stage = cascade.stage_config(base, saved)
  assert stage.data.pool_factor == 1 and stage.model.attention_resolutions == (8,)
  assert stage.model.frame_conditioning and stage.train.cond_frames == 'low_res'
  assert (stage.sample.num_steps, stage.sample.guidance_weight) == (7, 2.5)
  assert stage.sample.cascade_workdirs == () and stage.eval.bpd_num_videos == 0


def test_a_saved_temporal_stage_fills_in_the_frames_of_a_low_frame_rate_base(smoke_data_dir,
                                                                              tmp_path):
  """A smoke temporal super-resolution stage (initial state): after an 8-frame base
  (data.frame_skip=2) it makes 16-frame videos whose even frames are the base's, exactly; after
  a 16-frame base it is refused; evaluated alone, it is given every other true frame and scored
  on the frames between them."""
  from vdm_jax import evaluate  # pylint: disable=g-import-not-at-top
  from vdm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  tsr = smoke_config(smoke_data_dir, 2)
  tsr.model.frame_conditioning = True
  tsr.train.cond_frames = 'low_frame_rate'
  tsr.eval.bpd_num_videos = 0
  save_initial_state(tsr, str(tmp_path / 'tsr'))
  config = smoke_config(smoke_data_dir, 4)
  config.data.frame_skip = 2
  config.sample.cascade_workdirs = (str(tmp_path / 'tsr'),)
  config.sample.num_steps = 2
  [stage] = cascade.restore_stages(config, (8, 32, 32, 3))
  assert stage.kind == 'tsr' and stage.run.config.data.frame_skip == 1
  assert cascade.directory_suffix([stage]) == '_tsr_tsr_step2'
  low = np.random.default_rng(0).integers(0, 256, (2, 8, 32, 32, 3), dtype=np.uint8)
  videos = cascade.with_stages(lambda params, prompts, rng: low, [stage])(
      None, ['a red circle moving left'] * 2, jax.random.PRNGKey(0))
  assert videos.shape == (2, 16, 32, 32, 3) and videos.dtype == np.uint8
  np.testing.assert_array_equal(videos[:, 0::2], low)
  assert np.abs(videos[:, 1::2].astype(int) - low).mean() > 10  # generated, not copies
  with pytest.raises(UserError, match=r'super-resolves videos of shape \(8, 32, 32, 3\).*makes '
                                      r'\(16, 32, 32, 3\)'):
    cascade.restore_stages(config, (16, 32, 32, 3))

  true_videos, captions = pipeline.make_eval_source(
      builder=train.load_dataset_builder(tsr), split='test', num_examples=2)
  sampler = evaluate.EvalVideoSampler(stage.run, true_videos=true_videos, captions=captions)
  np.testing.assert_array_equal(sampler.given[:, 0::2], true_videos[:, 0::2])
  assert (sampler.given[:, 1::2] == 128).all()  # frames not given: shown mid-grey
  sampled = sampler.sample(jax.random.PRNGKey(0))
  np.testing.assert_array_equal(sampled[:, 0::2], true_videos[:, 0::2])
  scores = sampler.scores(sampled)
  assert set(scores) >= {'interpolate/psnr', 'interpolate/ssim', 'interpolate/trajectory_error_px'}
  assert scores['interpolate/psnr'] < 30  # an untrained network does not find the frames between
  near = true_videos.copy()
  near[:, 1::2] ^= 1  # the frames between off by one level: PSNR 48.1 dB over them
  assert sampler.scores(near)['interpolate/psnr'] == pytest.approx(20 * np.log10(255), abs=1e-3)

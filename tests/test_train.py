"""End to end: the smoke experiment trains, resumes exactly, samples and evaluates."""

import html
import json
import os
import re

import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.smoke import LinearDenoiser, restored_state, smoke_config
from vdm_jax import checkpoints
from vdm_jax import config_validation
from vdm_jax import evaluate
from vdm_jax import sample
from vdm_jax import train
from vdm_jax.data import pipeline
from vdm_jax.errors import UserError

# One pytest-xdist worker runs the tests that share the session's resumed smoke run.
pytestmark = pytest.mark.xdist_group('resumed_run')


def test_resumed_run_equals_uninterrupted_run(smoke_data_dir, resumed_workdir,
                                              uninterrupted_workdir):
  config = smoke_config(smoke_data_dir, 4)
  a, b = restored_state(config, resumed_workdir), restored_state(config, uninterrupted_workdir)
  assert int(a.step) == int(b.step) == 4
  # Same seed, same batches (the data-iterator state is in the checkpoint), same RNG per step:
  # bit for bit the same parameters, EMA and optimizer state.
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Training moved the parameters away from their initial values.
  init = jax.jit(lambda: train.init_params(  # jit: an eager init runs the U-Net op by op.
      train.create_model(config), config, config_validation.video_shape(config),
      jax.random.fold_in(jax.random.PRNGKey(config.seed), 0)))()
  moved = [np.abs(np.asarray(p) - np.asarray(q)).max() for p, q in
           zip(jax.tree.leaves(a.params), jax.tree.leaves(init))]
  assert max(moved) > 0


def test_sample_writes_decodable_gif_and_mp4(smoke_data_dir, resumed_workdir):
  config = smoke_config(smoke_data_dir, 4)
  written = sample.sample(config, str(resumed_workdir), ['a white triangle moving right'])
  gifs = [p for p in written if p.endswith('.gif')]
  mp4s = [p for p in written if p.endswith('.mp4')]
  pngs = sorted(os.path.basename(p) for p in written if p.endswith('.png'))
  assert len(gifs) == len(mp4s) == config.sample.num_videos
  assert pngs == ['00_a_white_triangle_moving_right_grid.png', 'all_prompts.png']
  frames = config_validation.video_shape(config)[0]
  gif = imageio.mimread(gifs[0])
  assert len(gif) == frames
  with imageio.get_reader(mp4s[0]) as reader:
    assert sum(1 for _ in reader) == frames
  assert 'white_triangle_moving_right' in os.path.basename(gifs[0])


def test_eval_reports_adherence(smoke_data_dir, resumed_workdir):
  config = smoke_config(smoke_data_dir, 4)
  config.eval.bpd_decoder_logsnrs = (13.0,)
  results = evaluate.evaluate(config, str(resumed_workdir))
  assert results['step'] == 4
  # The tracker recognises the true videos of the same captions.
  assert results['ground_truth/all'] >= 0.99
  assert 0.0 <= results['caption_adherence/all'] <= 1.0
  # Bits per dimension of the test videos: the VLB's terms add up, and a 4-step smoke model is
  # far from lossless (8 bits/dim would be a uniform guess; an untrained one is worse).
  assert results['bpd/num_videos'] == config.eval.bpd_num_videos
  terms = results['bpd/prior'] + results['bpd/diffusion'] + results['bpd/reconstruction']
  assert abs(results['bpd/total'] - terms) < 1e-4 * results['bpd/total']
  assert results['bpd/total'] > 1.0
  # The chain stopped at log-SNR 13: the same prior (lambda(1) is unchanged), its own terms adding
  # up, and a decoder at 13 that costs something (at 20 it costs ~nothing).
  capped = {k: results[f'bpd/decoder_13/{k}'] for k in ('prior', 'diffusion', 'reconstruction', 'total')}
  assert capped['prior'] == results['bpd/prior']
  assert abs(capped['total'] - capped['prior'] - capped['diffusion'] - capped['reconstruction']) < 1e-4 * capped['total']
  assert capped['reconstruction'] > results['bpd/reconstruction']
  assert results['bpd/decoder_13/total_stderr'] > 0
  with open(os.path.join(resumed_workdir, 'eval', 'step_4.json')) as f:
    assert json.load(f)['num_captions'] == config.eval.num_captions


def test_eval_of_a_prediction_task_conditions_on_the_true_frames(smoke_data_dir, resumed_workdir,
                                                                 tmp_path):
  """config.eval.task='predict' (Kinetics-600's protocol, here 2 -> 2 frames): with replacement the
  sampled videos hold the true first frames, the rest generated; the picture of what the model was
  given is those frames and grey; the results carry the task's scores; the HTML page shows, per
  caption, given / generated / true GIFs that exist."""
  config = smoke_config(smoke_data_dir, 4)
  config.eval.task = 'predict'
  config.sample.num_known_frames = 2
  config.sample.conditioning_method = 'replacement'
  config.eval.metrics = ('adherence',)
  config.eval.bpd_num_videos = 0
  config_validation.validate(config)
  run = train.restore_for_inference(config, str(resumed_workdir))
  builder = train.load_dataset_builder(config)
  true_videos, captions = pipeline.make_eval_source(builder=builder, split='test', num_examples=4)
  sampler = evaluate.EvalVideoSampler(run, true_videos=true_videos, captions=captions)
  videos = sampler.sample(jax.random.PRNGKey(0))
  known = videos[:, :2].astype(int) - true_videos[:, :2]
  unknown = videos[:, 2:].astype(int) - true_videos[:, 2:]
  assert np.abs(known).max() <= 1  # uint8 rounding
  assert np.abs(unknown).mean() > 5  # a 4-step model does not reproduce the rest
  np.testing.assert_array_equal(sampler.given[:, :2], true_videos[:, :2])
  assert np.all(sampler.given[:, 2:] == 128)  # mid-grey: not given
  assert set(sampler.scores(videos)) >= {'predict/psnr', 'predict/ssim'}

  results = evaluate.evaluate_run(run, str(tmp_path), builder=builder)
  assert results['task'] == 'predict' and np.isfinite(results['predict/psnr'])
  page = tmp_path / 'eval' / 'step_4_report.html'
  text = page.read_text()
  sources = re.findall(r'<img src="([^"]+)"', text)
  assert len(sources) == 1 + 3 * config.eval.num_captions  # the report PNG, then 3 GIFs a caption
  assert all((page.parent / src).is_file() for src in sources)
  assert html.escape(captions[0]) in text and '<th>given</th><th>generated</th><th>true</th>' in text
  gif = [np.asarray(f)[..., :3].astype(int) for f in imageio.mimread(page.parent / sources[1])]
  # Caption 0, given: two true frames, then grey (Pillow writes repeated frames once, held longer).
  assert np.abs(gif[0] - 128).max() > 50 and np.abs(gif[-1] - 128).max() <= 1


def test_eval_tasks_a_frame_conditioned_model_cannot_take_are_refused(smoke_data_dir):
  """A model given its first frame takes prediction (the method holds the other given frames),
  not inpainting (no frame is given whole), nor a story without dropped-frame training."""
  config = smoke_config(smoke_data_dir, 4)
  config.eval.task = 'predict'
  config.model.frame_conditioning = True
  config.eval.bpd_num_videos = 0
  config_validation.validate(config)
  config.eval.task = 'inpaint'
  with pytest.raises(UserError, match=r"config.eval.task='inpaint' cannot condition"):
    config_validation.validate(config)
  config.eval.task, config.sample.task = 'generate', 'extend'
  with pytest.raises(UserError, match='cond_drop_prob'):
    config_validation.validate(config)
  config.model.frame_conditioning = False
  config.eval.task = 'extend'
  with pytest.raises(UserError, match='eval.task'):
    config_validation.validate(config)


def test_sample_without_checkpoint_is_a_user_error(tmp_path, smoke_data_dir):
  with pytest.raises(UserError, match='no checkpoint'):
    sample.sample(smoke_config(smoke_data_dir, 4), str(tmp_path / 'empty'))


def test_inference_restores_the_step_asked_for(smoke_data_dir, resumed_workdir):
  """launch.py --step: an earlier checkpoint's EMA parameters, not the latest's; a step without a
  checkpoint is one line naming the steps there are."""
  config = smoke_config(smoke_data_dir, 4)
  steps = checkpoints.Checkpointer(str(resumed_workdir), read_only=True).all_steps()
  assert steps[-1] == 4 and len(steps) >= 2
  earlier = train.restore_for_inference(config, str(resumed_workdir), steps[0])
  assert earlier.step == steps[0]
  expected = restored_state(config, resumed_workdir, steps[0]).ema_params
  latest = restored_state(config, resumed_workdir).ema_params
  for a, b, c in zip(jax.tree.leaves(earlier.ema_params), jax.tree.leaves(expected),
                     jax.tree.leaves(latest)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert any(not np.array_equal(np.asarray(a), np.asarray(c)) for a, c in
             zip(jax.tree.leaves(earlier.ema_params), jax.tree.leaves(latest)))
  with pytest.raises(UserError, match=r'no checkpoint of step 3 .*\(it has ' + ', '.join(map(str, steps))):
    train.restore_for_inference(config, str(resumed_workdir), 3)


def test_checkpoint_of_another_model_is_refused_and_kept(smoke_data_dir, resumed_workdir):
  config = smoke_config(smoke_data_dir, 6)
  config.model.channels = 24
  before = sorted(os.listdir(checkpoints.checkpoint_dir(str(resumed_workdir))))
  with pytest.raises(UserError, match='config.model.channels'):
    train.train_and_evaluate(config, str(resumed_workdir))
  assert sorted(os.listdir(checkpoints.checkpoint_dir(str(resumed_workdir)))) == before


@pytest.mark.parametrize('lr_schedule', ['cosine', 'constant'])
def test_learning_rate_warms_up_linearly_then_decays_or_holds(lr_schedule):
  """0 at step 0, the peak after warm-up; cosine then reaches peak x final_lr_fraction at
  train.num_steps (half-way between at the middle of the decay), constant holds the peak.
  Without warm-up both start at the peak."""
  config = smoke_config('/data', 1000)
  config.optim.lr_schedule, config.optim.warmup_steps = lr_schedule, 100
  config.optim.learning_rate, config.optim.final_lr_fraction = 1e-3, 0.1
  _, learning_rate = train.create_optimizer(config)
  lr = lambda step: float(learning_rate(step))
  np.testing.assert_allclose([lr(0), lr(50), lr(100)], [0.0, 5e-4, 1e-3], rtol=1e-6)
  if lr_schedule == 'cosine':
    np.testing.assert_allclose([lr(550), lr(1000)], [5.5e-4, 1e-4], rtol=1e-5)
  else:
    np.testing.assert_allclose([lr(550), lr(1000)], [1e-3, 1e-3], rtol=1e-6)
  config.optim.warmup_steps = 0  # No warm-up: the peak from the first step.
  _, learning_rate = train.create_optimizer(config)
  np.testing.assert_allclose(float(learning_rate(0)), 1e-3, rtol=1e-6)


def test_train_step_updates_the_learned_schedule(tmp_path):
  """With schedule 'learned' the train state carries the schedule, whose parameters move (the
  VLB-variance gradient) while it stays monotone with its endpoints; fixed schedules keep the
  plain TrainState (the checkpoint layout of older runs)."""
  from vdm_jax import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  config = smoke_config(tmp_path, 3)
  shape = (2, 8, 8, 3)
  model, mesh = LinearDenoiser(), mesh_lib.make_mesh(config)
  tx, _ = train.create_optimizer(config)
  fixed = jax.eval_shape(lambda: train.create_train_state(model, tx, config, shape, jax.random.PRNGKey(0)))
  assert type(fixed) is train.TrainState  # pylint: disable=unidiomatic-typecheck
  config.diffusion.schedule = 'learned'
  config.diffusion.loss_weighting = 'vlb'
  config.diffusion.antithetic_time_sampling = True
  config.diffusion.learned_num_features = 16
  config.diffusion.logsnr_min, config.diffusion.logsnr_max = -12.0, 10.0
  config.optim.warmup_steps = 0
  config.optim.learning_rate = 0.05
  tx, _ = train.create_optimizer(config)
  state = jax.jit(lambda: train.create_train_state(model, tx, config, shape, jax.random.PRNGKey(0)),
                  out_shardings=mesh_lib.replicated(mesh))()
  assert isinstance(state, train.LearnedScheduleTrainState)
  step = train.make_train_step(model, logsnr_fn=None, tx=tx, config=config, mesh=mesh)
  video = np.random.default_rng(0).uniform(-1, 1, (config.batch_size, *shape)).astype(np.float32)
  batch = mesh_lib.global_batch({'video': video, 'tokens': np.zeros((config.batch_size, 4), np.int32)},
                                mesh)
  start = jax.device_get(state)
  for _ in range(3):
    state, metrics = step(state, batch)
  assert np.isfinite(float(metrics['train/loss']))
  assert float(state.params['w']) != float(start.params['w'])
  moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in
              zip(jax.tree.leaves(state.schedule_params), jax.tree.leaves(start.schedule_params)))
  assert moved > 0.01 and float(metrics['train/schedule_grad_norm']) > 0
  logsnr = np.asarray(jax.jit(train.create_logsnr_fn(config, state.schedule_params))(
      jnp.linspace(0, 1, 1001)))
  np.testing.assert_allclose(logsnr[[0, -1]], [10.0, -12.0], atol=1e-4)
  assert np.all(np.diff(logsnr) < 0)


def test_fine_tuning_only_a_new_layout_head_keeps_the_restored_network(tmp_path, smoke_data_dir,
                                                                       resumed_workdir):
  """train.init_from + optim.trainable='layout_head': the new run starts from the source's EMA
  parameters, leaves every one of them (and their EMA) exactly as restored, and trains only the
  added head; it samples through the head; and --mode sample without the same optim.trainable
  is refused in one line, naming the field."""
  source = restored_state(smoke_config(smoke_data_dir, 4), resumed_workdir)
  config = smoke_config(smoke_data_dir, 3)
  config.model.layout_head = True
  config.optim.trainable = 'layout_head'
  config.train.init_from = str(resumed_workdir)
  config.train.sample_at_end = False
  assert train.train_and_evaluate(config, str(tmp_path))['step'] == 3
  tuned = restored_state(config, tmp_path)
  assert set(tuned.params) == set(source.ema_params) | {'layout_head'}
  for name in source.ema_params:
    for tree in (tuned.params, tuned.ema_params):
      for x, y in zip(jax.tree.leaves(tree[name]), jax.tree.leaves(source.ema_params[name])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # The head's read-out starts at zero (layers.ConditionalLayoutEmbedding) and has moved.
  readout = [np.abs(np.asarray(v)).max() for k, v in
             jax.tree_util.tree_leaves_with_path(tuned.params['layout_head']) if 'coefficients' in str(k)]
  assert readout and max(readout) > 0
  assert sample.sample(config, str(tmp_path), ['a red circle moving left'])
  config.optim.trainable = ''
  with pytest.raises(UserError, match="config.optim.trainable='layout_head'"):
    sample.sample(config, str(tmp_path), ['a red circle moving left'])


def test_init_from_adds_a_layout_embedding_that_starts_as_the_source_model(smoke_data_dir,
                                                                           resumed_workdir):
  """A model with the layout embedding (sharp gate), initialised from a run without it, computes
  exactly the source's function (the embedding's read-out starts at zero); the embedding is the
  only new module."""
  source_config = smoke_config(smoke_data_dir, 4)
  source = restored_state(source_config, resumed_workdir)
  config = smoke_config(smoke_data_dir, 4)
  config.model.layout_embedding = True
  config.model.layout_embedding_gate = 'sigma2'
  config.model.layout_embedding_gate_center = -3.0
  config.model.layout_embedding_gate_sharpness = 3.0
  config.train.init_from = str(resumed_workdir)
  model, shape = train.create_model(config), config_validation.video_shape(config)
  tx, _ = train.create_optimizer(config)
  fresh = jax.jit(lambda: train.create_train_state(model, tx, config, shape, jax.random.PRNGKey(1)))()
  state = train.initialise_from(config, fresh, tx)
  assert set(state.params) == set(source.ema_params) | {'layout_embedding'}
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(2, *shape)), jnp.float32)
  tokens = jnp.asarray(rng.integers(1, 100, size=(2, config.data.max_text_length)), jnp.int32)
  # Compiled: the U-Net applied op by op costs seconds per call.
  ours_fn, theirs_fn = jax.jit(model.apply), jax.jit(train.create_model(source_config).apply)
  for logsnr in (-6.0, 0.0):
    kwargs = dict(logsnr=jnp.full((2,), logsnr), text_tokens=tokens)
    ours = ours_fn({'params': state.params}, z, **kwargs)
    theirs = theirs_fn({'params': source.ema_params}, z, **kwargs)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_init_from_a_workdir_without_checkpoints_and_unknown_trainable_names_are_refused(
    tmp_path, smoke_data_dir):
  config = smoke_config(smoke_data_dir, 1)
  config.train.init_from = str(tmp_path / 'nothing')
  with pytest.raises(UserError, match='has no checkpoints'):
    train.initialise_from(config, None, None)
  config.optim.trainable = 'layout_hed'
  with pytest.raises(UserError, match='names layout_hed, which the model does not have'):
    train.check_trainable(config, {'conv_in': {}, 'layout_head': {}})

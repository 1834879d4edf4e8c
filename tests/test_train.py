"""End to end: the smoke experiment trains, resumes exactly, samples and evaluates."""

import json
import os

import imageio.v2 as imageio
import jax
import numpy as np
import pytest

from tests.smoke import restored_state, smoke_config
from vdm_jax import checkpoints
from vdm_jax import config_validation
from vdm_jax import evaluate
from vdm_jax import sample
from vdm_jax import train
from vdm_jax.errors import UserError


def test_resumed_run_equals_uninterrupted_run(tmp_path, smoke_data_dir, resumed_workdir):
  straight = tmp_path / 'straight'
  train.train_and_evaluate(smoke_config(smoke_data_dir, 4), str(straight))
  config = smoke_config(smoke_data_dir, 4)
  a, b = restored_state(config, resumed_workdir), restored_state(config, straight)
  assert int(a.step) == int(b.step) == 4
  # Same seed, same batches (the data-iterator state is in the checkpoint), same RNG per step.
  for x, y in zip(jax.tree.leaves((a.params, a.ema_params)), jax.tree.leaves((b.params, b.ema_params))):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
  # Training moved the parameters away from their initial values.
  init = train.init_params(train.create_model(config), config,
                           config_validation.video_shape(config),
                           jax.random.fold_in(jax.random.PRNGKey(config.seed), 0))
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
  results = evaluate.evaluate(config, str(resumed_workdir))
  assert results['step'] == 4
  # The tracker recognises the true videos of the same captions.
  assert results['ground_truth/all'] >= 0.99
  assert 0.0 <= results['caption_adherence/all'] <= 1.0
  with open(os.path.join(resumed_workdir, 'eval', 'step_4.json')) as f:
    assert json.load(f)['num_captions'] == config.eval.num_captions


def test_sample_without_checkpoint_is_a_user_error(tmp_path, smoke_data_dir):
  with pytest.raises(UserError, match='no checkpoint'):
    sample.sample(smoke_config(smoke_data_dir, 4), str(tmp_path / 'empty'))


def test_checkpoint_of_another_model_is_refused_and_kept(smoke_data_dir, resumed_workdir):
  config = smoke_config(smoke_data_dir, 6)
  config.model.channels = 24
  before = sorted(os.listdir(checkpoints.checkpoint_dir(str(resumed_workdir))))
  with pytest.raises(UserError, match='config.model.channels'):
    train.train_and_evaluate(config, str(resumed_workdir))
  assert sorted(os.listdir(checkpoints.checkpoint_dir(str(resumed_workdir)))) == before

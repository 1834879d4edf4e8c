"""The high-noise expert (vdm_jax/experts.py): which denoiser takes which step, end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.smoke import smoke_config
from vdm_jax import checkpoints
from vdm_jax import samplers
from vdm_jax import train
from vdm_jax.errors import UserError

# With test_train.py: one worker builds the resumed run (checkpoints 2 and 4) these tests share.
pytestmark = pytest.mark.xdist_group('resumed_run')


def constant_denoiser(value):
  def denoise_fn(z, logsnr):
    del logsnr
    return jnp.full_like(z, value), jnp.full_like(z, -value)
  return denoise_fn


def test_each_row_takes_the_denoiser_of_its_noise_level():
  """lambda < logsnr_below: the expert's (x, eps), else the main one's; per row when mixed; and a
  branch that is not taken does not reach the output even when it is NaN (lax.switch runs only
  the one it needs: no NaN reaches a reconstruction-guidance gradient either)."""
  denoise = samplers.expert_denoiser(constant_denoiser(1.0), constant_denoiser(2.0),
                                     logsnr_below=-3.0)
  z = jnp.zeros((3, 2, 2))
  x, eps = denoise(z, jnp.array([-5.0, -3.0, 4.0]))
  np.testing.assert_array_equal(x[:, 0, 0], [1.0, 2.0, 2.0])  # -3 itself: the main denoiser.
  np.testing.assert_array_equal(eps[:, 0, 0], [-1.0, -2.0, -2.0])
  for logsnr, high, low, expected in [(-6.0, 1.0, jnp.nan, 1.0), (0.0, jnp.nan, 2.0, 2.0)]:
    denoise = samplers.expert_denoiser(constant_denoiser(high), constant_denoiser(low),
                                       logsnr_below=-3.0)
    x, _ = jax.jit(denoise)(z, jnp.full((3,), logsnr))
    np.testing.assert_array_equal(np.asarray(x), expected)
    grad = jax.grad(lambda z: denoise(z, jnp.full((3,), logsnr))[0].sum())(z)
    assert np.all(np.isfinite(np.asarray(grad)))


def sampled(run):
  return run.generate(run.ema_params, list(run.config.sample.prompts), jax.random.PRNGKey(3))


def test_expert_takes_exactly_the_steps_below_its_level(smoke_data_dir, resumed_workdir):
  """The run at step 4 with step 2 of the same workdir as its expert: switched at +inf the videos
  are step 2's alone, at -inf step 4's alone (up to rounding); in between they are neither. The
  level is an input of the compiled call, not a constant of it."""
  config = smoke_config(smoke_data_dir, 4)
  main_alone = sampled(train.restore_for_inference(config, str(resumed_workdir)))
  expert_alone = sampled(train.restore_for_inference(config, str(resumed_workdir), 2))
  assert not np.array_equal(main_alone, expert_alone)
  config.sample.expert_workdir, config.sample.expert_step = str(resumed_workdir), 2
  run = train.restore_for_inference(config, str(resumed_workdir))
  assert run.step == 4 and run.expert.step == 2
  videos = {}
  for below in (np.inf, -np.inf, 0.0):
    run.expert.logsnr_below = below
    train.use_schedule(run, run.schedule_params)  # A new sampling call, with this level.
    videos[below] = sampled(run)
  assert same_up_to_rounding(videos[np.inf], expert_alone)
  assert same_up_to_rounding(videos[-np.inf], main_alone)
  assert not same_up_to_rounding(videos[0.0], main_alone)
  assert not same_up_to_rounding(videos[0.0], expert_alone)


def same_up_to_rounding(a, b) -> bool:
  """uint8 videos equal but for a few pixels one level apart. The same network compiled into
  another program (here: beside the expert, behind its switch) need not round the same way: with
  the CPU's Winograd convolutions one value of 98,304 came out one level apart. Switching at a
  level in between changes 82% of them, by up to 13 levels."""
  diff = np.abs(np.asarray(a, np.int32) - np.asarray(b, np.int32))
  return bool(diff.max() <= 1 and np.mean(diff > 0) < 0.01)


def test_an_expert_that_cannot_share_the_inputs_is_refused(smoke_data_dir, resumed_workdir,
                                                           tmp_path):
  config = smoke_config(smoke_data_dir, 4)
  config.sample.expert_workdir = str(tmp_path / 'nothing')
  with pytest.raises(UserError, match=r"config.sample.expert_workdir='.*nothing' has no checkpoints"):
    train.restore_for_inference(config, str(resumed_workdir))
  config.sample.expert_workdir, config.sample.expert_step = str(resumed_workdir), 3
  with pytest.raises(UserError, match=r'config.sample.expert_step=3 is not a checkpoint .*\(it has 2, 4\)'):
    train.restore_for_inference(config, str(resumed_workdir))
  config.sample.expert_step = 0
  config.model.text_tokenizer = 'words'
  with pytest.raises(UserError, match="trained with config.model.text_tokenizer='bytes' but this "
                                      "run has 'words'"):
    train.restore_for_inference(config, str(resumed_workdir))
  assert checkpoints.Checkpointer(str(resumed_workdir), read_only=True).all_steps() == [2, 4]


def test_outputs_with_an_expert_never_overwrite_those_without(tmp_path):
  """Sample and task directories name the expert, its step and level."""
  from experiments import moving_shapes  # pylint: disable=g-import-not-at-top
  from vdm_jax import experts, tasks  # pylint: disable=g-import-not-at-top
  config = moving_shapes.get_config()
  config.sample.task = 'extend'
  expert = experts.Expert(model=None, config=config, params=None, logsnr_below=-2.0, step=1000,
                          workdir=str(tmp_path / 'sharp3_1000'))
  other_level = experts.Expert(model=None, config=config, params=None, logsnr_below=-3.0,
                               step=1000, workdir=str(tmp_path / 'sharp3_1000'))
  names = {tasks.task_directory(config, 'w', 6000, e) for e in (None, expert, other_level)}
  assert len(names) == 3
  # An evaluation's settings decide whether it may reuse an earlier one's file name: they carry
  # the restored step and the level.
  from vdm_jax import evaluate  # pylint: disable=g-import-not-at-top
  settings = [evaluate.evaluation_settings(config, e) for e in (None, expert, other_level)]
  assert settings[1]['expert_step'] == 1000 and settings[1]['expert_logsnr_below'] == -2.0
  assert len({str(sorted(s.items())) for s in settings}) == 3
  assert tasks.task_directory(config, 'w', 6000, expert).endswith(
      '_expert_sharp3_1000_step1000_below-2_seed0')

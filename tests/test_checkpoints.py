"""Checkpoint compatibility: which config differences refuse a checkpoint, and which do not."""

import grain
import jax.numpy as jnp
import ml_collections
import pytest

from experiments import base
from vdm_jax import checkpoints
from vdm_jax.errors import UserError


def _save(workdir, config):
  checkpointer = checkpoints.Checkpointer(str(workdir))
  iterator = iter(grain.MapDataset.range(4).to_iter_dataset())
  checkpointer.save(1, state={'w': jnp.zeros(3)}, data_iterator=iterator, config=config)
  checkpointer.wait()
  return checkpointer


def _config_without(section, key):
  """The base config as a checkpoint written before `section.key` existed would have saved it."""
  as_dict = base.get_base_config().to_dict()
  del as_dict[section][key]
  return ml_collections.ConfigDict(as_dict)


@pytest.mark.parametrize('section,key', sorted(
    (section, key) for section, fields in checkpoints.ADDED_FIELDS.items() for key in fields))
def test_field_added_later_reads_as_its_old_value(tmp_path, section, key):
  checkpointer = _save(tmp_path, _config_without(section, key))
  current = base.get_base_config()
  checkpointer.check_compatible(1, current)  # The default is the value older runs were made with.
  saved_as_json = checkpoints._normalise(current.to_dict())  # pylint: disable=protected-access
  assert saved_as_json[section][key] == checkpoints.ADDED_FIELDS[section][key]
  checkpointer.close()


def test_execution_only_fields_may_change_but_parameters_may_not(tmp_path):
  checkpointer = _save(tmp_path, base.get_base_config())
  current = base.get_base_config()
  current.model.remat = 'block'
  current.model.attention_impl = 'einsum'
  current.model.dtype = 'bfloat16'
  checkpointer.check_compatible(1, current)
  current.model.channels += 8
  with pytest.raises(UserError, match=r'config\.model\.channels=64 .* --config\.model\.channels=64'):
    checkpointer.check_compatible(1, current)
  checkpointer.close()


def test_training_objective_fields_may_change_but_the_schedule_may_not(tmp_path):
  """How training draws and weighs noise levels does not define the model (sampling, eval and a
  resumed run may use others); the schedule it samples with does."""
  checkpointer = _save(tmp_path, base.get_base_config())
  current = base.get_base_config()
  current.diffusion.loss_weighting = 'x_mse'
  current.diffusion.train_time_distribution = 'logit_normal'
  current.diffusion.train_time_logit_mean = 1.0
  current.diffusion.antithetic_time_sampling = True
  checkpointer.check_compatible(1, current)
  current.diffusion.logsnr_shift = -1.0
  with pytest.raises(UserError, match=r'config\.diffusion\.logsnr_shift=0\.0 but this run has -1\.0'):
    checkpointer.check_compatible(1, current)
  checkpointer.close()


@pytest.mark.parametrize('keep_every,kept', [(0, [5, 6]), (2, [2, 4, 5, 6])])
def test_milestone_checkpoints_survive_the_rotation(tmp_path, keep_every, kept):
  """`keep` latest checkpoints, plus (train.keep_checkpoints_every) every multiple of keep_every."""
  checkpointer = checkpoints.Checkpointer(str(tmp_path), keep=2, keep_every=keep_every)
  config = base.get_base_config()
  iterator = iter(grain.MapDataset.range(4).to_iter_dataset())
  for step in range(1, 7):
    checkpointer.save(step, state={'w': jnp.full(3, step)}, data_iterator=iterator, config=config)
    checkpointer.wait()
  assert checkpointer.all_steps() == kept
  checkpointer.close()
  # A later run (or --mode sample) opening the workdir read-only sees the same steps.
  assert checkpoints.Checkpointer(str(tmp_path), read_only=True).all_steps() == kept


def test_noise_prior_defines_the_model(tmp_path):
  """A model trained to predict noise correlated across frames samples and scores only with it."""
  checkpointer = _save(tmp_path, base.get_base_config())
  current = base.get_base_config()
  current.diffusion.noise_prior = 'mixed'
  with pytest.raises(UserError, match=r"config\.diffusion\.noise_prior='independent' but this run has 'mixed'"):
    checkpointer.check_compatible(1, current)
  checkpointer.close()


def test_what_a_frame_conditioned_model_is_given_defines_it(tmp_path):
  """Sampling a model trained given its first 4 frames as one given 1 would feed it inputs it
  never saw, or as one trained to take none (a story's first block): refused, with the field to
  set; another model kind's setting is not read."""
  config = base.get_base_config()
  config.model.frame_conditioning = True
  config.train.num_cond_frames = 4
  checkpointer = _save(tmp_path, config)
  current = base.get_base_config()
  current.model.frame_conditioning = True
  current.train.num_cond_frames = 4
  current.train.cond_low_res_factor = 4  # not a 'first' model's setting
  checkpointer.check_compatible(1, current)
  current.train.cond_drop_prob = 0.25
  with pytest.raises(UserError, match=r'config\.train\.cond_drop_prob=0\.0 but this run has 0\.25'):
    checkpointer.check_compatible(1, current)
  current.train.cond_drop_prob = 0.0
  current.train.num_cond_frames = 1
  with pytest.raises(UserError, match=r'config\.train\.num_cond_frames=4 but this run has 1: .*'
                                      r'--config\.train\.num_cond_frames=4'):
    checkpointer.check_compatible(1, current)
  current.train.cond_frames = 'low_res'
  with pytest.raises(UserError,
                     match=r"config\.train\.cond_frames='first' but this run has 'low_res'"):
    checkpointer.check_compatible(1, current)
  checkpointer.close()

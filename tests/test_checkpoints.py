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

"""Every experiment config (and its variants) loads, validates and builds its model (bad input at
the command line: tests/test_bad_input.py)."""

import glob
import importlib
import os

import jax
import pytest

from vdm_jax import config_validation
from vdm_jax import train
from vdm_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(ROOT, 'experiments', '*.py'))
    if not os.path.basename(p).startswith(('_', 'base'))
    # The configs of moving_shapes and moving_digits (built here) plus classifier fields: built by
    # test_classifier_experiment_builds.
    and os.path.basename(p) not in ('feature_classifier.py', 'digit_classifier.py'))
VARIANTS = {'moving_shapes': ['', 'smoke', 'cascade_base', 'super_resolution', 'temporal_base',
                              'temporal_super_resolution', 'prediction'],
            'ucf101': ['', 'laptop'], 'bair': ['', 'laptop'],
            'kinetics600': ['', 'laptop'], 'text_to_video': ['', 'large', 'laptop']}


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_experiment_builds(name):
  module = importlib.import_module(f'experiments.{name}')
  for variant in VARIANTS.get(name, ['']):
    config = module.get_config(variant)
    config_validation.validate(config, num_devices=jax.device_count())
    shape = config_validation.video_shape(config)
    params = jax.eval_shape(lambda c=config, s=shape: train.init_params(
        train.create_model(c), c, s, jax.random.PRNGKey(0)))
    assert sum(x.size for x in jax.tree.leaves(params)) > 0


@pytest.mark.parametrize('name', ['feature_classifier', 'digit_classifier'])
def test_classifier_experiment_builds(name):
  """A caption classifier's experiment file and its `smoke` variant validate and build it."""
  from vdm_jax.metrics import video_classifier  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f'experiments.{name}')
  for variant in ('', 'smoke'):
    config = module.get_config(variant)
    config_validation.validate(config, num_devices=jax.device_count())
    config_validation.validate_classifier(config)
    model = video_classifier.create_model(config.classifier, config.data.name)
    videos = jax.ShapeDtypeStruct((1, *config_validation.video_shape(config)), 'uint8')
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), videos)
    assert sum(x.size for x in jax.tree.leaves(params)) > 0


def test_validation_names_the_field():
  module = importlib.import_module('experiments.moving_shapes')
  config = module.get_config('smoke')
  config.model.attention_resolutions = (5,)
  with pytest.raises(UserError, match='config.model.attention_resolutions'):
    config_validation.validate(config)
  config = module.get_config('smoke')
  config.diffusion.parameterization = 'x0'
  with pytest.raises(UserError, match="config.diffusion.parameterization='x0'.*'eps', 'x', 'v'"):
    config_validation.validate(config)
  config = module.get_config('smoke')
  config.eval.num_captions = 65
  with pytest.raises(UserError, match="config.eval.num_captions=65 exceeds the 64 videos of the 'test'"):
    config_validation.validate(config)
  config = module.get_config('smoke')
  with pytest.raises(UserError, match='not divisible by the 3 devices'):
    config_validation.validate(config, num_devices=3)
  config.batch_size = 6
  with pytest.raises(UserError, match=r'config.sample.batch_size=\d+ is not divisible by the 3 dev'):
    config_validation.validate(config, num_devices=3)
  config.sample.batch_size = 3
  config_validation.validate(config, num_devices=3)


def test_training_time_distribution_is_validated():
  module = importlib.import_module('experiments.moving_shapes')
  config = module.get_config('smoke')
  config.diffusion.train_time_distribution = 'logit_normal'
  config.diffusion.train_time_logit_std = 0.0
  with pytest.raises(UserError, match='config.diffusion.train_time_logit_std=0.0 must be > 0'):
    config_validation.validate(config)
  config.diffusion.train_time_logit_std = 1.0
  config_validation.validate(config)
  config.diffusion.loss_weighting = 'vlb'
  with pytest.raises(UserError, match="train_time_distribution='logit_normal' reweights the loss"):
    config_validation.validate(config)
  config = module.get_config('smoke')
  config.diffusion.train_time_distribution = 'beta'
  with pytest.raises(UserError, match="config.diffusion.train_time_distribution='beta'"):
    config_validation.validate(config)
  config = module.get_config('smoke')
  config.diffusion.train_time_uniform_fraction = 1.5
  with pytest.raises(UserError, match='train_time_uniform_fraction=1.5 must lie in'):
    config_validation.validate(config)

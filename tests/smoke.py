"""Helpers for tests that run the smoke experiment end to end."""

import hashlib
import os

import flax.linen
import jax

from experiments import moving_shapes as moving_shapes_experiment
from vdm_jax import checkpoints
from vdm_jax import train


def smoke_config(data_dir, num_steps):
  config = moving_shapes_experiment.get_config('smoke')
  config.data.data_dir = str(data_dir)
  config.train.num_steps = num_steps
  config.train.eval_at_end = False
  return config


def restored_state(config, workdir, step=None):
  """The train state of `workdir`'s checkpoint at `step` (default: the latest)."""
  run = train.setup(config)
  tx, _ = train.create_optimizer(config)
  checkpointer = checkpoints.Checkpointer(str(workdir), read_only=True)
  step = checkpointer.latest_step() if step is None else step
  state = checkpointer.restore(step, abstract_state=train.abstract_train_state(run, tx))
  checkpointer.close()
  return state


class LinearDenoiser(flax.linen.Module):
  """A one-parameter stand-in for the U-Net (out = w z), with its call signature: train steps
  that compile in a moment."""

  @flax.linen.compact
  def __call__(self, z, *, logsnr, text_tokens, drop_text=None, train=False, num_images=0):
    del logsnr, text_tokens, drop_text, train, num_images
    return self.param('w', flax.linen.initializers.constant(0.5), ()) * z


def tree_digest(path) -> dict[str, str]:
  """{relative path: sha256 of the file, or 'dir'} of everything under `path` ({} if absent):
  equal digests mean nothing was written, renamed or deleted there."""
  digest = {}
  for root, dirs, files in os.walk(path):
    for name in dirs:
      digest[os.path.relpath(os.path.join(root, name), path)] = 'dir'
    for name in files:
      with open(os.path.join(root, name), 'rb') as f:
        digest[os.path.relpath(os.path.join(root, name), path)] = hashlib.sha256(f.read()).hexdigest()
  return digest


def stand_in_train_step(model, config, video_shape):
  """(state, step, mesh) of a compiled train step of `model` (a stand-in such as LinearDenoiser)
  on videos [frames, height, width, channels] = video_shape, with the fixed schedule of `config`."""
  from vdm_jax import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  mesh = mesh_lib.make_mesh(config)
  tx, _ = train.create_optimizer(config)
  state = jax.jit(lambda: train.create_train_state(model, tx, config, video_shape,
                                                   jax.random.PRNGKey(0)),
                  out_shardings=mesh_lib.replicated(mesh))()
  step = train.make_train_step(model, logsnr_fn=train.create_logsnr_fn(config), tx=tx,
                               config=config, mesh=mesh)
  return state, step, mesh

"""Orbax checkpoints of a training run: train state, data-iterator state and config, side by side.

Layout: `WORKDIR/checkpoints/<step>/{state, data, config}`. Saves are asynchronous (training goes on
while arrays are written); orbax writes into a temporary directory and renames it when complete,
so an interrupted save never replaces the last complete checkpoint. The last `keep` are kept.
"""

import json
import os
from typing import Any

import grain
import ml_collections
import orbax.checkpoint as ocp

from vdm_jax.errors import UserError

# Config sections that decide the shapes and meaning of the parameters: a checkpoint whose
# sections differ from the current config's must not be restored into it, nor overwritten by it.
MODEL_DEFINING_SECTIONS = ('model', 'diffusion')
# Fields of those sections that only choose how the same computation runs (kernels, precision of
# the compute, memory-for-FLOPs trades): a run may resume or sample with other values.
EXECUTION_ONLY_FIELDS = {
    'model': ('attention_impl', 'remat', 'conv_impl', 'dtype'),
}
# Fields added to those sections after checkpoints were first written, with the value that every
# checkpoint written before them was made with: a saved config without the field means this value.
ADDED_FIELDS = {
    'diffusion': {'betas': [], 'zero_terminal_snr': False, 'learned_num_features': 1024,
                  'antithetic_time_sampling': False},
}


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)), 'checkpoints')


def _normalise(value: Any) -> Any:
  """Config values as JSON gives them back (tuples become lists)."""
  return json.loads(json.dumps(value))


class Checkpointer:
  """Saves and restores `{state, data, config}` checkpoints of one workdir."""

  def __init__(self, workdir: str, *, keep: int = 3, read_only: bool = False):
    self.directory = checkpoint_dir(workdir)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, *, state: Any, data_iterator: Any, config: ml_collections.ConfigDict,
           force: bool = False) -> None:
    """Starts an asynchronous save; returns once device arrays are copied (safe to donate them)."""
    self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iterator),
            config=ocp.args.JsonSave(_normalise(config.to_dict()))),
        force=force)

  def saved_config(self, step: int) -> dict:
    restored = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return restored['config']

  def check_compatible(self, step: int, config: ml_collections.ConfigDict) -> None:
    """Refuses (UserError) a checkpoint made with a different model or diffusion config."""
    saved = self.saved_config(step)
    current = _normalise(config.to_dict())
    for section in MODEL_DEFINING_SECTIONS:
      for key in sorted(set(saved.get(section, {})) | set(current[section])):
        if key in EXECUTION_ONLY_FIELDS.get(section, ()):
          continue
        old = saved.get(section, {}).get(key, ADDED_FIELDS.get(section, {}).get(key))
        new = current[section].get(key)
        if old != new:
          raise UserError(
              f'{self.directory}/{step} was trained with config.{section}.{key}={old!r} but this run '
              f'has {new!r}: use a new --workdir, or set --config.{section}.{key}={old!r}.')

  def restore(self, step: int, *, abstract_state: Any, data_iterator: Any | None = None) -> Any:
    """Restores the train state (onto `abstract_state`'s shardings) and, if given, the iterator in place."""
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored['state']

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

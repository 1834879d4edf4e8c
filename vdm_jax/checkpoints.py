"""Orbax checkpoints of a training run: train state, data-iterator state and config, side by side.

Layout: `WORKDIR/checkpoints/<step>/{state, data, config}`. Saves are asynchronous (training goes on
while arrays are written); orbax writes into a temporary directory and renames it when complete,
so an interrupted save (a kill, a full disk) never replaces the last complete checkpoint, and its
leftover temporary directory is removed when the workdir is next opened for training. The last
`keep` are kept.

Every checkpoint carries a fingerprint of its train state (a position-weighted sum of each
array's bits, computed on device), checked after restoring: orbax reads corrupted bytes back
without complaint when the file keeps its size.

Faults: a checkpoint that cannot be read (truncated or corrupted files) is reported in one line
and the previous one is used (`restore_latest`); it is moved, never deleted, to
`WORKDIR/checkpoints_unreadable/`. A save that fails (disk full, unwritable workdir) stops the run
with a `CheckpointWriteError` naming the directory and the reason; earlier checkpoints stay.
"""

import contextlib
import dataclasses
import json
import os
import re
import shutil
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from vdm_jax.errors import UserError

# Config sections that decide the shapes and meaning of the parameters: a checkpoint whose
# sections differ from the current config's must not be restored into it, nor overwritten by it.
MODEL_DEFINING_SECTIONS = ('model', 'diffusion')
# Fields of other sections that shape parameters too (the null text embedding is
# [max_text_length, text_width]).
MODEL_DEFINING_FIELDS = {'data': ('max_text_length',), 'optim': ('trainable',)}
# A frame-conditioned model's (model.frame_conditioning) inputs mean what train.cond_frames and
# its setting say (given frames 0..k-1, every s-th frame, the clip pooled f x f): sampling under
# other values would feed it inputs it never saw. ('random' takes any frames: its k is training's.)
# cond_drop_prob says whether it was trained given no frame at all, which the tasks rely on
# (tasks.network_given_frames: a story's first block).
FRAME_CONDITIONING_FIELDS = {'first': ('num_cond_frames', 'cond_drop_prob'),
                             'random': ('cond_drop_prob',),
                             'low_res': ('cond_low_res_factor',),
                             'low_frame_rate': ('cond_frame_stride',)}
# Fields of those sections that only choose how the same computation runs (kernels, precision of
# the compute, memory-for-FLOPs trades): a run may resume or sample with other values.
EXECUTION_ONLY_FIELDS = {
    'model': ('attention_impl', 'remat', 'conv_impl', 'dtype'),
}
# Fields that choose the training objective (how noise levels are drawn and weighted), not the
# model: a checkpoint samples the same under any of them, and a resumed run may change them.
TRAINING_OBJECTIVE_FIELDS = {
    'diffusion': ('loss_weighting', 'min_snr_gamma', 'antithetic_time_sampling',
                  'train_time_distribution', 'train_time_logit_mean', 'train_time_logit_std',
                  'train_time_uniform_fraction'),
}
# Fields added to those sections after checkpoints were first written, with the value that every
# checkpoint written before them was made with: a saved config without the field means this value.
ADDED_FIELDS = {
    'model': {'conditioning': 'text', 'num_classes': 0, 'text_encoder': 'builtin',
              'text_embedding_dim': 0, 'cond_embedding_dim': 0, 'cond_mlp_layers': 2,
              'frame_conditioning': False, 'coord_channels': False,
              'layout_embedding': False, 'text_tokenizer': 'bytes',
              'layout_embedding_gate': 'none', 'layout_embedding_gate_center': 0.0,
              'layout_embedding_gate_sharpness': 1.0,
              'layout_embedding_detach': False, 'layout_embedding_frequencies': 64,
              'layout_embedding_scale': 3.0, 'layout_head': False, 'layout_head_scale': 1.0},
    'diffusion': {'betas': [], 'zero_terminal_snr': False, 'learned_num_features': 1024,
                  'antithetic_time_sampling': False, 'learn_endpoints': False,
                  'train_time_distribution': 'uniform', 'train_time_logit_mean': 0.0,
                  'train_time_logit_std': 1.0, 'train_time_uniform_fraction': 0.0,
                  'noise_prior': 'independent', 'noise_prior_alpha': 1.0,
                  'logsnr_shift_base_resolution': 0},
    'optim': {'trainable': ''},
    'data': {'pool_factor': 1},
    'train': {'cond_low_res_factor': 2, 'cond_frame_stride': 2, 'cond_drop_prob': 0.0},
}
# Fields added to the train state after checkpoints were first written: a checkpoint without one
# restores it as zeros (every such field counts something that was zero in older runs).
ADDED_STATE_FIELDS = ('consecutive_skips', 'total_skips')


def frame_conditioning_keys(cond_frames: str) -> tuple[str, ...]:
  """The train fields that define what a frame-conditioned model with `cond_frames` is given."""
  return ('cond_frames', *FRAME_CONDITIONING_FIELDS.get(cond_frames, ()))


class CorruptCheckpointError(ValueError):
  """A checkpoint's files read back, but not as the state that was saved."""


class CheckpointWriteError(UserError):
  """A checkpoint could not be written (disk full, unwritable workdir); earlier ones are intact."""


def as_config_value(value):
  """A saved (JSON) config value as a ConfigDict field holds it: lists as tuples."""
  return tuple(as_config_value(v) for v in value) if isinstance(value, list) else value


def with_saved_sections(config: ml_collections.ConfigDict, saved: dict,
                        sections) -> ml_collections.ConfigDict:
  """A copy of `config` whose `sections` are those of a checkpoint's saved config (`saved`, as
  `Checkpointer.saved_config` returns it): each field as saved, or where the checkpoint
  predates it, its old value (ADDED_FIELDS); fields of neither keep `config`'s. The copy is
  unlocked for the caller's further changes."""
  copy = config.copy_and_resolve_references()
  with copy.unlocked():
    for section in sections:
      for key in copy[section]:
        if key in saved.get(section, {}):
          copy[section][key] = as_config_value(saved[section][key])
        elif key in ADDED_FIELDS.get(section, {}):
          copy[section][key] = as_config_value(ADDED_FIELDS[section][key])
  return copy


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)), 'checkpoints')


def unreadable_dir(workdir: str) -> str:
  """Where unreadable checkpoints are moved (kept for inspection, out of orbax's way)."""
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)), 'checkpoints_unreadable')


def _os_reason(error: BaseException) -> str:
  """The operating system's words for a failed write ('No space left on device'), where the error
  (or tensorstore's message inside it) carries them; else the error's first line."""
  for cause in (error, error.__cause__, error.__context__):
    if isinstance(cause, OSError) and cause.strerror:
      return cause.strerror
  code = re.search(r"os_error_code='?(\d+)", str(error))
  if code:
    return os.strerror(int(code.group(1)))
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


@jax.jit
def _leaf_fingerprints(tree: Any) -> Any:
  """uint32 per array: sum_i bits_i * (2654435761 i + 1) mod 2^32 over its elements' bit
  patterns (Knuth's multiplicative hash as position weights, so a changed or moved value shows)."""
  def one(x):
    x = x.astype(jnp.uint8) if x.dtype == jnp.bool_ else x
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).ravel()
    weights = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
    return jnp.sum(bits * weights, dtype=jnp.uint32)
  return jax.tree.map(one, tree)


def fingerprint(tree: Any) -> dict[str, int]:
  """{array path: uint32 fingerprint} of a pytree of arrays (replicated or host)."""
  values = jax.tree_util.tree_flatten_with_path(_leaf_fingerprints(tree))[0]
  return {jax.tree_util.keystr(path): int(np.asarray(value.addressable_data(0)))
          for path, value in values}


def _normalise(value: Any) -> Any:
  """Config values as JSON gives them back (tuples become lists)."""
  return json.loads(json.dumps(value))


class Checkpointer:
  """Saves and restores `{state, data, config}` checkpoints of one workdir."""

  def __init__(self, workdir: str, *, keep: int = 3, keep_every: int = 0,
               read_only: bool = False):
    """Keeps the latest `keep` checkpoints and, if `keep_every` > 0, every one whose step is a
    multiple of it (milestones, e.g. to evaluate a long run at 1,000, 2,000, ... steps later)."""
    self.workdir = os.path.abspath(os.path.expanduser(workdir))
    self.directory = checkpoint_dir(workdir)
    self.read_only = read_only
    policies = [ocp.checkpoint_managers.LatestN(keep)]
    if keep_every:
      policies.append(ocp.checkpoint_managers.EveryNSteps(keep_every))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        create=not read_only, read_only=read_only,
        enable_async_checkpointing=True,
        # Temporary directories of saves that never finished (a kill -9 mid-save): never a
        # checkpoint, and they would block a save of the same step.
        cleanup_tmp_directories=not read_only)
    with self._writing(self.directory):
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._saving_step: int | None = None  # The step of the save that may still be in flight.

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  @contextlib.contextmanager
  def _writing(self, what: str):
    """Turns any failure while writing `what` into one CheckpointWriteError naming the fix."""
    try:
      yield
    except UserError:
      raise
    except Exception as error:  # pylint: disable=broad-except
      manager = getattr(self, '_manager', None)
      kept = manager.all_steps() if manager is not None else []
      raise CheckpointWriteError(
          f'could not write {what} ({_os_reason(error)}): free disk space or make the workdir '
          f'writable, or pass another --workdir; checkpoints {sorted(kept) or "none"} in '
          f'{self.directory} are intact.') from error

  def _step_path(self, step: int | None) -> str:
    return f'checkpoint {self.directory}/{step}' if step is not None else self.directory

  def save(self, step: int, *, state: Any, data_iterator: Any, config: ml_collections.ConfigDict,
           force: bool = False) -> None:
    """Starts an asynchronous save; returns once device arrays are copied (safe to donate them).

    A failure of the previous save (written in the background) surfaces here or in wait().
    """
    self.wait()  # What orbax's save would do first anyway, but naming the step that failed.
    self._saving_step = step
    with self._writing(self._step_path(step)):
      self._manager.save(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              data=grain.checkpoint.CheckpointSave(data_iterator),
              config=ocp.args.JsonSave(_normalise(config.to_dict())),
              fingerprint=ocp.args.JsonSave(fingerprint(state))),
          force=force)

  def saved_config(self, step: int) -> dict:
    restored = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return restored['config']

  def check_compatible(self, step: int, config: ml_collections.ConfigDict) -> None:
    """Refuses (UserError) a checkpoint made with a different model config (the model and
    diffusion sections, the other fields that shape parameters, and what a frame-conditioned
    model's given frames are)."""
    saved = self.saved_config(step)
    current = _normalise(config.to_dict())
    fields = [(section, key) for section in MODEL_DEFINING_SECTIONS
              for key in sorted(set(saved.get(section, {})) | set(current[section]))]
    fields += [(section, key) for section, keys in MODEL_DEFINING_FIELDS.items() for key in keys]
    if current['model'].get('frame_conditioning'):
      fields += [('train', key)
                 for key in frame_conditioning_keys(current['train']['cond_frames'])]
    for section, key in fields:
      if key in EXECUTION_ONLY_FIELDS.get(section, ()) + TRAINING_OBJECTIVE_FIELDS.get(section, ()):
        continue
      old = saved.get(section, {}).get(key, ADDED_FIELDS.get(section, {}).get(key))
      new = current[section].get(key)
      if old != new:
        raise UserError(
            f'{self.directory}/{step} was trained with config.{section}.{key}={old!r} but this run '
            f'has {new!r}: use a new --workdir, or set --config.{section}.{key}={old!r}.')

  def _saved_state_fields(self, step: int) -> set[str]:
    metadata = ocp.StandardCheckpointHandler().metadata(
        epath.Path(self.directory) / str(step) / 'state')
    return set(metadata.keys())

  def restore(self, step: int, *, abstract_state: Any, data_iterator: Any | None = None) -> Any:
    """Restores the train state (onto `abstract_state`'s shardings) and, if given, the iterator in place.

    State fields of ADDED_STATE_FIELDS that the checkpoint predates are restored as zeros. A
    state that does not match the checkpoint's fingerprint raises CorruptCheckpointError
    (checkpoints written before fingerprints are not checked).
    """
    target, missing = abstract_state, {}
    if dataclasses.is_dataclass(abstract_state):
      fields = {f.name: getattr(abstract_state, f.name) for f in dataclasses.fields(abstract_state)}
      saved = self._saved_state_fields(step)
      missing = {k: v for k, v in fields.items() if k in ADDED_STATE_FIELDS and k not in saved}
      if missing:
        target = {k: v for k, v in fields.items() if k not in missing}
    items = {'state': ocp.args.StandardRestore(target)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    if os.path.isdir(os.path.join(self.directory, str(step), 'fingerprint')):
      items['fingerprint'] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    if 'fingerprint' in items:
      actual = fingerprint(restored['state'])
      changed = [path for path, value in restored['fingerprint'].items() if actual.get(path) != value]
      if changed or set(actual) != set(restored['fingerprint']):
        raise CorruptCheckpointError(f'its state differs from the one saved (fingerprint of '
                                     f'{len(changed)} arrays, e.g. {changed[:1]})')
    if not missing:
      return restored['state']
    zeros = {k: jax.device_put(np.zeros(a.shape, a.dtype), a.sharding) for k, a in missing.items()}
    return type(abstract_state)(**restored['state'], **zeros)

  def restore_latest(self, config: ml_collections.ConfigDict, *, abstract_state: Any,
                     data_iterator: Any | None = None) -> tuple[int | None, Any]:
    """(step, state) of the newest checkpoint that reads back, or (None, None) when there is none.

    A checkpoint of another model config is refused (UserError), never skipped. One that cannot
    be read (truncated or corrupted files) is reported in one line and the previous one is tried;
    unless read-only, it is moved to `checkpoints_unreadable/` so that training can write that
    step again. When no checkpoint reads back, that is an error: training never silently starts
    over beside unreadable checkpoints.
    """
    unreadable = []  # (step, reason), newest first.
    for step in reversed(self.all_steps()):
      try:
        self.check_compatible(step, config)
        state = self.restore(step, abstract_state=abstract_state, data_iterator=data_iterator)
      except UserError:
        raise
      except Exception as error:  # pylint: disable=broad-except
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        unreadable.append((step, reason))
        continue
      # Only once an older checkpoint has read back are the newer ones taken as damaged (and
      # moved aside): when none reads, the cause may be this code, not the files.
      for bad_step, reason in unreadable:
        moved = '' if self.read_only else f'; moved to {self._move_aside(bad_step)}'
        logging.warning('Checkpoint %s/%d cannot be read (%s)%s; using step %d.',
                        self.directory, bad_step, reason, moved, step)
      return step, state
    if unreadable:
      step, reason = unreadable[0]
      raise UserError(f'no checkpoint in {self.directory} can be read (the latest, {step}: '
                      f'{reason}): restore the files, or use a new --workdir.')
    return None, None

  def _move_aside(self, step: int) -> str:
    """Moves an unreadable checkpoint out of the manager's directory (kept, never deleted)."""
    target = os.path.join(unreadable_dir(self.workdir), str(step))
    suffix = 1
    while os.path.exists(target):
      target = os.path.join(unreadable_dir(self.workdir), f'{step}.{suffix}')
      suffix += 1
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(os.path.join(self.directory, str(step)), target)
    self._manager.reload()
    return target

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk (CheckpointWriteError if one failed)."""
    with self._writing(self._step_path(self._saving_step)):
      self._manager.wait_until_finished()
      self._manager.check_for_errors()

  def close(self) -> None:
    """Waits for pending saves, then releases the manager (CheckpointWriteError if a save failed)."""
    try:
      self.wait()
    finally:
      self._manager.close()

"""Reliability: runs survive kill -9 and SIGTERM bit for bit, unreadable checkpoints fall back to
the previous one, non-finite updates are skipped, and a failing save never costs a checkpoint."""

import os
import resource
import shutil
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from benchmarks import preemption
from tests.smoke import LinearDenoiser, smoke_config, stand_in_train_step, tree_digest
from vdm_jax import checkpoints
from vdm_jax import mesh as mesh_lib
from vdm_jax import train
from vdm_jax.data import pipeline
from vdm_jax.errors import UserError

# One pytest-xdist worker runs this file: its session fixture (a smoke run) is built once.
pytestmark = pytest.mark.xdist_group('uninterrupted_run')


def continued_config(data_dir):
  """The shared smoke run (`uninterrupted_workdir`, at step 4) trained on to step 6 (checkpoint
  every 2): the one program that the tests continuing it compile (once, through the cache)."""
  config = smoke_config(data_dir, 6)
  config.train.checkpoint_every = 2
  config.train.sample_at_end = False
  return config


def copy_of(uninterrupted_workdir, tmp_path):
  """A copy of the shared smoke run (checkpoints 2 and 4) to damage or continue: (workdir, its
  checkpoint directory). The uninterrupted run, not the resumed one that tests/test_train.py
  shares: this file's worker then builds one smoke run, not two."""
  workdir = tmp_path / 'run'
  shutil.copytree(uninterrupted_workdir, workdir)
  ckpt = checkpoints.checkpoint_dir(str(workdir))
  assert sorted(int(name) for name in os.listdir(ckpt) if name.isdigit()) == [2, 4]
  return workdir, ckpt


def restore_latest(config, workdir, read_only=True):
  run = train.setup(config)
  tx, _ = train.create_optimizer(config)
  checkpointer = checkpoints.Checkpointer(str(workdir), read_only=read_only)
  try:
    return checkpointer.restore_latest(config, abstract_state=train.abstract_train_state(run, tx))
  finally:
    checkpointer.close()


# ---------------------------------------------------------------- kill -9 and SIGTERM


def test_killed_and_preempted_run_ends_bit_for_bit_as_an_uninterrupted_one(
    tmp_path, smoke_data_dir, uninterrupted_workdir, compilation_cache_dir):
  """SIGTERM, then kill -9, each at a random moment after the run's next checkpoint, the run
  restarted with the same command each time (benchmarks/preemption.py does 5 interruptions over
  a longer run). SIGTERM saves the current step and exits 0."""
  config = smoke_config(smoke_data_dir, 4)  # uninterrupted_workdir's.
  interrupted = tmp_path / 'interrupted'
  # Checkpoints at every step, so that each start has one to write before its interruption.
  overrides = [f'--config.data.data_dir={smoke_data_dir}', '--config.train.num_steps=4',
               '--config.train.checkpoint_every=1', '--config.train.eval_at_end=False',
               '--config.train.sample_at_end=False',  # Only the final state is compared.
               # On the one device of the uninterrupted run (made in this process): the same
               # sums split over 2 devices add in another order, equal only to rounding.
               '--config.mesh.cpu_devices=1']
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=compilation_cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  kills, finished = preemption.run_interrupted(
      preemption.launch_command('experiments/moving_shapes.py:smoke', str(interrupted), overrides),
      str(interrupted), ['term', 'kill'], seed=0, max_delay=0.3, env=env, final_step=4)
  assert finished.returncode == 0, finished.stderr[-3000:]
  # SIGTERM first: a save makes the step loop wait for the previous one, so when checkpoint 1
  # appears the run is at step 2 of 4, with steps to go. It exits 0 within seconds, having
  # saved the step it was at.
  term = kills[0]
  assert term.signal == 'term' and term.exit_code == 0 and term.seconds_to_exit < 30, term
  assert term.saved_on_signal == term.checkpoint_after > term.checkpoint_at_signal, term
  # The kill may find the run finishing (then it exits 0 with the last checkpoint written).
  for kill in kills[1:]:
    assert kill.exit_code == -signal.SIGKILL or kill.checkpoint_after == 4, kill

  comparison = preemption.compare_states(config, str(uninterrupted_workdir), str(interrupted))
  assert comparison['step_a'] == comparison['step_b'] == 4
  assert comparison['identical'], comparison['different_leaves']


# ---------------------------------------------------------------- unreadable checkpoints


def _truncate_state_files(step_dir):
  for root, _, files in os.walk(os.path.join(step_dir, 'state')):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)


def _flip_bytes(step_dir):
  """Flips 20 bytes of the state's largest file, keeping its size: bit rot, a bad disk block."""
  files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(step_dir, 'state'))
           for name in names]
  path = max(files, key=os.path.getsize)
  with open(path, 'rb') as f:
    data = bytearray(f.read())
  for i in np.random.default_rng(0).integers(len(data) // 4, len(data), 20):
    data[i] ^= 0xFF
  with open(path, 'wb') as f:
    f.write(bytes(data))


@pytest.mark.parametrize('damage', [_truncate_state_files, _flip_bytes])
def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(
    tmp_path, smoke_data_dir, uninterrupted_workdir, damage):
  config = smoke_config(smoke_data_dir, 4)
  workdir, ckpt = copy_of(uninterrupted_workdir, tmp_path)
  assert sorted(int(n) for n in os.listdir(ckpt)) == [2, 4]
  expected_step, _ = restore_latest(config, uninterrupted_workdir)
  damage(os.path.join(ckpt, '4'))
  damaged = tree_digest(os.path.join(ckpt, '4'))

  # Read-only (--mode sample / eval): step 2 is used, nothing moves.
  step, _ = restore_latest(config, workdir, read_only=True)
  assert (expected_step, step) == (4, 2)
  assert sorted(os.listdir(ckpt)) == ['2', '4']

  # Training: step 2 is used and step 4 moved aside, byte for byte, so step 4 can be written again.
  step, state = restore_latest(config, workdir, read_only=False)
  assert step == 2 and int(state.step) == 2
  assert sorted(os.listdir(ckpt)) == ['2']
  assert tree_digest(os.path.join(checkpoints.unreadable_dir(str(workdir)), '4')) == damaged


def test_no_readable_checkpoint_is_an_error_and_moves_nothing(
    tmp_path, smoke_data_dir, uninterrupted_workdir):
  config = smoke_config(smoke_data_dir, 4)
  workdir, ckpt = copy_of(uninterrupted_workdir, tmp_path)
  for step in os.listdir(ckpt):
    _truncate_state_files(os.path.join(ckpt, step))
  before = tree_digest(workdir)
  with pytest.raises(UserError, match='no checkpoint in .* can be read'):
    restore_latest(config, workdir, read_only=False)
  assert tree_digest(workdir) == before


def test_half_written_save_is_never_a_checkpoint_and_is_cleaned_up(
    tmp_path, smoke_data_dir, uninterrupted_workdir):
  """What a kill -9 in the middle of a save leaves: orbax's temporary directory. Saved through
  the Checkpointer directly (what the train loop calls), without training, to keep the test fast."""
  config = continued_config(smoke_data_dir)
  workdir, ckpt = copy_of(uninterrupted_workdir, tmp_path)
  partial = os.path.join(ckpt, '6' + ocp.path.atomicity_types.TMP_DIR_SUFFIX)  # orbax's name
  shutil.copytree(os.path.join(ckpt, '4'), partial)
  _truncate_state_files(partial)
  kept = tree_digest(os.path.join(ckpt, '4'))
  # Read-only (--mode sample / eval): the half-written save is ignored and left alone.
  step, state = restore_latest(config, workdir, read_only=True)
  assert step == 4 and os.path.isdir(partial)
  # A training run's checkpointer removes it and writes step 6 where it was.
  checkpointer = checkpoints.Checkpointer(str(workdir))
  try:
    assert checkpointer.all_steps() == [2, 4]
    data_iterator = pipeline.make_train_iterator(
        builder=train.load_dataset_builder(config), split='train',
        global_batch_size=config.batch_size, seed=config.seed,
        max_text_length=config.data.max_text_length)
    checkpointer.save(6, state=state, data_iterator=data_iterator, config=config)
    checkpointer.wait()
  finally:
    checkpointer.close()
  assert sorted(os.listdir(ckpt), key=int) == ['2', '4', '6']
  assert tree_digest(os.path.join(ckpt, '4')) == kept
  assert restore_latest(config, workdir)[0] == 6


def test_old_checkpoint_without_skip_counters_restores_them_as_zero(
    tmp_path, smoke_data_dir, uninterrupted_workdir):
  """Checkpoints written before the skip counters existed: their state has no such fields."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  config = smoke_config(smoke_data_dir, 4)
  workdir, _ = copy_of(uninterrupted_workdir, tmp_path)
  _, state = restore_latest(config, workdir)
  state = jax.device_get(state)
  old = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
         if f.name not in checkpoints.ADDED_STATE_FIELDS}
  step_dir = os.path.join(checkpoints.checkpoint_dir(str(workdir)), '4')
  state_dir = os.path.join(step_dir, 'state')
  shutil.rmtree(state_dir)
  shutil.rmtree(os.path.join(step_dir, 'fingerprint'))  # Written since the counters, too.
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(state_dir, old)
  step, restored = restore_latest(config, workdir)
  assert step == 4
  assert int(restored.consecutive_skips) == int(restored.total_skips) == 0
  for x, y in zip(jax.tree.leaves((old['params'], old['opt_state'])),
                  jax.tree.leaves((restored.params, restored.opt_state))):
    np.testing.assert_array_equal(x, np.asarray(y))


# ---------------------------------------------------------------- non-finite updates


def test_non_finite_step_is_skipped_and_counted_inside_the_jitted_step(tmp_path):
  config = smoke_config(tmp_path, 10)
  config.optim.warmup_steps = 0
  shape = (2, 8, 8, 3)
  state, step, mesh = stand_in_train_step(LinearDenoiser(), config, shape)
  video = np.random.default_rng(0).uniform(-1, 1, (config.batch_size, *shape)).astype(np.float32)
  tokens = np.zeros((config.batch_size, 4), np.int32)
  good = lambda: mesh_lib.global_batch({'video': video, 'tokens': tokens}, mesh)
  poisoned = video.copy()
  poisoned[0, 0, 0, 0, 0] = np.nan
  bad = lambda: mesh_lib.global_batch({'video': poisoned, 'tokens': tokens}, mesh)

  state, _ = step(state, good())
  before = jax.device_get(state)
  for expected in (1, 2):
    state, metrics = step(state, bad())
    assert not np.isfinite(float(metrics['train/loss']))
    assert int(metrics['train/consecutive_skips']) == expected
  after = jax.device_get(state)
  assert int(after.step) == 3 and int(after.total_skips) == 2
  for x, y in zip(jax.tree.leaves((before.params, before.ema_params, before.opt_state)),
                  jax.tree.leaves((after.params, after.ema_params, after.opt_state))):
    np.testing.assert_array_equal(x, y)  # Nothing moved: not even the EMA or Adam's count.
  state, metrics = step(state, good())
  assert int(metrics['train/consecutive_skips']) == 0 and int(state.total_skips) == 2
  assert float(state.params['w']) != float(after.params['w'])


def test_too_many_skips_stop_the_run_and_keep_the_last_checkpoint(
    tmp_path, smoke_data_dir, uninterrupted_workdir, monkeypatch):
  """Every batch after step 4 is NaN: steps 5 and 6 are skipped, and with max_consecutive_skips=2
  the run stops at step 6 without saving it."""
  config = continued_config(smoke_data_dir)
  config.train.max_consecutive_skips = 2
  workdir, ckpt = copy_of(uninterrupted_workdir, tmp_path)
  before = tree_digest(ckpt)
  global_batch = mesh_lib.global_batch
  poisoned = lambda batch, mesh: global_batch(
      dict(batch, video=np.full_like(batch['video'], np.nan)), mesh)
  monkeypatch.setattr(mesh_lib, 'global_batch', poisoned)
  with pytest.raises(FloatingPointError,
                     match='2 consecutive steps up to step 6.*the last checkpoint, step 4, is intact'):
    train.train_and_evaluate(config, str(workdir))
  assert tree_digest(ckpt) == before


# ---------------------------------------------------------------- failing saves


def test_disk_full_while_saving_is_one_error_and_earlier_checkpoints_stay(
    tmp_path, smoke_data_dir, uninterrupted_workdir):
  """A file-size limit (to the writer, what a full disk looks like: writes fail, here with
  EFBIG) while the run continues from step 4 and saves step 6."""
  config = continued_config(smoke_data_dir)
  workdir, ckpt = copy_of(uninterrupted_workdir, tmp_path)
  before = tree_digest(ckpt)
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  # Room for config.json (~4 KB, rewritten at start) and the small files, not for the checkpoint's
  # arrays (50 KB and up): it is the save that fails.
  limit = 8 * os.path.getsize(os.path.join(workdir, 'config.json'))
  resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
  try:
    with pytest.raises(checkpoints.CheckpointWriteError,
                       match=r'could not write checkpoint .*/6 .*checkpoints \[2, 4\] .* are intact'):
      train.train_and_evaluate(config, str(workdir))
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)
  after = {k: v for k, v in tree_digest(ckpt).items() if k.split(os.sep)[0] in ('2', '4')}
  assert after == before
  step, _ = restore_latest(config, workdir)
  assert step == 4


def test_unwritable_workdir_is_a_user_error(tmp_path, smoke_data_dir):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  with pytest.raises(UserError, match='workdir'):
    train.train_and_evaluate(continued_config(smoke_data_dir), str(blocker / 'run'))
  assert blocker.read_text() == 'not a directory'

"""One process of the multi-host test (tests/test_multihost.py), and the training it compares.

  python -m tests.multihost_worker COORDINATOR NUM_PROCESSES PROCESS_ID WORKDIR

joins the job through vdm_jax.distributed, then for each scenario (pure data parallelism, FSDP
with mesh data=4, fsdp=2 on 8 devices, and that FSDP with gradient accumulation over 2
microbatches) trains a stand-in denoiser NUM_STEPS steps on the
same global batches as the single-process reference (`train_steps` in the test's own process),
saves a checkpoint to WORKDIR/<scenario> with every process, and (process 0) writes the losses
and the layout of the state to WORKDIR/<scenario>.json.
"""

import json
import os
import sys

import flax.linen
import grain
import jax
import numpy as np
import optax

from tests.smoke import smoke_config
from vdm_jax import checkpoints
from vdm_jax import distributed
from vdm_jax import mesh as mesh_lib
from vdm_jax import train

VIDEO_SHAPE = (2, 8, 8, 3)  # [frames, height, width, channels]
NUM_STEPS = 3
BATCH_SIZE = 16  # Two videos per device on 2 processes x 4 devices (one per microbatch).
# name: (config.mesh.fsdp, config.train.grad_accum_steps)
SCENARIOS = {'data_parallel': (1, 1), 'fsdp': (2, 1), 'fsdp_grad_accum': (2, 2)}


class PixelDenoiser(flax.linen.Module):
  """A stand-in for the U-Net with a parameter large enough to shard: out = w * z, one weight per
  pixel and channel (w: [height, width, channels], shared by frames and videos)."""

  @flax.linen.compact
  def __call__(self, z, *, logsnr, text_tokens, drop_text=None, train=False, num_images=0):
    del logsnr, text_tokens, drop_text, train, num_images
    return self.param('w', flax.linen.initializers.constant(0.5), VIDEO_SHAPE[1:]) * z


def scenario_config(fsdp: int, grad_accum_steps: int = 1):
  config = smoke_config('/nonexistent', NUM_STEPS)  # No data is read: batches are made here.
  config.batch_size = BATCH_SIZE
  config.train.grad_accum_steps = grad_accum_steps
  config.optim.warmup_steps = 0  # Every step moves the parameters.
  config.mesh.fsdp = fsdp
  config.mesh.fsdp_min_mib = 0.0  # Shard even this model's tiny arrays.
  return config


def global_batch_at(index: int, config) -> dict[str, np.ndarray]:
  """The whole global batch number `index`: video [B, frames, height, width, 3], tokens [B, L]."""
  rng = np.random.default_rng(index)
  return {'video': rng.uniform(-1, 1, (config.batch_size, *VIDEO_SHAPE)).astype(np.float32),
          'tokens': rng.integers(0, 256, (config.batch_size, 4)).astype(np.int32)}


def process_rows(mesh: jax.sharding.Mesh, batch_size: int) -> slice:
  """The rows of the global batch that this process's devices hold (a contiguous block)."""
  indices = mesh_lib.batch_sharded(mesh).addressable_devices_indices_map((batch_size,)).values()
  rows = sorted(i for index in indices for i in range(*index[0].indices(batch_size)))
  assert rows == list(range(rows[0], rows[-1] + 1)), rows
  return slice(rows[0], rows[-1] + 1)


def train_steps(config, mesh, *, batches=None):
  """(losses of NUM_STEPS steps, final state, abstract state). `batches` yields batch indices
  (a grain iterator in the workers, to be checkpointed); default range(NUM_STEPS)."""
  model, (tx, _) = PixelDenoiser(), train.create_optimizer(config)
  run = train.Run(config=config, mesh=mesh, model=model, logsnr_fn=None,
                  video_shape=VIDEO_SHAPE, generate=None)
  abstract = train.abstract_train_state(run, tx)
  sharding = jax.tree.map(lambda a: a.sharding, abstract)
  state = jax.jit(lambda: train.create_train_state(model, tx, config, VIDEO_SHAPE,
                                                   jax.random.PRNGKey(0)),
                  out_shardings=sharding)()
  step = train.make_train_step(model, logsnr_fn=train.create_logsnr_fn(config), tx=tx,
                               config=config, mesh=mesh, state_sharding=sharding)
  rows = process_rows(mesh, config.batch_size)
  batches = iter(range(NUM_STEPS)) if batches is None else batches
  losses = []
  for _ in range(NUM_STEPS):
    local = {k: v[rows] for k, v in global_batch_at(int(next(batches)), config).items()}
    state, metrics = step(state, mesh_lib.global_batch(local, mesh))
    losses.append(float(metrics['train/loss']))
  return losses, state, abstract


def layout(array: jax.Array) -> dict:
  return {'spec': str(array.sharding.spec),
          'shard_shapes': sorted({tuple(s.data.shape) for s in array.addressable_shards})}


def main(coordinator: str, num_processes: str, process_id: str, workdir: str) -> None:
  assert distributed.initialize(distributed.settings(
      coordinator_address=coordinator, num_processes=int(num_processes), process_id=int(process_id)))
  for name, (fsdp, grad_accum_steps) in SCENARIOS.items():
    config = scenario_config(fsdp, grad_accum_steps)
    mesh = mesh_lib.make_mesh(config)
    batches = iter(grain.MapDataset.range(NUM_STEPS).to_iter_dataset())
    losses, state, _ = train_steps(config, mesh, batches=batches)
    checkpointer = checkpoints.Checkpointer(os.path.join(workdir, name))
    checkpointer.save(NUM_STEPS, state=state, data_iterator=batches, config=config)
    checkpointer.close()
    if jax.process_index() == 0:
      mu, nu = (optax.tree_utils.tree_get(state.opt_state, k) for k in ('mu', 'nu'))  # Adam's
      report = dict(losses=losses, process_count=jax.process_count(),
                    device_count=jax.device_count(), mesh=dict(mesh.shape),
                    local_devices=jax.local_device_count(), process_rows=str(
                        process_rows(mesh, config.batch_size)),
                    params=layout(state.params['w']), ema=layout(state.ema_params['w']),
                    adam_mu=layout(mu['w']), adam_nu=layout(nu['w']))
      with open(os.path.join(workdir, f'{name}.json'), 'w') as f:
        json.dump(report, f)


if __name__ == '__main__':
  main(*sys.argv[1:])

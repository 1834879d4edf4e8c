"""Device mesh and shardings: data parallelism over every device of every host.

Parameters and optimizer state are replicated; batches are global arrays split along the batch
axis over the mesh axis 'data'. Each process supplies only its own slice of the global batch.
"""

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """A 1-D mesh ('data',) over all devices (`config.mesh.data` = -1 or the device count)."""
  num_devices = jax.device_count()
  size = num_devices if config.mesh.data == -1 else config.mesh.data
  return jax.make_mesh((size,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data'; other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Assembles this process's slice of a batch into global arrays sharded along the batch axis."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def to_host(x: jax.Array) -> np.ndarray:
  """Gathers a (possibly multi-host) global array to a full numpy array on every process."""
  if x.is_fully_addressable:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))

"""Device mesh and shardings: data parallelism and FSDP over every device of every host.

The mesh is 2-D, ('data', 'fsdp'), its shape chosen by `config.mesh`. Batches are global arrays
whose batch axis is split over both axes (every device holds different examples); each process
supplies only its own slice of the global batch. Parameters, their EMA and the optimizer state are
replicated when `config.mesh.fsdp` is 1, else each array is split along one axis over 'fsdp'
(fully sharded data parallelism, Rajbhandari et al. 2020, "ZeRO" stage 3; big_vision's `fsdp`
sharding rule): XLA gathers the parameters where a layer needs them and reduce-scatters the
gradients, so each device keeps 1/fsdp of the state.
"""

import math
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'
FSDP_AXIS = 'fsdp'
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # The batch axis is split over both mesh axes.


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int]:
  """(data, fsdp) sizes of `config.mesh` on `num_devices` devices (data = -1: the rest)."""
  fsdp = mesh_config.fsdp
  data = num_devices // fsdp if mesh_config.data == -1 else mesh_config.data
  return data, fsdp


def make_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """A ('data', 'fsdp') mesh over all devices of all processes, shaped by `config.mesh`."""
  shape = mesh_shape(config.mesh, jax.device_count())
  return jax.make_mesh(shape, (DATA_AXIS, FSDP_AXIS), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def fsdp_spec(shape: tuple[int, ...], *, fsdp_size: int, num_bytes: int,
              min_bytes: float) -> P:
  """The PartitionSpec of one state array: split over 'fsdp' along its largest axis that
  `fsdp_size` divides (the last such axis on a tie: output features of kernels); replicated
  (P()) when fsdp_size is 1, the array has fewer than `min_bytes` bytes, or no axis divides.

  shape: the array's shape; num_bytes: its size in bytes.
  """
  if fsdp_size == 1 or num_bytes < min_bytes:
    return P()
  divisible = [axis for axis, size in enumerate(shape) if size % fsdp_size == 0]
  if not divisible:
    return P()
  axis = max(divisible, key=lambda a: (shape[a], a))
  return P(*(FSDP_AXIS if a == axis else None for a in range(len(shape))))


def fsdp_sharding(tree: Any, mesh: jax.sharding.Mesh, *, min_mib: float) -> Any:
  """A pytree of NamedShardings for a pytree of arrays (or jax.ShapeDtypeStructs), by `fsdp_spec`
  over the mesh's 'fsdp' axis; arrays under `min_mib` MiB stay replicated."""
  fsdp_size = mesh.shape[FSDP_AXIS]

  def one(x):
    num_bytes = math.prod(x.shape) * np.dtype(x.dtype).itemsize
    return NamedSharding(mesh, fsdp_spec(tuple(x.shape), fsdp_size=fsdp_size, num_bytes=num_bytes,
                                         min_bytes=min_mib * 2**20))
  return jax.tree.map(one, tree)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over all devices ('data' and 'fsdp'); other axes whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


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

"""Device mesh and shardings: one code path for one CPU, one GPU or a TPU pod.

The mesh has a `data` axis and an `fsdp` axis over all devices.  Batches are split over both;
parameters are replicated over `data` and, when `fsdp > 1`, split over `fsdp` along their largest
divisible dimension (arrays below `fsdp_min_size` elements stay replicated).
"""

import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from afx.errors import ConfigError

BATCH_AXES = ("data", "fsdp")


def maybe_initialize_distributed() -> None:
  """Join a multi-host run when the environment says there is one.

  TPU pods (and `run.py launch`, which sets AFX_DISTRIBUTED=1) and SLURM/MPI clusters are detected
  by `jax.distributed.initialize()` itself; elsewhere set JAX_COORDINATOR_ADDRESS=host:port,
  JAX_NUM_PROCESSES and JAX_PROCESS_ID in every process.
  """
  if jax.distributed.is_initialized():
    return
  multi_worker_tpu = "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if os.environ.get("AFX_DISTRIBUTED") == "1" or "JAX_COORDINATOR_ADDRESS" in os.environ or multi_worker_tpu:
    count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
    jax.distributed.initialize(num_processes=int(count) if count else None,
                               process_id=int(index) if index else None)


def make_mesh(fsdp: int = 1, devices=None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  if fsdp < 1 or len(devices) % fsdp:
    raise ConfigError(f"fsdp={fsdp} must divide the {len(devices)} devices; set --config.fsdp to a divisor")
  grid = np.asarray(devices).reshape(len(devices) // fsdp, fsdp)
  return Mesh(grid, BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  devices, processes = mesh.size, jax.process_count()
  if batch_size % devices or batch_size % processes:
    raise ConfigError(f"batch_size {batch_size} is not divisible by the {devices} devices; "
                      f"set --config.batch_size to a multiple of {devices}")


def _array_spec(shape, fsdp: int, min_size: int) -> P:
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % fsdp == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(mesh: Mesh, abstract_state, *, fsdp_min_size: int = 2**14):
  """A `NamedSharding` for every leaf of `abstract_state` (e.g. the output of `jax.eval_shape`)."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree_util.tree_map(
      lambda leaf: NamedSharding(mesh, _array_spec(leaf.shape, fsdp, fsdp_min_size)), abstract_state)

"""Spreading the steps over devices: one `data` mesh axis, jit + NamedSharding (no pmap).

  mesh = make_mesh()                            # all devices of all processes
  state = replicate(state, mesh)                 # predictor + optimizer state
  images = global_batch(local_images, mesh)      # [B, H, W, C], sharded over 'data'

Image batches and the rows of every kernel batch are split over `data`; the
predictor, its optimizer state and the frozen target are replicated. On one
device all of this is plain jit. Several hosts: `maybe_initialize_distributed`
calls `jax.distributed.initialize()` and each process feeds its own share.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA = 'data'


def maybe_initialize_distributed() -> bool:
    """Calls `jax.distributed.initialize()` under a multi-process launcher.

    Detected: SLURM with more than one task, Cloud TPU pod slices with several
    workers, or an explicit `JAX_COORDINATOR_ADDRESS`. Returns True when it did.
    """
    slurm = int(os.environ.get('SLURM_NTASKS', '1')) > 1
    tpu_pod = len(os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1
    explicit = bool(os.environ.get('JAX_COORDINATOR_ADDRESS'))
    if not (slurm or tpu_pod or explicit):
        return False
    # CPU processes need a collectives backend to talk to each other (GPUs/TPUs have theirs).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    if explicit:
        jax.distributed.initialize(
            coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
            num_processes=int(os.environ['JAX_NUM_PROCESSES']),
            process_id=int(os.environ['JAX_PROCESS_ID']),
        )
    else:
        jax.distributed.initialize()
    return True


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh over the first `num_devices` devices (all by default), axis 'data'."""
    devices = jax.devices()
    n = len(devices) if num_devices in (None, 0) else int(num_devices)
    if n > len(devices):
        raise ValueError(f'asked for {n} devices, only {len(devices)} exist: {devices}')
    return jax.make_mesh(
        (n,), (DATA,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices[:n]
    )


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA))


def replicate(tree, mesh):
    """Places every leaf of `tree` on all devices of `mesh`."""
    return jax.device_put(tree, replicated(mesh))


def global_batch(local, mesh):
    """This process's rows of a batch -> one global array sharded over 'data'.

    Args:
      local: `[B / num_processes, ...]` numpy array (this process's share).
      mesh: the mesh.

    Returns:
      `[B, ...]` jax.Array sharded over the mesh's data axis.

    Raises:
      ValueError: when the global batch does not divide by the number of devices.
    """
    n = mesh.shape[DATA]
    global_rows = local.shape[0] * jax.process_count()
    if global_rows % n:
        raise ValueError(
            f'batch of {global_rows} does not divide over {n} devices of the '
            f'{DATA!r} axis; choose a multiple of {n}'
        )
    return jax.make_array_from_process_local_data(data_sharded(mesh), np.asarray(local))


def constrain_rows(x, mesh):
    """Inside jit: split the leading (row) axis of `x` over 'data' (no-op without a mesh)."""
    if mesh is None or mesh.shape[DATA] == 1:
        return x
    return jax.lax.with_sharding_constraint(x, data_sharded(mesh))

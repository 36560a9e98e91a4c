"""Spreading the steps over devices: one `data` mesh axis, jit + NamedSharding (no pmap).

  mesh = make_mesh()                            # all devices of all processes
  state = place_state(state, mesh)               # replicated, or FSDP over 'model'
  images = global_batch(local_images, mesh)      # [B, H, W, C], sharded over 'data'

Image batches and the rows of every kernel batch are split over `data`; the
frozen target is replicated, and the predictor and its optimizer state too, or,
with a 'model' axis > 1, their large arrays are split over it (FSDP-style, for
large predictors). On one
device all of this is plain jit. Several hosts: `maybe_initialize_distributed`
calls `jax.distributed.initialize()` and each process feeds its own share.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA = 'data'
MODEL = 'model'


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


def make_mesh(num_devices: int | None = None, model_axis: int = 1) -> jax.sharding.Mesh:
    """A `(data, model)` mesh over the first `num_devices` devices (all by default).

    Args:
      num_devices: devices to use (0 or None: all).
      model_axis: size of the 'model' axis over which `place_state` shards large
        predictor/optimizer arrays (FSDP-style); 1 replicates them.

    Raises:
      ValueError: too many devices asked for, or `model_axis` not dividing them.
    """
    devices = jax.devices()
    n = len(devices) if num_devices in (None, 0) else int(num_devices)
    if n > len(devices):
        raise ValueError(f'asked for {n} devices, only {len(devices)} exist: {devices}')
    if model_axis < 1 or n % model_axis:
        raise ValueError(f'model_axis {model_axis} must divide the {n} devices')
    return jax.make_mesh(
        (n // model_axis, model_axis),
        (DATA, MODEL),
        axis_types=(jax.sharding.AxisType.Auto,) * 2,
        devices=devices[:n],
    )


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA))


def replicate(tree, mesh):
    """Places every leaf of `tree` on all devices of `mesh`.

    Over several processes a leaf already committed to one local device (a PRNG key made
    on this host, a fresh predictor) cannot go straight to a mesh that spans other hosts'
    devices: it travels through host memory (every process holds the same value), typed
    PRNG keys as their key data.
    """
    target = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, target)
    return jax.tree.map(lambda x: _replicate_leaf(x, target), tree)


def _replicate_leaf(x, target: NamedSharding):
    if isinstance(x, jax.Array) and x.sharding == target:
        return x
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = jax.device_put(np.asarray(jax.random.key_data(x)), target)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    return jax.device_put(np.asarray(x) if isinstance(x, jax.Array) else x, target)


def state_sharding(leaf, mesh, min_size: int = 2**14) -> NamedSharding:
    """FSDP-style placement of one predictor/optimizer array.

    With a 'model' axis of size m > 1, an array of at least `min_size` elements is
    split over 'model' along its largest dimension divisible by m; everything else
    is replicated.
    """
    m = mesh.shape[MODEL]
    shape = getattr(leaf, 'shape', ())
    if m == 1 or not shape or math.prod(shape) < min_size:
        return replicated(mesh)
    dims = [d for d in sorted(range(len(shape)), key=lambda d: -shape[d]) if shape[d] % m == 0]
    if not dims:
        return replicated(mesh)
    spec = [None] * len(shape)
    spec[dims[0]] = MODEL
    return NamedSharding(mesh, P(*spec))


def place_state(tree, mesh):
    """Places a predictor state: large arrays split over 'model', the rest replicated."""
    return jax.device_put(tree, jax.tree.map(lambda x: state_sharding(x, mesh), tree))


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

"""BatchNorm re-estimation of a rebuilt network: new running statistics at zero bytes.

  reestimate = Reestimation(model, variables, images=batches, mode='relative', mesh=m)
  stats = reestimate(params_rebuilt)      # the rebuilt network's new 'batch_stats'
  images = noise_images((256, 32, 32, 3), seed=0)                  # data-free inputs
  images = synthetic_images(model, variables, (256, 32, 32, 3), seed=0)   # BN-matched inputs

The rebuilt convolutions shift the activation statistics that the copied running
statistics assume. `Reestimation` runs train-mode forward passes (`nets.batchnorm`) over a
fixed set of unlabeled calibration batches, pools each BatchNorm's input moments exactly,
and turns them into new statistics: 'plain' takes the rebuilt network's moments, 'relative'
moves the stored statistics by the shift between the rebuilt and the original network on
the same images (the original's moments are measured once). Relative estimates work on
Gaussian noise as well as on real images; plain ones need real or synthetic images.

Batches are `[B, ...]` float32 arrays already placed (sharded over the mesh's 'data' axis
when there is one), or host arrays holding this process's rows; every batch has the same
shape, so the pooling is exact and compiles once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nrnp import signals
from nrnp.nets import batchnorm
from nrnp.training import sharding


@functools.partial(jax.jit, static_argnums=0, static_argnames='normalise')
def _accumulate(model, pooled, variables, images, normalise: bool = True):
    moments = batchnorm.batch_moments(model, variables, images, normalise=normalise)
    return batchnorm.combine(pooled, moments)


def pooled_moments(
    model, variables: dict, batches: Sequence, mesh=None, normalise: bool = True
) -> batchnorm.Pooled:
    """Every BatchNorm's input moments, pooled exactly over `batches` (train-mode passes).

    Args:
      model: the network, applied as `model.apply(variables, x, train=False)`.
      variables: its {'params', 'batch_stats', ...}.
      batches: equal-shape `[B, ...]` float32 batches (this process's rows with a mesh).
      mesh: optional mesh: each batch is assembled from all processes' rows and split
        over its 'data' axis.
      normalise: train-mode passes (each BatchNorm normalises with the batch's statistics);
        False: eval-mode passes (running statistics), the moments still the batch's.
    """
    pooled = batchnorm.empty(variables['batch_stats'])
    for images in batches:
        if mesh is not None and not isinstance(images, jax.Array):
            images = sharding.global_batch(np.asarray(images, np.float32), mesh)
        pooled = jax.block_until_ready(
            _accumulate(model, pooled, variables, images, normalise=normalise)
        )
        signals.check()  # a stop request is seen between batches
    return pooled


@dataclasses.dataclass
class Reestimation:
    """`params -> batch_stats`: the running statistics of the network with `params`,
    re-estimated on one fixed set of calibration batches (see the module docstring).

    Built lazily: `images` may be a zero-argument callable, called on first use (a resumed
    run past every re-estimation never makes its images), and the original network's
    moments ('relative') are measured once, on first use, and kept.

    Attributes:
      model: the target network.
      variables: the original network's `{'params', 'batch_stats', ...}`.
      images: equal-shape calibration batches, or a callable returning them.
      mode: 'relative' or 'plain' (`nets.batchnorm.estimated_stats`).
      mesh: optional mesh (see `pooled_moments`).
      info: what it uses (`{'images', 'mode', 'source'}`), for records and logs.
    """

    model: object
    variables: dict
    images: Sequence | Callable[[], Sequence]
    mode: str = 'relative'
    mesh: object = None
    info: dict = dataclasses.field(default_factory=dict)
    original: batchnorm.Pooled | None = dataclasses.field(default=None, repr=False)

    def __call__(self, params: dict) -> dict:
        """The new `batch_stats` for the network with `params` (the rebuilt params)."""
        if callable(self.images):
            self.images = self.images()
        stored = self.variables['batch_stats']
        rebuilt = pooled_moments(
            self.model, {'params': params, 'batch_stats': stored}, self.images, self.mesh
        )
        original = None
        if self.mode == 'relative':
            if self.original is None:
                variables = {'params': self.variables['params'], 'batch_stats': stored}
                self.original = pooled_moments(self.model, variables, self.images, self.mesh)
            original = self.original.as_stats()
        return batchnorm.estimated_stats(stored, rebuilt.as_stats(), original, self.mode)


def noise_images(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """`shape` float32 standard-normal images (in the normalised input space), seeded."""
    return np.random.default_rng([seed, 0x5EED]).standard_normal(shape, np.float32)


def _match_loss(model, variables, images):
    """DeepInversion's BatchNorm prior: per layer, |batch mean - stored mean| +
    |batch var - stored var| (L2 norms over channels), summed over layers."""
    moments = batchnorm.batch_moments(model, variables, images, normalise=False)
    terms = jax.tree.map(lambda m, s: jnp.linalg.norm(m - s), moments, variables['batch_stats'])
    return sum(jax.tree.leaves(terms))


def synthetic_images(
    model,
    variables: dict,
    shape: tuple[int, ...],
    seed: int,
    steps: int = 300,
    learning_rate: float = 0.1,
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Images whose BatchNorm input statistics match the stored ones (ZeroQ/DeepInversion).

    Seeded noise is optimised with Adam for `steps` steps so that every BatchNorm's batch
    mean and variance (the network in eval mode) approach its running statistics.

    Returns:
      `shape` float32 images in the normalised input space (deterministic in the seed).
    """
    tx = optax.adam(learning_rate)
    x = jnp.asarray(noise_images(shape, seed))
    grad = jax.value_and_grad(functools.partial(_match_loss, model, variables))

    @jax.jit
    def step(x, opt_state):
        loss, g = grad(x)
        updates, opt_state = tx.update(g, opt_state, x)
        return optax.apply_updates(x, updates), opt_state, loss

    opt_state = tx.init(x)
    for k in range(steps):
        x, opt_state, loss = step(x, opt_state)
        loss.block_until_ready()  # each step waited for: a stop request is seen between them
        signals.check()
        if log is not None and (k + 1) % 100 == 0:
            log(f'synthetic calibration images: step {k + 1}/{steps}, BN mismatch {loss:.4f}')
    return np.asarray(x)

"""BatchNorm re-estimation of a rebuilt network: new running statistics at zero bytes.

  cal = Calibration(model, batches, stored=variables['batch_stats'], mode='relative', mesh=m)
  stats = cal.stats(params_rebuilt)       # the rebuilt network's new 'batch_stats'
  images = noise_images((256, 32, 32, 3), seed=0)                  # data-free inputs
  images = synthetic_images(model, variables, (256, 32, 32, 3), seed=0)   # BN-matched inputs

The rebuilt convolutions shift the activation statistics that the copied running
statistics assume. `Calibration` runs train-mode forward passes (`nets.batchnorm`) over a
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
import time
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
class Calibration:
    """Re-estimates running statistics for rebuilt params on a fixed set of batches.

    Attributes:
      model: the target network.
      batches: the calibration batches (see the module docstring).
      stored: the original network's `batch_stats`.
      mode: 'relative' or 'plain' (`nets.batchnorm.estimated_stats`).
      mesh: optional mesh.
      original: the original network's pooled moments (measured on first use, 'relative').
    """

    model: object
    batches: Sequence
    stored: dict
    mode: str = 'relative'
    mesh: object = None
    original: batchnorm.Pooled | None = None

    def stats(self, params: dict, original_params: dict | None = None) -> dict:
        """The new `batch_stats` for a network with `params`.

        Args:
          params: the rebuilt network's params.
          original_params: the original network's params ('relative', first call only).
        """
        rebuilt = pooled_moments(
            self.model, {'params': params, 'batch_stats': self.stored}, self.batches, self.mesh
        )
        original = None
        if self.mode == 'relative':
            if self.original is None:
                if original_params is None:
                    raise ValueError("mode 'relative' needs original_params on the first call")
                variables = {'params': original_params, 'batch_stats': self.stored}
                self.original = pooled_moments(self.model, variables, self.batches, self.mesh)
            original = self.original.as_stats()
        return batchnorm.estimated_stats(self.stored, rebuilt.as_stats(), original, self.mode)


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


def _pct(value) -> str:
    return '-' if value is None else f'{value:.2f} %'


def phase(ctx, phase, state, pparams, records: list) -> tuple[dict, dict]:
    """A 'recalibrate' phase of the loop: (new batch_stats, its record).

    Args:
      ctx: the loop's `Context` (`recalibrate`, `evaluate`, `recalibration`, log, metrics).
      phase: the `schedule.Phase`.
      state: the run's `PredictorState` (its step numbers the metrics).
      pparams: the predictor whose rebuilt network is re-estimated (`Context.seen`).
      records: the run's records so far (the last one measured the statistics held so far).

    The record has the top-1 before (the last record's) and after, and the seconds the
    re-estimation took (evaluation excluded).
    """
    start = time.time()
    stats = jax.block_until_ready(ctx.recalibrate(pparams))
    seconds = time.time() - start
    top1 = ctx.evaluate(pparams, stats)
    before = records[-1]['top1'] if records else None
    info = ctx.recalibration
    ctx.metrics.write(int(state.step), {'eval/top1_recalibrated': top1})
    ctx.log(
        f'{phase.label}: BatchNorm statistics re-estimated in {seconds:.1f}s '
        f'({info.get("images")} {info.get("source")} images, {info.get("mode")}): '
        f'eval/top1_reconstructed {_pct(before)} -> {_pct(top1)}'
    )
    record = {
        'kind': 'recalibrate',
        'round': phase.round,
        'cycle': phase.cycle,
        'steps': 0,
        'seconds': seconds,
        'top1_before': before,
        'top1': top1,
        'rmse': records[-1]['rmse'] if records else None,  # the weights did not change
        **info,
    }
    return stats, record

"""The jitted step of each phase: reconstruction, or distillation on host or device images.

  step = make_step(ctx, config, phase, first, problem, tx, timer)   # step(state, k) -> (state, m)
  step = keeping_sharding(step, state)                              # stable placement on a mesh

Each phase's step is jitted once (its static settings bound with functools.partial, the
state donated) and wrapped so that its call time goes to `timer['device']`: the loop
reports the rest of its time per step as host time (`host_ms_per_step`).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from nrnp.data import threads
from nrnp.training import distillation, reconstruction, sharding


def timed(fn, timer: dict):
    """`fn` adding its call time to `timer['device']` (dispatch, and any wait on the device)."""

    def wrapped(*args):
        start = time.perf_counter()
        out = fn(*args)
        timer['device'] += time.perf_counter() - start
        return out

    return wrapped


def make_step(ctx, config, phase, first: int, problem, tx, timer: dict):
    """`step(state, k)` for step k (1-based) of `phase`, resuming after step `first`.

    Args:
      ctx: the loop's `Context` (predictor, frozen arrays, batches or device batches, keys).
      config: the run's config (the phase's section).
      phase: the `schedule.Phase`.
      first: steps of the phase already done (host batches start there).
      problem: the `ReconstructionProblem` with this round's target rows.
      tx: the run's optimizer.
      timer: `{'device': seconds}`, incremented by every call of the jitted step.
    """
    if phase.kind == 'reconstruct':
        step_fn = jax.jit(
            functools.partial(
                reconstruction.reconstruction_step,
                model=ctx.pmodel,
                tx=tx,
                batch_size=min(config.reconstruct.batch_size, problem.target.shape[0]),
                magnitude_fraction=config.reconstruct.magnitude_fraction,
                mesh=ctx.mesh,
                quantize_mode=ctx.reconstruct_quantize,
            ),
            donate_argnums=0,
        )
        step_fn = timed(step_fn, timer)
        step = lambda s, k: step_fn(s, problem, ctx.keys['reconstruct'])
    elif ctx.device_batches is not None:  # images drawn and augmented inside the step
        d, db = config.distill, ctx.device_batches
        step_fn = jax.jit(
            functools.partial(
                distillation.distillation_step_on_device,
                setup=ctx.setup,
                tx=tx,
                loss_weights=(d.kd_weight, d.fm_weight, d.reconstruction_weight),
                **db.settings,
            ),
            donate_argnums=0,
        )
        step_fn = timed(step_fn, timer)
        data_key = db.key(phase.cycle)

        def step(s, k):
            return step_fn(
                s, problem, ctx.frozen, db.split, data_key, np.int32(k - 1), ctx.keys['distill']
            )

    else:
        d = config.distill
        weights = (d.kd_weight, d.fm_weight, d.reconstruction_weight)
        step_fn = jax.jit(
            functools.partial(
                distillation.distillation_step, setup=ctx.setup, tx=tx, loss_weights=weights
            ),
            donate_argnums=0,
        )
        step_fn = timed(step_fn, timer)
        batches = ctx.batches(first, phase.cycle)
        batches = threads.prefetch(batches, size=2)

        def step(s, k):
            images = next(batches)
            if isinstance(images, tuple):
                images = images[0]  # labels are never used
            images = (
                jnp.asarray(images) if ctx.mesh is None else sharding.global_batch(images, ctx.mesh)
            )
            return step_fn(s, problem, ctx.frozen, images, ctx.keys['distill'])

    return step


def keeping_sharding(step, like):
    """Wraps `step(state, k)` so the new state keeps `like`'s placement (no recompiles)."""
    shardings = jax.tree.map(lambda x: x.sharding, like)

    def wrapped(state, k):
        new_state, metrics = step(state, k)
        return jax.device_put(new_state, shardings), metrics

    return wrapped

"""The jitted step of each phase: reconstruction, or distillation on host or device images.

  step = make_step(ctx, config, phase, first, problem, tx, timer, state)  # -> (state, metrics)

Each phase's step is jitted once (its static settings bound with functools.partial, the
state donated, its new state placed like the old one) and wrapped so that its call time
goes to `timer['device']`: the loop reports the rest of its time per step as host time
(`host_ms_per_step`).
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


def make_step(ctx, config, phase, first: int, problem, tx, timer: dict, state):
    """`step(state, k)` for step k (1-based) of `phase`, resuming after step `first`.

    The jitted step's new state keeps `state`'s placement (`out_shardings`), and the PRNG
    keys are placed on the mesh once, so a step costs no per-step copies on the host.

    Args:
      ctx: the loop's `Context` (predictor, frozen arrays, batches or device batches, keys).
      config: the run's config (the phase's section).
      phase: the `schedule.Phase`.
      first: steps of the phase already done (host batches start there).
      problem: the `ReconstructionProblem` with this round's target rows.
      tx: the run's optimizer.
      timer: `{'device': seconds}`, incremented by every call of the jitted step.
      state: the current predictor state (its shardings are kept).
    """
    jit = functools.partial(jax.jit, donate_argnums=0)
    keys = ctx.keys
    if ctx.mesh is not None:
        shardings = jax.tree.map(lambda x: x.sharding, state)
        jit = functools.partial(jax.jit, donate_argnums=0, out_shardings=(shardings, None))
        keys = sharding.replicate(ctx.keys, ctx.mesh)
    if phase.kind == 'reconstruct':
        step_fn = jit(
            functools.partial(
                reconstruction.reconstruction_step,
                model=ctx.pmodel,
                tx=tx,
                batch_size=min(config.reconstruct.batch_size, problem.target.shape[0]),
                magnitude_fraction=config.reconstruct.magnitude_fraction,
                mesh=ctx.mesh,
                quantize_mode=ctx.reconstruct_quantize,
            )
        )
        step_fn = timed(step_fn, timer)
        step = lambda s, k: step_fn(s, problem, keys['reconstruct'])
    elif ctx.device_batches is not None:  # images drawn and augmented inside the step
        d, db = config.distill, ctx.device_batches
        step_fn = jit(
            functools.partial(
                distillation.distillation_step_on_device,
                setup=ctx.setup,
                tx=tx,
                loss_weights=(d.kd_weight, d.fm_weight, d.reconstruction_weight),
                **db.settings,
            )
        )
        step_fn = timed(step_fn, timer)
        data_key = db.key(phase.cycle)
        if ctx.mesh is not None:
            data_key = sharding.replicate(data_key, ctx.mesh)

        def step(s, k):
            return step_fn(
                s, problem, ctx.frozen, db.split, data_key, np.int32(k - 1), keys['distill']
            )

    else:
        d = config.distill
        weights = (d.kd_weight, d.fm_weight, d.reconstruction_weight)
        step_fn = jit(
            functools.partial(
                distillation.distillation_step, setup=ctx.setup, tx=tx, loss_weights=weights
            )
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
            return step_fn(s, problem, ctx.frozen, images, keys['distill'])

    return step

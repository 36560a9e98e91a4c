"""The jitted step of each phase: reconstruction, or distillation on host or device images.

  run, inputs = make_step(ctx, settings, phase, first, problem, tx, state)
  state, metrics = run(state, *inputs(k, frozen))      # step k (1-based) of the phase

Each phase's step is jitted once (its static settings bound with functools.partial, the
state donated, its new state placed like the old one). `inputs` does the step's host work
(drawing a host batch, copying it to the mesh) and `run` is the jitted call alone, so the
loop can time the two apart (`timing.PhaseClock`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nrnp.core import quantize
from nrnp.data import threads
from nrnp.training import distillation, reconstruction, sharding


def metric_prefix(kind: str) -> str:
    """The namespace of a training phase's metrics: 'recon', 'quantize' or 'distill'."""
    return {'reconstruct': 'recon'}.get(kind, kind)


def make_step(ctx, settings, phase, first: int, problem, tx, state):
    """`(run, inputs)` for the steps of `phase` after step `first`.

    The jitted step's new state keeps `state`'s placement (`out_shardings`), and the PRNG
    keys are placed on the mesh once, so a step costs no per-step copies on the host.

    Args:
      ctx: the phases' `Context` (predictor, frozen arrays, batches or device batches, keys).
      settings: the run's `schedule.Settings` (batch size, loss weights).
      phase: the `schedule.Phase`.
      first: steps of the phase already done (host batches start there).
      problem: the `ReconstructionProblem` with this round's target rows.
      tx: the run's optimizer.
      state: the current predictor state (its shardings are kept).

    Returns:
      `run(state, *args) -> (state, metrics)`, the jitted step, and `inputs(k, frozen)`,
      the arguments after the state of step k (1-based) given the distillation phase's
      `Frozen` arrays (the run's current BatchNorm statistics).
    """
    jit = functools.partial(jax.jit, donate_argnums=0)
    keys = ctx.keys
    if ctx.mesh is not None:
        shardings = jax.tree.map(lambda x: x.sharding, state)
        jit = functools.partial(jax.jit, donate_argnums=0, out_shardings=(shardings, None))
        keys = sharding.replicate(ctx.keys, ctx.mesh)
    if phase.kind in ('reconstruct', 'quantize'):
        run = jit(
            functools.partial(
                reconstruction.reconstruction_step,
                model=ctx.pmodel,
                tx=tx,
                batch_size=min(settings.reconstruct_batch_size, problem.target.shape[0]),
                magnitude_fraction=settings.reconstruct_magnitude_fraction,
                mesh=ctx.mesh,
                scheme=ctx.scheme if phase.kind == 'quantize' else quantize.NONE,
                name=metric_prefix(phase.kind),
            )
        )
        return run, lambda k, frozen: (problem, keys['reconstruct'])
    weights = settings.loss_weights
    if ctx.device_batches is not None:  # images drawn and augmented inside the step
        db = ctx.device_batches
        run = jit(
            functools.partial(
                distillation.distillation_step_on_device,
                setup=ctx.setup,
                tx=tx,
                loss_weights=weights,
                **db.settings,
            )
        )
        data_key = db.key(phase.cycle)
        if ctx.mesh is not None:
            data_key = sharding.replicate(data_key, ctx.mesh)

        def device_inputs(k, frozen):
            return problem, frozen, db.split, data_key, np.int32(k - 1), keys['distill']

        return run, device_inputs
    run = jit(
        functools.partial(
            distillation.distillation_step, setup=ctx.setup, tx=tx, loss_weights=weights
        )
    )
    batches = threads.prefetch(ctx.batches(first, phase.cycle), size=2)

    def host_inputs(k, frozen):
        images = next(batches)
        if isinstance(images, tuple):
            images = images[0]  # labels are never used
        if ctx.mesh is None:
            return problem, frozen, jnp.asarray(images), keys['distill']
        images = sharding.global_batch(images, ctx.mesh)
        return problem, frozen, images, keys['distill']

    return run, host_inputs

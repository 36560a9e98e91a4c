"""Progressive reconstruction rounds: each round's predictor and target, and the shapes a
checkpoint holds when rounds change the predictor's width.

  state = fresh_state(pmodel, input_dim, seed, tx)          # step 0, pmodel's width
  state, target = start_round(state, phase, pmodel, problem, ...)   # at a round's start
  hidden = held_width(schedule, meta)                        # width a checkpoint holds

Round 1 of a cycle fits the original weights with the predictor the run has; round
r > 1 fits the weights round r - 1 rebuilt with a fresh predictor of its own width
(arXiv 2407.00356's progressive reconstruction). Only the last round's predictor is
stored and distilled, so its width is the run's compression ratio.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nrnp.core import predictor
from nrnp.training import optim, reconstruction


def fresh_state(pmodel, input_dim: int, seed: int, tx: optim.PhaseSwitch):
    """A `PredictorState` at step 0: a new predictor of `pmodel`'s width, fresh optimizers."""
    pparams = predictor.init_predictor(pmodel, input_dim, seed)
    return reconstruction.PredictorState(
        step=jnp.zeros([], jnp.int32), pparams=pparams, opt_state=tx.init(pparams)
    )


def held_width(schedule: list, meta: dict) -> int:
    """Width of the predictor in a checkpoint whose position is `meta` ('phase', 'step').

    A checkpoint inside phase i (step > 0) holds phase i's predictor; one at step 0 was
    written when phase i - 1 ended, before phase i started a fresh predictor.
    """
    index = meta['phase'] if meta['step'] else meta['phase'] - 1
    return schedule[max(index, 0)].hidden


def round_key(predictor_seed: int, phase) -> jax.Array:
    """The PRNG key of the fresh predictor of round `phase.round` of cycle `phase.cycle`."""
    key = jax.random.fold_in(jax.random.key(predictor_seed), phase.cycle)
    return jax.random.fold_in(key, phase.round)


def start_round(
    state: reconstruction.PredictorState,
    phase,
    pmodel,
    problem: reconstruction.ReconstructionProblem,
    *,
    input_dim: int,
    predictor_seed: int,
    tx: optim.PhaseSwitch,
):
    """The state and target rows a reconstruction round starts from.

    Args:
      state: the state the last phase left (its reconstruction optimizer active).
      phase: the round (`schedule.Phase`: round, cycle, hidden).
      pmodel: the predictor module at the round's width.
      problem: the run's problem; `problem.target` `[N, 9]` holds the original rows.
      input_dim: the encodings' width; predictor_seed: the run's predictor seed.
      tx: the phase's optimizer (its reconstruction optimizer starts afresh: every round
        runs its own cosine).

    Returns:
      (state, round target rows `[N, 9]` float32). For round r > 1 the predictor is
      new (`round_key`: the run's predictor seed folded with cycle and round); when its
      width differs from the last one, every phase's optimizer state is re-initialised
      for the new shapes, so the distillation phase that follows trains it afresh.
    """
    pparams, opt_state = state.pparams, state.opt_state
    if phase.round == 1:
        if reconstruction.predictor_for(pmodel, pparams).hidden != pmodel.hidden:
            raise ValueError(f'{phase.label}: round 1 of a later cycle cannot change the width')
        target = problem.target
    else:
        last = reconstruction.predictor_for(pmodel, pparams)
        target = predictor.predict(last, pparams, problem.encoded)  # [N, 9]
        pparams = predictor.init_predictor(pmodel, input_dim, round_key(predictor_seed, phase))
        if last.hidden != pmodel.hidden:
            opt_state = optim.select_phase(tx.init(pparams), 'reconstruct', tx)
    opt_state = optim.reset_phase(opt_state, 'reconstruct', tx, pparams)
    return state.replace(pparams=pparams, opt_state=opt_state), target

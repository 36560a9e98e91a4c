"""The training loop of a run: every phase of its schedule in turn, checkpointed and resumable.

  settings = schedule.settings(config)     # the phases, their optimizers, the cadences
  carry, records = run_schedule(ctx, settings)

Checkpoints (orbax, atomic) hold the `phases.Carry`: the predictor state (params, the
phase-switching optimizer's state with one optimizer state per phase kind, global step),
the current round's target rows and the BatchNorm statistics; and the position (phase
index, step in phase, the records so far, the schedule). Rounds may change the
predictor's width: a checkpoint is restored into the shapes of the phase its position
names. A killed run restarted with the same command continues from the last checkpoint
and ends with the same predictor, bit for bit on CPU: every random draw is a function of
(seed, step) and the image batches of (seed, cycle, step in phase). SIGTERM and Ctrl-C
save at the current step and raise `Preempted` (`interrupts`).
"""

from __future__ import annotations

import contextlib
import dataclasses

from nrnp import files, signals
from nrnp.errors import Preempted, WorkdirError
from nrnp.training import checkpoints, interrupts, phases, rounds, sharding
from nrnp.training.phases import Carry, Context
from nrnp.training.schedule import Phase, Settings, first_hidden


def run_schedule(ctx: Context, settings: Settings) -> tuple[Carry, list[dict]]:
    """Runs (or resumes) `settings.phases`.

    Returns:
      (final `Carry`, list of per-phase records with kind, steps, seconds, top1, rmse, the
       predictor's hidden width and intermediate evals).
    """
    ckpt = checkpoints.RunCheckpointer(f'{ctx.workdir}/checkpoints', log=ctx.log)
    carry, position = _restore(ctx, settings, ckpt)
    records, layout = list(position['records']), _layout(settings)
    ctx = _placed(ctx)
    carry = carry.placed(ctx.mesh)

    def save(phase_index, step_in_phase, carry):
        meta = {'phase': phase_index, 'step': step_in_phase, 'records': records}
        ckpt.save(int(carry.state.step), carry.arrays(), {**meta, 'schedule': layout})
        ctx.saved['step'] = int(carry.state.step)

    with interrupts.catch(ctx.log) as stop:
        for index, phase in enumerate(settings.phases):
            if index < position['phase']:
                continue
            first = position['step'] if index == position['phase'] else 0
            with _stopped_between_steps(ctx, phase):
                carry, record = phases.run_phase(
                    ctx, settings, index, first, carry, records, stop, save
                )
            records.append({**record, 'hidden': phase.hidden})
            save(index + 1, 0, carry)
            if stop.requested:
                raise Preempted(
                    f'{stop.requested}: checkpoint written after {phase.label} in '
                    f'{ctx.workdir}; run the same command again to resume'
                )
    ckpt.close()
    return carry, records


def _layout(settings: Settings) -> list[dict]:
    return [dataclasses.asdict(p) for p in settings.phases]


def _restore(ctx: Context, settings: Settings, ckpt) -> tuple[Carry, dict]:
    """The run's starting `Carry` and position: fresh, or from its newest checkpoint."""
    schedule = list(settings.phases)
    width = first_hidden(schedule, ctx.pmodel.hidden)  # ctx.pmodel: the final width
    tx = settings.optimizer()  # any phase's: they share one state structure
    state = rounds.fresh_state(
        ctx.pmodel.clone(hidden=width), ctx.input_dim, ctx.predictor_seed, tx
    )
    carry = Carry(state, ctx.problem.target, ctx.batch_stats)
    layout = _layout(settings)

    def like(meta):  # the checkpoint's arrays, as its position in the schedule shapes them
        changed = files.differences({'schedule': meta.get('schedule')}, {'schedule': layout})
        if changed:
            raise WorkdirError(
                f'{ctx.workdir} holds a run with another schedule ({"; ".join(changed[:4])}); '
                'use a new --workdir'
            )
        held = rounds.held_width(schedule, meta)
        if held == width:
            return carry.arrays()
        fresh = rounds.fresh_state(ctx.pmodel.clone(hidden=held), ctx.input_dim, 0, tx)
        return dataclasses.replace(carry, state=fresh).arrays()

    restored = ckpt.restore_latest(like)
    if restored is None:
        return carry, {'phase': 0, 'step': 0, 'records': []}
    arrays, position = restored
    ctx.saved['step'] = ckpt.latest_step()
    ctx.log(
        f'resuming from checkpoint {ckpt.latest_step()}: phase {position["phase"]}, '
        f'step {position["step"]} of it'
    )
    return Carry.of(arrays), position


def _placed(ctx: Context) -> Context:
    """`ctx` with the frozen arrays on the mesh."""
    if ctx.mesh is None:
        return ctx
    return dataclasses.replace(
        ctx,
        problem=sharding.replicate(ctx.problem, ctx.mesh),
        frozen=None if ctx.frozen is None else sharding.replicate(ctx.frozen, ctx.mesh),
    )


@contextlib.contextmanager
def _stopped_between_steps(ctx: Context, phase: Phase):
    """A signal that stopped long work between two steps (evaluation, BatchNorm
    re-estimation, synthetic images: `signals.check`) becomes `Preempted` naming the last
    checkpoint, which the same command resumes from (the interrupted work is redone)."""
    try:
        yield
    except signals.Interrupted as e:
        step = ctx.saved.get('step')
        if ctx.temporary or step is None:
            kept, then = 'no checkpoint is kept', 'start again'
        else:
            kept, then = f'the last checkpoint {ctx.workdir}/checkpoints/{step} stays', 'resume'
        raise Preempted(
            f'{e.signal_name} during {phase.label}: {kept}; run the same command again to {then}'
        ) from None

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
import hashlib
import json

from nrnp import files, signals
from nrnp.errors import Preempted, WorkdirError
from nrnp.training import checkpoints, interrupts, keeping, phases, rounds, sharding
from nrnp.training.phases import Carry, Context
from nrnp.training.schedule import Phase, Settings, first_hidden

PHASES_DIR = 'phases'  # W/phases/<id>: the carry after the first n phases (`boundary_id`)


def run_schedule(ctx: Context, settings: Settings) -> tuple[Carry, list[dict]]:
    """Runs (or resumes, or branches off an earlier run's phases) `settings.phases`.

    Returns:
      (final `Carry`, list of per-phase records with kind, label, steps, seconds, top1,
       rmse, held-out score, the predictor's hidden width and intermediate evals).
    """
    ckpt = checkpoints.RunCheckpointer(f'{ctx.workdir}/checkpoints', log=ctx.log)
    bounds = None
    if not ctx.temporary:
        where = f'{ctx.workdir}/{PHASES_DIR}'
        bounds = checkpoints.RunCheckpointer(where, max_to_keep=None, log=ctx.log)
    carry, position = _restore(ctx, settings, ckpt, bounds)
    records, layout = list(position['records']), _layout(settings)
    ctx.saved['finished'] = position['phase']  # phases done before this call
    ctx = _placed(ctx)
    carry = carry.placed(ctx.mesh)

    def save(phase_index, step_in_phase, carry, boundary=False):
        meta = {'phase': phase_index, 'step': step_in_phase, 'records': records}
        meta.update(kept=carry.kept, schedule=layout)
        ckpt.save(int(carry.state.step), carry.arrays(), meta)
        ctx.saved['step'] = int(carry.state.step)
        if boundary and bounds is not None:
            bounds.save(boundary_id(layout, phase_index), carry.arrays(), meta)

    with interrupts.catch(ctx.log) as stop:
        for index, phase in enumerate(settings.phases):
            if index < position['phase']:
                continue
            first = position['step'] if index == position['phase'] else 0
            with _stopped_between_steps(ctx, phase):
                carry, record = phases.run_phase(
                    ctx, settings, index, first, carry, records, stop, save
                )
                record = {**record, 'hidden': phase.hidden, 'label': phase.label}
                carry = keeping.after_phase(ctx, phase, index, carry, record, records)
            records.append(record)
            save(index + 1, 0, carry, boundary=True)
            if stop.requested:
                raise Preempted(
                    f'{stop.requested}: checkpoint written after {phase.label} in '
                    f'{ctx.workdir}; run the same command again to resume'
                )
    ckpt.close()
    if bounds is not None:
        bounds.close()
    return carry, records


def _layout(settings: Settings) -> list[dict]:
    """The schedule as checkpoints record it: each phase and the branchable fields it reads."""
    reads = settings.reads or ({},) * len(settings.phases)
    return [{**dataclasses.asdict(p), 'reads': r} for p, r in zip(settings.phases, reads)]


def boundary_id(layout: list[dict], n: int) -> int:
    """The W/phases step of the boundary after the first n phases of `layout`: n, then a
    digest of those phases (so the boundaries of every branch of a workdir stay apart).
    Below 2**31: orbax hands multi-process steps to a C++ int (a colliding digest is
    harmless, `_branch` checks the boundary's schedule before using it)."""
    digest = hashlib.sha256(json.dumps(layout[:n], sort_keys=True).encode()).hexdigest()
    return n * 10**7 + int(digest[:8], 16) % 10**7


def _usable(meta: dict, layout: list[dict]) -> bool:
    """Whether a checkpoint's position lies in phases this schedule shares with its run's."""
    done = meta['phase'] + (1 if meta['step'] else 0)
    old = list(meta.get('schedule') or [])
    return done <= len(layout) and not files.differences(
        {'schedule': old[:done]}, {'schedule': layout[:done]}
    )


def _restore(ctx: Context, settings: Settings, ckpt, bounds) -> tuple[Carry, dict]:
    """The run's starting `Carry` and position: fresh, from its newest checkpoint, or from
    the boundary after the phases it shares with the run the workdir held (`_branch`)."""
    schedule, layout = list(settings.phases), _layout(settings)
    width = first_hidden(schedule, ctx.pmodel.hidden)  # ctx.pmodel: the final width
    tx = settings.optimizer()  # any phase's: they share one state structure
    carry = Carry(
        rounds.fresh_state(ctx.pmodel.clone(hidden=width), ctx.input_dim, ctx.predictor_seed, tx),
        ctx.problem.target,
        ctx.batch_stats,
    )

    def like(meta):  # the checkpoint's arrays, as its position in the schedule shapes them
        if not _usable(meta, layout):
            changed = files.differences({'schedule': meta.get('schedule')}, {'schedule': layout})
            raise WorkdirError(
                f'{ctx.workdir} holds a run with another schedule ({"; ".join(changed[:4])}); '
                'use a new --workdir'
            )
        held = rounds.held_width(schedule, meta)
        fresh = lambda h: rounds.fresh_state(ctx.pmodel.clone(hidden=h), ctx.input_dim, 0, tx)
        arrays = dataclasses.replace(carry, state=carry.state if held == width else fresh(held))
        if meta.get('kept') is not None:  # the best phase's net: of the final width
            arrays.best = {'pparams': fresh(ctx.pmodel.hidden).pparams}
            if ctx.batch_stats is not None:
                arrays.best['batch_stats'] = ctx.batch_stats
        return arrays.arrays()

    meta = ckpt.latest_meta()
    if (meta is None or not _usable(meta, layout)) and bounds is not None and bounds.steps():
        return _branch(ctx, layout, ckpt, bounds, like, carry)
    restored = ckpt.restore_latest(like)
    if restored is None:
        return carry, {'phase': 0, 'step': 0, 'records': []}
    arrays, position = restored
    ctx.saved['step'] = ckpt.latest_step()
    ctx.log(
        f'resuming from checkpoint {ckpt.latest_step()}: phase {position["phase"]}, '
        f'step {position["step"]} of it'
    )
    return Carry.of(arrays, position.get('kept')), position


def _branch(ctx: Context, layout, ckpt, bounds, like, fresh: Carry) -> tuple[Carry, dict]:
    """The carry after the most phases this schedule shares with a run the workdir held
    (their boundary checkpoint in W/phases), the latest run's checkpoints deleted; or a
    fresh start when it shares none."""
    shared, held = 0, set(bounds.steps())
    for n in range(len(layout), 0, -1):
        step = boundary_id(layout, n)
        meta = bounds.meta(step) if step in held else None
        if meta is not None and meta['phase'] == n and _usable(meta, layout):
            shared = n
            break
    ckpt.clear()  # the earlier run's positions: this run's own replace them
    restored = bounds.restore(boundary_id(layout, shared), like) if shared else None
    if restored is None:
        ctx.log('no phase of the earlier run in this workdir is shared: starting afresh')
        return fresh, {'phase': 0, 'step': 0, 'records': []}
    arrays, meta = restored
    records = meta['records'][:shared]
    labels = ', '.join(r.get('label', r['kind']) for r in records)
    ctx.log(f'reused: {labels} from the earlier run in {ctx.workdir}')
    return Carry.of(arrays, meta.get('kept')), {'phase': shared, 'step': 0, 'records': records}


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

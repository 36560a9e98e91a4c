"""The training loop of a run: every phase of the schedule in turn, checkpointed and resumable.

  schedule = schedule.build_schedule(config)   # [Phase(kind, steps, round, cycle, hidden)]
  state, records = run_schedule(ctx, config, schedule)

Checkpoints (orbax, atomic) hold the predictor state (params, the phase-switching
optimizer's state with one optimizer state per phase kind, global step), the current
round's target rows, and the position (phase index, step in phase, the records so
far, the schedule). Rounds may change the predictor's width: a checkpoint is restored
into the shapes of the phase its position names. A killed run restarted with the same
command continues from the last checkpoint and ends with the same predictor, bit for
bit on CPU: every random draw is a function of (seed, step) and the image batches of
(seed, cycle, step in phase). SIGTERM and Ctrl-C save at the current step and raise
`Preempted` (`interrupts`).
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import numpy as np

from nrnp import signals
from nrnp.errors import NonFiniteError, Preempted
from nrnp.reporting import metrics as metrics_lines
from nrnp.reporting import progress as progress_lines
from nrnp.training import (
    checkpoints,
    interrupts,
    optim,
    phase_steps,
    recalibration,
    reconstruction,
    rounds,
    sharding,
    timing,
)
from nrnp.training.run_state import Carry, Context
from nrnp.training.schedule import Phase, first_hidden, learning_rate, optimizer, restarts


def _pct(value) -> str:
    return '-' if value is None else f'{value:.2f} %'


def _check_finite(ctx, config, metrics: dict, phase: Phase, index: int, step: int):
    for name, value in metrics.items():
        value = float(value)
        if not np.isfinite(value):
            section = {'quantize': 'predictor.quantize_'}.get(phase.kind, f'{phase.kind}.')
            lr = learning_rate(config, ctx.schedule, index, step)
            if ctx.temporary:
                kept = 'no checkpoint is kept (a temporary workdir; pass a workdir to keep them)'
            elif ctx.saved.get('step') is not None:
                kept = f'the last good checkpoint (step {ctx.saved["step"]}) stays in '
                kept += f'{ctx.workdir}/checkpoints'
            else:
                kept = 'no checkpoint was written yet'
            raise NonFiniteError(
                f'{phase.label}: non-finite {name} = {value} at step {step} of the phase '
                f'(learning rate {lr:.3g}); {kept}. Lower {section}learning_rate, or check '
                'the network and data for NaN or inf'
            )


def _for_phase(ctx, phase: Phase):
    """`ctx` with the predictor module of `phase`'s width."""
    pmodel = ctx.pmodel.clone(hidden=phase.hidden)
    setup = ctx.setup and dataclasses.replace(ctx.setup, predictor=pmodel)
    return dataclasses.replace(ctx, pmodel=pmodel, setup=setup)


def _restore(ctx: Context, config, schedule: list[Phase], ckpt) -> tuple[Carry, dict]:
    """The run's starting `Carry` and position: fresh, or from its newest checkpoint."""
    width = first_hidden(config, schedule)
    tx = optimizer(config, schedule, None)  # any phase's: they share one state structure
    state = rounds.fresh_state(
        ctx.pmodel.clone(hidden=width), ctx.input_dim, ctx.predictor_seed, tx
    )
    carry = Carry(state, ctx.problem.target, ctx.batch_stats)
    layout = [dataclasses.asdict(p) for p in schedule]

    def like(meta):  # the checkpoint's arrays, as its position in the schedule shapes them
        if meta.get('schedule') != layout:
            raise ValueError(
                f'{ctx.workdir} holds a run with another schedule '
                f'{meta.get("schedule")}; use a new --workdir'
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


def _placed(ctx: Context, schedule: list[Phase]) -> Context:
    """`ctx` for the run: its schedule, a metrics sink, the frozen arrays on the mesh."""
    ctx = dataclasses.replace(
        ctx, schedule=schedule, metrics=ctx.metrics or metrics_lines.MetricWriter(None)
    )
    if ctx.mesh is None:
        return ctx
    return dataclasses.replace(
        ctx,
        problem=sharding.replicate(ctx.problem, ctx.mesh),
        frozen=None if ctx.frozen is None else sharding.replicate(ctx.frozen, ctx.mesh),
    )


def run_schedule(ctx: Context, config, schedule: list[Phase]):
    """Runs (or resumes) `schedule`.

    Returns:
      (final `Carry`, list of per-phase records with kind, steps, seconds, top1, rmse, the
       predictor's hidden width and intermediate evals).
    """
    ckpt = checkpoints.RunCheckpointer(f'{ctx.workdir}/checkpoints', log=ctx.log)
    carry, position = _restore(ctx, config, schedule, ckpt)
    records, layout = list(position['records']), [dataclasses.asdict(p) for p in schedule]
    ctx = _placed(ctx, schedule)
    carry = carry.placed(ctx.mesh)

    def save(phase_index, step_in_phase, carry):
        meta = {'phase': phase_index, 'step': step_in_phase, 'records': records}
        ckpt.save(int(carry.state.step), carry.arrays(), {**meta, 'schedule': layout})
        ctx.saved['step'] = int(carry.state.step)

    with interrupts.catch(ctx.log) as stop:
        for index, phase in enumerate(schedule):
            if index < position['phase']:
                continue
            first = position['step'] if index == position['phase'] else 0
            with _stopped_between_steps(ctx, phase):
                carry, record = _one_phase(ctx, config, index, first, carry, records, stop, save)
            records.append({**record, 'hidden': phase.hidden})
            save(index + 1, 0, carry)
            if stop.requested:
                raise Preempted(
                    f'{stop.requested}: checkpoint written after {phase.label} in '
                    f'{ctx.workdir}; run the same command again to resume'
                )
    ckpt.close()
    return carry, records


def _one_phase(ctx, config, index: int, first: int, carry: Carry, records, stop, save):
    """Phase `index` of the schedule from its step `first`: (carry, record)."""
    phase = ctx.schedule[index]
    phase_ctx = _for_phase(ctx, phase)
    if phase.kind == 'recalibrate':
        seen = ctx.seen(phase.kind, carry.state.pparams)
        stats, record = recalibration.phase(phase_ctx, phase, carry.state, seen, records)
        return dataclasses.replace(carry, batch_stats=stats), record
    tx = optimizer(config, ctx.schedule, index)
    if first == 0:
        carry = _start_phase(phase_ctx, config, phase, carry, tx).placed(ctx.mesh)
    return _run_phase(phase_ctx, config, phase, index, first, carry, tx, stop, save)


@contextlib.contextmanager
def _stopped_between_steps(ctx, phase: Phase):
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


def _start_phase(ctx, config, phase: Phase, carry: Carry, tx: optim.PhaseSwitch) -> Carry:
    """Phase-start actions: make the phase's optimizer the active one; for a
    reconstruction round, also choose its target and predictor (`rounds.start_round`:
    round r > 1 fits round r - 1's rebuild with a fresh predictor of its width).
    """
    state = carry.state
    state = state.replace(opt_state=optim.select_phase(state.opt_state, phase.kind, tx))
    if phase.kind != 'reconstruct':
        return dataclasses.replace(carry, state=state)
    state, target = rounds.start_round(
        state,
        phase,
        ctx.pmodel,
        ctx.problem,
        input_dim=ctx.input_dim,
        predictor_seed=ctx.predictor_seed,
        tx=tx,
        restart=restarts(config, phase),
    )
    return dataclasses.replace(carry, state=state, round_target=target)


def _frozen(ctx, batch_stats):
    """The distillation step's frozen arrays with the run's current BatchNorm statistics."""
    if ctx.frozen is None or batch_stats is None:
        return ctx.frozen
    return dataclasses.replace(ctx.frozen, batch_stats=batch_stats)


def _log_step(ctx, config, phase: Phase, index: int, k: int, state, metrics, clock, progress):
    _check_finite(ctx, config, metrics, phase, index, k)
    progress.update(k, dict(metrics), force=True)
    prefix = {'reconstruct': 'recon'}.get(phase.kind, phase.kind)
    lr = learning_rate(config, ctx.schedule, index, k)
    ctx.metrics.write(
        int(state.step),
        {**metrics, f'{prefix}/lr': lr, f'{prefix}/steps_per_second': clock.rate(k)},
    )


def _run_phase(ctx, config, phase, index, first, carry: Carry, tx, stop, save):
    """Steps `first + 1 .. phase.steps` of a training phase; returns (carry, record).

    A signal (`stop.requested`) saves a checkpoint after the current step (the last step
    too: before the phase's evaluation) and raises `Preempted`.
    """
    problem = dataclasses.replace(ctx.problem, target=carry.round_target)
    run, inputs = phase_steps.make_step(ctx, config, phase, first, problem, tx, carry.state)
    # Plain ints: a ConfigDict attribute read costs microseconds, and the loop is per step.
    log_every, checkpoint_every = config.log_every, config.checkpoint_every
    progress = progress_lines.Progress(
        phase.steps, phase.label, ctx.log, every=log_every, first=first
    )
    cpu_mesh = ctx.mesh is not None and ctx.mesh.size > 1 and jax.devices()[0].platform == 'cpu'
    clock = timing.PhaseClock(first, lookahead=not cpu_mesh)
    evals, state, frozen = [], carry.state, _frozen(ctx, carry.batch_stats)
    if first:
        ctx.log(f'{phase.label}: continuing at step {first}/{phase.steps}')
    for k in range(first + 1, phase.steps + 1):
        args = inputs(k, frozen)
        with clock.device():
            state, metrics = run(state, *args)
        clock.stepped(k, metrics)
        if k % log_every == 0 or k == phase.steps:
            _log_step(ctx, config, phase, index, k, state, clock.wait(metrics), clock, progress)
        if k < phase.steps and not stop.requested:
            frozen = _between_steps(ctx, config, phase, k, state, carry, clock, evals) or frozen
        if stop.requested or (checkpoint_every and k % checkpoint_every == 0 and k < phase.steps):
            with clock.apart():
                _check_finite(ctx, config, metrics, phase, index, k)
                save(index, k, dataclasses.replace(carry, state=state))
            if stop.requested:
                raise Preempted(
                    f'{stop.requested}: checkpoint written at {phase.label} step {k} in '
                    f'{ctx.workdir}; run the same command again to resume'
                )
    clock.wait(state)  # the steps still queued on the device are device time
    return dataclasses.replace(carry, state=state), _phase_record(
        ctx, phase, first, state, carry.batch_stats, clock, evals
    )


def _between_steps(ctx, config, phase: Phase, k: int, state, carry: Carry, clock, evals):
    """The periodic evaluation and BatchNorm re-estimation after step k; the distillation
    step's new frozen arrays when the statistics changed (else None)."""
    if config.eval_every and k % config.eval_every == 0:
        with clock.apart(evaluation=True):
            seen = ctx.seen(phase.kind, state.pparams)
            evals.append({'step': k, 'top1': ctx.evaluate(seen, carry.batch_stats)})
        ctx.log(f'{phase.label} step {k}: eval/top1_reconstructed {_pct(evals[-1]["top1"])}')
        ctx.metrics.write(int(state.step), {'eval/top1_reconstructed': evals[-1]['top1']})
    every = config.recalibrate.every if phase.kind == 'distill' and ctx.recalibrate else 0
    if every and k % every == 0:
        with clock.apart():
            carry.batch_stats = ctx.recalibrate(ctx.seen(phase.kind, state.pparams))
        return _frozen(ctx, carry.batch_stats)
    return None


def _phase_record(ctx, phase: Phase, first: int, state, batch_stats, clock, evals) -> dict:
    """The finished phase's record (timing, top-1, RMSE, evaluations), logged."""
    record = {'kind': phase.kind, 'round': phase.round, 'cycle': phase.cycle}
    record.update(steps=phase.steps, **clock.summary(phase.steps - first))
    seen = ctx.seen(phase.kind, state.pparams)
    record['top1'] = ctx.evaluate(seen, batch_stats)
    record['rmse'] = reconstruction.full_rmse(ctx.pmodel, seen, ctx.problem)
    record['evals'] = evals
    if first:
        record['resumed_at'] = first
    ctx.metrics.write(
        int(state.step), {'eval/top1_reconstructed': record['top1'], 'recon/rmse': record['rmse']}
    )
    ctx.log(
        f'{phase.label} done: {phase.steps} steps, {record["seconds"]:.1f}s, '
        f'eval/top1_reconstructed {_pct(record["top1"])}, '
        f'recon/rmse {record["rmse"]:.6f} (vs original weights)'
    )
    return record

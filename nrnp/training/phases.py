"""The phases of a run: what they work with (`Context`), what they carry and checkpoint
(`Carry`), and the runner of every phase kind.

  carry, record = run_phase(ctx, settings, index, first, carry, records, stop, save)

A training phase ('reconstruct', 'quantize', 'distill') runs its jitted step
(`phase_steps.make_step`) from step `first + 1` to its end: a reconstruction round first
chooses its target and predictor (`rounds.start_round`), every phase makes its own
optimizer the active one of the run's `optim.phase_switch`. A 'recalibrate' phase
re-estimates the rebuilt network's BatchNorm statistics (`Context.reestimate`). Each
returns the new `Carry` and the phase's record (kind, steps, seconds, top-1, RMSE, ...).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import numpy as np

from nrnp.core import predictor, quantize
from nrnp.errors import NonFiniteError, Preempted
from nrnp.reporting import metrics as metrics_lines
from nrnp.reporting import progress as progress_lines
from nrnp.reporting.reports import percent
from nrnp.training import (
    distillation,
    optim,
    phase_steps,
    recalibration,
    reconstruction,
    rounds,
    sharding,
    timing,
)
from nrnp.training.schedule import Phase, Settings

_stored = jax.jit(quantize.fake_quantize_tree, static_argnums=1)


@dataclasses.dataclass
class Context:
    """What the phases work with besides their `Settings` (built once per run).

    Attributes:
      pmodel: predictor module (each phase gets its width); input_dim: its input width;
        predictor_seed: init seed.
      problem: `ReconstructionProblem` with the original rows as target.
      setup: `DistillSetup` (None without distillation); frozen: its `Frozen` arrays.
      batches: `(start_step, cycle) -> iterator` of distillation image batches
        (`images` or `(images, labels)`, images `[B, H, W, C]` float32, this
        process's share); deterministic in its arguments for exact resume.
      evaluate: `(pparams, batch_stats) -> top1 percent` of the rebuilt network (with those
        BatchNorm statistics; None: the original's) on the test images, or None.
      keys: named PRNG keys ('reconstruct', 'distill', ...).
      log: progress sink; workdir: run directory.
      mesh: device mesh (None: default device); images and kernel rows are split over it.
      metrics: `reporting.metrics.MetricWriter` for TensorBoard and metrics.jsonl.
      device_batches: `device_data.DeviceBatches` when the distillation images are drawn
        on the device (then `batches` is unused).
      scheme: how the artefact stores the predictor (`core.quantize.Scheme`): the
        'quantize' and distillation phases train through it, and every phase but
        reconstruction evaluates and re-estimates the network it rebuilds (`seen`).
      batch_stats: the target's stored BatchNorm statistics (None: it has none).
      reestimate: the run's `recalibration.Reestimation` (None: no re-estimation).
      rebuild: `pparams -> params` of the rebuilt network (what `reestimate` measures).
      temporary: the workdir is deleted after the run (its checkpoints are not kept).
      saved: set by the loop: 'step', the newest checkpoint step of this run, and
        'finished', how many phases were done before this call (resumed or reused).
      score: `(pparams as stored, batch_stats) -> percent` on held-out training images
        (never the test set), what `keeping` chooses the kept phase by; None: no images.
    """

    pmodel: predictor.Predictor
    input_dim: int
    predictor_seed: int
    problem: reconstruction.ReconstructionProblem
    setup: distillation.DistillSetup | None
    frozen: distillation.Frozen | None
    batches: Callable | None
    evaluate: Callable
    keys: dict
    log: Callable
    workdir: str
    mesh: object = None
    metrics: object = dataclasses.field(default_factory=lambda: metrics_lines.MetricWriter(None))
    device_batches: object = None
    scheme: quantize.Scheme = quantize.NONE
    batch_stats: dict | None = None
    reestimate: recalibration.Reestimation | None = None
    rebuild: Callable | None = None
    temporary: bool = False
    saved: dict = dataclasses.field(default_factory=dict)
    score: Callable | None = None

    def seen(self, kind: str, pparams):
        """The predictor a phase of `kind` is measured as: as trained for reconstruction,
        else as the artefact stores it (`scheme`; the same params for float storage)."""
        if kind == 'reconstruct' or self.scheme.mode == 'none':
            return pparams
        return _stored(pparams, self.scheme)

    def for_phase(self, phase: Phase) -> Context:
        """This context with the predictor module of `phase`'s width."""
        pmodel = self.pmodel.clone(hidden=phase.hidden)
        setup = self.setup and dataclasses.replace(self.setup, predictor=pmodel)
        return dataclasses.replace(self, pmodel=pmodel, setup=setup)


@dataclasses.dataclass
class Carry:
    """What a run carries from phase to phase and checkpoints.

    Attributes:
      state: the `PredictorState`.
      round_target: `[N, 9]` rows the current reconstruction round fits.
      batch_stats: the rebuilt network's BatchNorm statistics (the stored ones until a
        'recalibrate' phase re-estimates them; None without BatchNorm).
      best: the best-scoring phase's `{'pparams', 'batch_stats'}` so far (`keeping`).
      kept: that phase's index in the schedule (None: none yet); checkpointed in the meta.
    """

    state: reconstruction.PredictorState
    round_target: object
    batch_stats: dict | None = None
    best: dict | None = None
    kept: int | None = None

    def arrays(self) -> dict:
        out = {'state': self.state, 'round_target': self.round_target}
        out.update({} if self.best is None else {'best': self.best})
        return out if self.batch_stats is None else {**out, 'batch_stats': self.batch_stats}

    @classmethod
    def of(cls, arrays: dict, kept: int | None = None) -> Carry:
        stats, best = arrays.get('batch_stats'), arrays.get('best')
        return cls(arrays['state'], arrays['round_target'], stats, best, kept)

    def placed(self, mesh) -> Carry:
        """On the mesh: the state as `sharding.place_state`, the rest replicated."""
        if mesh is None:
            return self
        stats = None if self.batch_stats is None else sharding.replicate(self.batch_stats, mesh)
        best = None if self.best is None else sharding.replicate(self.best, mesh)
        return Carry(
            sharding.place_state(self.state, mesh),
            sharding.replicate(self.round_target, mesh),
            stats,
            best,
            self.kept,
        )


def run_phase(ctx: Context, settings: Settings, index, first, carry: Carry, records, stop, save):
    """Phase `index` of `settings.phases` from its step `first`: (carry, record).

    `records`: the run's records so far; `stop`: the loop's `interrupts.catch`;
    `save(index, step, carry)` writes a checkpoint.
    """
    phase = settings.phases[index]
    if phase.kind == 'recalibrate':
        return recalibrate(ctx, phase, carry, records)
    return train(ctx.for_phase(phase), settings, index, first, carry, stop, save)


def recalibrate(ctx: Context, phase: Phase, carry: Carry, records: list) -> tuple[Carry, dict]:
    """A 'recalibrate' phase: the rebuilt network's BatchNorm statistics re-estimated.

    The record has the top-1 before (the last record's) and after, and the seconds the
    re-estimation took (evaluation excluded).
    """
    start = time.time()
    seen = ctx.seen(phase.kind, carry.state.pparams)
    stats = jax.block_until_ready(ctx.reestimate(ctx.rebuild(seen)))
    seconds = time.time() - start
    top1 = ctx.evaluate(seen, stats)
    before = records[-1]['top1'] if records else None
    info = ctx.reestimate.info
    ctx.metrics.write(int(carry.state.step), {'eval/top1_recalibrated': top1})
    ctx.log(
        f'{phase.label}: BatchNorm statistics re-estimated in {seconds:.1f}s '
        f'({info.get("images")} {info.get("source")} images, {info.get("mode")}): '
        f'eval/top1_reconstructed {percent(before)} -> {percent(top1)}'
    )
    record = {'kind': 'recalibrate', 'round': phase.round, 'cycle': phase.cycle, 'steps': 0}
    record.update(seconds=seconds, top1_before=before, top1=top1, **info)
    record['rmse'] = records[-1]['rmse'] if records else None  # the weights did not change
    return dataclasses.replace(carry, batch_stats=stats), record


def train(ctx: Context, settings: Settings, index, first, carry: Carry, stop, save):
    """Steps `first + 1 .. phase.steps` of training phase `index`; returns (carry, record).

    A signal (`stop.requested`) saves a checkpoint after the current step (the last step
    too: before the phase's evaluation) and raises `Preempted`.
    """
    phase, tx = settings.phases[index], settings.optimizer(index)
    if first == 0:
        carry = _start(ctx, phase, carry, tx).placed(ctx.mesh)
    problem = dataclasses.replace(ctx.problem, target=carry.round_target)
    run, inputs = phase_steps.make_step(ctx, settings, phase, first, problem, tx, carry.state)
    later = {}  # the steps of each kind the run trains after this phase: its ETA
    for after in settings.phases[index + 1 :]:
        later[after.kind] = later.get(after.kind, 0) + after.steps
    progress = progress_lines.Progress(
        phase.steps,
        phase.label,
        ctx.log,
        settings.log_every,
        first=first,
        kind=phase.kind,
        later=later,
        costs=settings.step_costs,
    )
    cpu_mesh = ctx.mesh is not None and ctx.mesh.size > 1 and jax.devices()[0].platform == 'cpu'
    clock = timing.PhaseClock(first, lookahead=not cpu_mesh)
    evals, state, frozen = [], carry.state, _frozen(ctx, carry.batch_stats)
    if first:
        ctx.log(f'{phase.label}: continuing at step {first}/{phase.steps}')
    # Plain ints: a dataclass or ConfigDict attribute read per step adds up.
    log_every, checkpoint_every = settings.log_every, settings.checkpoint_every
    for k in range(first + 1, phase.steps + 1):
        args = inputs(k, frozen)
        with clock.device():
            state, metrics = run(state, *args)
        clock.stepped(k, metrics)
        if k % log_every == 0 or k == phase.steps or progress.due():  # or every 10 s
            _log_step(ctx, phase, k, state, clock.wait(metrics), clock, progress)
        if k < phase.steps and not stop.requested:
            frozen = _between_steps(ctx, settings, phase, k, state, carry, clock, evals) or frozen
        if stop.requested or (checkpoint_every and k % checkpoint_every == 0 and k < phase.steps):
            with clock.apart():
                _check_finite(ctx, metrics, phase, k)
                save(index, k, dataclasses.replace(carry, state=state))
            if stop.requested:
                raise Preempted(
                    f'{stop.requested}: checkpoint written at {phase.label} step {k} in '
                    f'{ctx.workdir}; run the same command again to resume'
                )
    clock.wait(state)  # the steps still queued on the device are device time
    record = _record(ctx, phase, first, state, carry.batch_stats, clock, evals)
    return dataclasses.replace(carry, state=state), record


def _start(ctx: Context, phase: Phase, carry: Carry, tx: optim.PhaseSwitch) -> Carry:
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
    )
    return dataclasses.replace(carry, state=state, round_target=target)


def _frozen(ctx: Context, batch_stats):
    """The distillation step's frozen arrays with the run's current BatchNorm statistics."""
    if ctx.frozen is None or batch_stats is None:
        return ctx.frozen
    return dataclasses.replace(ctx.frozen, batch_stats=batch_stats)


def _log_step(ctx: Context, phase: Phase, k: int, state, metrics: dict, clock, progress):
    """Step k's metrics (the step's own learning rate among them): checked, shown, written."""
    _check_finite(ctx, metrics, phase, k)
    progress.update(k, dict(metrics), force=True, timed=clock.timed(k))
    prefix = phase_steps.metric_prefix(phase.kind)
    ctx.metrics.write(int(state.step), {**metrics, f'{prefix}/steps_per_second': clock.rate(k)})


def _check_finite(ctx: Context, metrics: dict, phase: Phase, step: int) -> None:
    """Raises `NonFiniteError` naming the phase, the step, its learning rate and what is kept."""
    for name, value in metrics.items():
        value = float(value)
        if np.isfinite(value):
            continue
        lr = metrics.get(f'{phase_steps.metric_prefix(phase.kind)}/lr')
        if ctx.temporary:
            kept = 'no checkpoint is kept (a temporary workdir; pass a workdir to keep them)'
        elif ctx.saved.get('step') is not None:
            kept = f'the last good checkpoint (step {ctx.saved["step"]}) stays in '
            kept += f'{ctx.workdir}/checkpoints'
        else:
            kept = 'no checkpoint was written yet'
        fix = {'quantize': 'Set predictor.quantize_fraction=0 (no quantize phase)'}.get(
            phase.kind, f'Lower {phase.kind}.learning_rate'
        )
        rate = '' if lr is None else f' (learning rate {float(lr):.3g})'
        raise NonFiniteError(
            f'{phase.label}: non-finite {name} = {value} at step {step} of the phase{rate}; '
            f'{kept}. {fix}, or check the network and data for NaN or inf'
        )


def _between_steps(ctx: Context, settings: Settings, phase, k: int, state, carry, clock, evals):
    """The periodic evaluation and BatchNorm re-estimation after step k; the distillation
    step's new frozen arrays when the statistics changed (else None)."""
    if settings.eval_every and k % settings.eval_every == 0:
        with clock.apart(evaluation=True):
            seen = ctx.seen(phase.kind, state.pparams)
            evals.append({'step': k, 'top1': ctx.evaluate(seen, carry.batch_stats)})
        ctx.log(f'{phase.label} step {k}: eval/top1_reconstructed {percent(evals[-1]["top1"])}')
        ctx.metrics.write(int(state.step), {'eval/top1_reconstructed': evals[-1]['top1']})
    every = settings.recalibrate_every if phase.kind == 'distill' and ctx.reestimate else 0
    if every and k % every == 0:
        with clock.apart():
            carry.batch_stats = ctx.reestimate(ctx.rebuild(ctx.seen(phase.kind, state.pparams)))
        return _frozen(ctx, carry.batch_stats)
    return None


def _record(ctx: Context, phase: Phase, first: int, state, batch_stats, clock, evals) -> dict:
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
        f'eval/top1_reconstructed {percent(record["top1"])}, '
        f'recon/rmse {record["rmse"]:.6f} (vs original weights)'
    )
    return record

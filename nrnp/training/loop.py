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

import dataclasses
import time
from collections.abc import Callable

import jax
import numpy as np

from nrnp.core import predictor
from nrnp.errors import NonFiniteError, Preempted
from nrnp.reporting import metrics as metrics_lines
from nrnp.reporting import progress as progress_lines
from nrnp.training import (
    checkpoints,
    distillation,
    interrupts,
    optim,
    phase_steps,
    reconstruction,
    rounds,
    sharding,
)
from nrnp.training.schedule import Phase, first_hidden, learning_rate, optimizer, restarts


@dataclasses.dataclass
class Context:
    """What the phases need besides the config (built once by `pipeline.assemble`).

    Attributes:
      pmodel: predictor module (run_schedule gives each phase its width); input_dim: its
        input width; predictor_seed: init seed.
      problem: `ReconstructionProblem` with the original rows as target.
      setup: `DistillSetup` (None without distillation); frozen: its `Frozen` arrays.
      batches: `(start_step, cycle) -> iterator` of distillation image batches
        (`images` or `(images, labels)`, images `[B, H, W, C]` float32, this
        process's share); deterministic in its arguments for exact resume.
      evaluate: `pparams -> top1 percent` of the rebuilt network on the test images, or None.
      keys: named PRNG keys ('reconstruct', 'distill', ...).
      log: progress sink; workdir: run directory.
      mesh: device mesh (None: default device); images and kernel rows are split over it.
      metrics: `reporting.metrics.MetricWriter` for TensorBoard and metrics.jsonl.
      device_batches: `device_data.DeviceBatches` when the distillation images are drawn
        on the device (then `batches` is unused).
      schedule: the run's phases (set by `run_schedule`).
      reconstruct_quantize: reconstruction fits the predictor fake-quantized this way.
      temporary: the workdir is deleted after the run (its checkpoints are not kept).
      saved: the newest checkpoint step of this run (set by `run_schedule`).
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
    metrics: object = None
    device_batches: object = None
    schedule: list = dataclasses.field(default_factory=list)
    reconstruct_quantize: str = 'none'
    temporary: bool = False
    saved: dict = dataclasses.field(default_factory=dict)


def _pct(value) -> str:
    return '-' if value is None else f'{value:.2f} %'


def _check_finite(ctx, config, metrics: dict, phase: Phase, index: int, step: int):
    for name, value in metrics.items():
        value = float(value)
        if not np.isfinite(value):
            section = 'reconstruct' if phase.kind == 'reconstruct' else 'distill'
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
                f'(learning rate {lr:.3g}); {kept}. Lower {section}.learning_rate, or check '
                'the network and data for NaN or inf'
            )


def _for_phase(ctx, phase: Phase):
    """`ctx` with the predictor module of `phase`'s width."""
    pmodel = ctx.pmodel.clone(hidden=phase.hidden)
    setup = ctx.setup and dataclasses.replace(ctx.setup, predictor=pmodel)
    return dataclasses.replace(ctx, pmodel=pmodel, setup=setup)


def run_schedule(ctx: Context, config, schedule: list[Phase]):
    """Runs (or resumes) `schedule`.

    Returns:
      (final PredictorState, list of per-phase records with kind, steps, seconds,
       top1, rmse, the predictor's hidden width and intermediate evals).
    """
    width = first_hidden(config, schedule)
    tx = optimizer(config, schedule, None)  # any phase's: they share one state structure
    state = rounds.fresh_state(
        ctx.pmodel.clone(hidden=width), ctx.input_dim, ctx.predictor_seed, tx
    )
    round_target = ctx.problem.target
    ckpt = checkpoints.RunCheckpointer(f'{ctx.workdir}/checkpoints', log=ctx.log)
    position = {'phase': 0, 'step': 0, 'records': []}

    def like(meta):  # the checkpoint's arrays, as its position in the schedule shapes them
        if meta.get('schedule') != [dataclasses.asdict(p) for p in schedule]:
            raise ValueError(
                f'{ctx.workdir} holds a run with another schedule '
                f'{meta.get("schedule")}; use a new --workdir'
            )
        held = rounds.held_width(schedule, meta)
        if held == width:
            return {'state': state, 'round_target': round_target}
        pmodel = ctx.pmodel.clone(hidden=held)
        return {
            'state': rounds.fresh_state(pmodel, ctx.input_dim, 0, tx),
            'round_target': round_target,
        }

    restored = ckpt.restore_latest(like)
    if restored is not None:
        arrays, position = restored
        state, round_target = arrays['state'], arrays['round_target']
        ctx.saved['step'] = ckpt.latest_step()
        ctx.log(
            f'resuming from checkpoint {ckpt.latest_step()}: phase {position["phase"]}, '
            f'step {position["step"]} of it'
        )
    records = list(position['records'])
    ctx = dataclasses.replace(
        ctx, schedule=schedule, metrics=ctx.metrics or metrics_lines.MetricWriter(None)
    )
    if ctx.mesh is not None:
        state = sharding.place_state(state, ctx.mesh)
        round_target = sharding.replicate(round_target, ctx.mesh)
        ctx = dataclasses.replace(
            ctx,
            problem=sharding.replicate(ctx.problem, ctx.mesh),
            frozen=None if ctx.frozen is None else sharding.replicate(ctx.frozen, ctx.mesh),
        )

    def save(phase_index, step_in_phase, state):
        meta = {
            'phase': phase_index,
            'step': step_in_phase,
            'records': records,
            'schedule': [dataclasses.asdict(p) for p in schedule],
        }
        ckpt.save(int(state.step), {'state': state, 'round_target': round_target}, meta)
        ctx.saved['step'] = int(state.step)

    with interrupts.catch(ctx.log) as stop:
        for index, phase in enumerate(schedule):
            if index < position['phase']:
                continue
            tx = optimizer(config, schedule, index)
            phase_ctx = _for_phase(ctx, phase)
            first = position['step'] if index == position['phase'] else 0
            if first == 0:
                state, round_target = _start_phase(
                    phase_ctx, config, phase, state, round_target, tx
                )
                if ctx.mesh is not None:  # a fresh predictor or optimizer state lands on one device
                    state = sharding.place_state(state, ctx.mesh)
                    round_target = sharding.replicate(round_target, ctx.mesh)
            state, record = _run_phase(
                phase_ctx, config, phase, index, first, state, round_target, tx, stop, save
            )
            records.append({**record, 'hidden': phase.hidden})
            save(index + 1, 0, state)
            if stop.requested:
                raise Preempted(
                    f'{stop.requested}: checkpoint written after {phase.label} in '
                    f'{ctx.workdir}; run the same command again to resume'
                )
    ckpt.close()
    return state, records


def _start_phase(ctx, config, phase: Phase, state, round_target, tx: optim.PhaseSwitch):
    """Phase-start actions: make the phase's optimizer the active one; for a
    reconstruction round, also choose its target and predictor (`rounds.start_round`:
    round r > 1 fits round r - 1's rebuild with a fresh predictor of its width).
    """
    state = state.replace(opt_state=optim.select_phase(state.opt_state, phase.kind, tx))
    if phase.kind != 'reconstruct':
        return state, round_target
    return rounds.start_round(
        state,
        phase,
        ctx.pmodel,
        ctx.problem,
        input_dim=ctx.input_dim,
        predictor_seed=ctx.predictor_seed,
        tx=tx,
        restart=restarts(config, phase),
    )


def _run_phase(ctx, config, phase, index, first, state, round_target, tx, stop, save):
    problem = dataclasses.replace(ctx.problem, target=round_target)
    timer = {'device': 0.0, 'apart': 0.0}  # seconds in device calls; in evals and saves
    step = phase_steps.make_step(ctx, config, phase, first, problem, tx, timer, state)
    # Plain ints: a ConfigDict attribute read costs microseconds, and the loop is per step.
    log_every, eval_every = config.log_every, config.eval_every
    checkpoint_every = config.checkpoint_every
    progress = progress_lines.Progress(phase.steps, phase.label, ctx.log, every=log_every)
    prefix = 'recon' if phase.kind == 'reconstruct' else 'distill'
    evals = []
    start = time.time()
    compile_seconds = eval_seconds = 0.0
    last_step, last_time = first + 1, None  # rates exclude compilation and evaluation
    if first:
        ctx.log(f'{phase.label}: continuing at step {first}/{phase.steps}')
    # At most one step runs ahead of the host (two in flight); on a multi-device CPU mesh
    # none: XLA:CPU over simulated devices deadlocked at a collective's rendezvous with many
    # steps queued (seen in teacher training and at a reconstruction start on 8 devices).
    cpu_mesh = ctx.mesh is not None and ctx.mesh.size > 1 and jax.devices()[0].platform == 'cpu'
    previous = None
    for k in range(first + 1, phase.steps + 1):
        state, metrics = step(state, k)
        wait = time.perf_counter()
        jax.block_until_ready(metrics if cpu_mesh else previous)
        timer['device'] += time.perf_counter() - wait
        previous = metrics
        if k == first + 1:  # the first call compiles: time it apart from the steps
            jax.block_until_ready(metrics)
            compile_seconds = time.time() - start
            last_time = time.time()
            timer['device'] = 0.0
        if k % log_every == 0 or k == phase.steps:
            wait = time.perf_counter()  # waiting for the device is not host time
            jax.block_until_ready(metrics)
            timer['device'] += time.perf_counter() - wait
            _check_finite(ctx, config, metrics, phase, index, k)
            progress.update(k - first, {n: v for n, v in metrics.items()}, force=True)
            now = time.time()
            rate = (k - last_step) / (now - last_time) if k > last_step else None
            last_step, last_time = k, now
            ctx.metrics.write(
                int(state.step),
                {
                    **metrics,
                    f'{prefix}/lr': learning_rate(config, ctx.schedule, index, k),
                    f'{prefix}/steps_per_second': rate,
                },
            )
        if eval_every and k % eval_every == 0 and k < phase.steps:
            eval_start = time.time()
            evals.append({'step': k, 'top1': ctx.evaluate(state.pparams)})
            ctx.log(f'{phase.label} step {k}: eval/top1_reconstructed {_pct(evals[-1]["top1"])}')
            ctx.metrics.write(int(state.step), {'eval/top1_reconstructed': evals[-1]['top1']})
            eval_seconds += time.time() - eval_start
            last_time += time.time() - eval_start
            timer['apart'] += time.time() - eval_start
        periodic = checkpoint_every and k % checkpoint_every == 0
        if k < phase.steps and (stop.requested or periodic):
            save_start = time.time()
            _check_finite(ctx, config, metrics, phase, index, k)
            save(index, k, state)
            timer['apart'] += time.time() - save_start
            if stop.requested:
                raise Preempted(
                    f'{stop.requested}: checkpoint written at {phase.label} step {k} in '
                    f'{ctx.workdir}; run the same command again to resume'
                )
    wait = time.perf_counter()  # the steps still queued on the device are device time
    jax.block_until_ready(state)
    timer['device'] += time.perf_counter() - wait
    seconds = time.time() - start
    top1 = ctx.evaluate(state.pparams)
    rmse = reconstruction.full_rmse(ctx.pmodel, state.pparams, ctx.problem)
    ctx.metrics.write(int(state.step), {'eval/top1_reconstructed': top1, 'recon/rmse': rmse})
    done = phase.steps - first
    timed = seconds - compile_seconds - eval_seconds
    host = timed - timer['device'] - (timer['apart'] - eval_seconds)
    record = {
        'kind': phase.kind,
        'round': phase.round,
        'cycle': phase.cycle,
        'steps': phase.steps,
        'seconds': seconds,
        'step_ms': 1000 * seconds / max(done, 1),
        'compile_seconds': compile_seconds,
        'steps_per_second': (done - 1) / timed if done > 1 and timed > 0 else None,
        # Loop time per step outside the jitted step (input, host-to-device copies,
        # logging), excluding compilation, evaluations and checkpoint saves.
        'host_ms_per_step': 1000 * max(host, 0.0) / (done - 1) if done > 1 else None,
        'top1': top1,
        'rmse': rmse,
        'evals': evals,
    }
    if first:
        record['resumed_at'] = first
    ctx.log(
        f'{phase.label} done: {phase.steps} steps, {seconds:.1f}s, '
        f'eval/top1_reconstructed {_pct(top1)}, recon/rmse {rmse:.6f} (vs original weights)'
    )
    return state, record

"""One run, from its description to its artefact: prepare, run, store.

  plan = prepare(description)        # kernel table, phases, re-estimation, the loop's context
  outcome = run(plan)                # the training loop (resumable): records, final state
  artifact = store(outcome)          # the `Compressed` artefact

Both front doors call these three in turn (`job`, `library`) on a `RunDescription`.
`prepare` builds the kernel table, measures the original network, chooses the
re-estimation images and the distillation inputs; `run` runs (or resumes) the schedule;
`store` makes the artefact. With `predictor.quantize` set, the artefact stores the rounded
predictor (and its copied float32 leaves as float16): every evaluation after the
reconstruction rounds measures the network rebuilt from exactly those stored values
(`stored.as_stored`, `phases.Context.seen`), so the last phase's numbers are the artefact's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nrnp import errors
from nrnp.artifact import compressed
from nrnp.core import predictor
from nrnp.errors import ConfigError
from nrnp.nets import layers, layouts, loading, models
from nrnp.pipeline import calibration, problem, stored
from nrnp.pipeline.description import RunDescription
from nrnp.reporting import metrics
from nrnp.reporting.reports import percent
from nrnp.training import distillation, evaluation, keeping, loop, phases, reconstruction, schedule

HELDOUT_BATCH = 250


@dataclasses.dataclass
class Plan:
    """A prepared run (what `prepare` returns).

    Attributes:
      description: the run's `RunDescription`.
      prep: its `problem.Prepared` (layout, table, coordinates, encodings, predictor).
      settings: the loop's `schedule.Settings` (the phases among them).
      ctx: the phases' `phases.Context`.
      init: the 'init' record (the untrained predictor).
      top1_original: the original network's top-1 (None without test images).
    """

    description: RunDescription
    prep: problem.Prepared
    settings: schedule.Settings
    ctx: phases.Context
    init: dict
    top1_original: float | None


@dataclasses.dataclass
class Outcome:
    """What `run` returns: its plan, the kept phase's predictor params, the records ('init'
    first, then one per phase; `records[kept['index']]` measured the network the artefact
    rebuilds), the target's variables with the kept phase's BatchNorm statistics, and
    `kept` (`training.keeping.choice`: which phase, why, every phase's held-out score)."""

    plan: Plan
    pparams: dict
    records: list
    variables: dict
    kept: dict


def prepare(d: RunDescription) -> Plan:
    """Everything a run computes before its first step (deterministic: a resumed run
    prepares the same), and the 'init' record."""
    config, variables, log = d.config, d.variables, d.log
    check_finite(variables)
    known = d.model is not None and d.data.input_shape is not None
    depthwise = layers.depthwise_kernels(d.model, variables, d.data.input_shape) if known else ()
    prep = problem.prepare(variables['params'], config, log, depthwise)
    writer = metrics.MetricWriter(d.workdir, enabled=not d.temporary and jax.process_index() == 0)
    try:
        top1_original = None
        if d.data.top1 is not None and d.top1_original is not None:
            top1_original = d.top1_original
            probed = d.budget is not None and d.budget.get('top1_original') == top1_original
            whence = 'the budget probe' if probed else 'the earlier run in the workdir'
            log(f'eval/top1_original {top1_original:.2f} % ({whence})')
        elif d.data.top1 is not None:
            top1_original = d.data.top1(variables)
            log(f'eval/top1_original {top1_original:.2f} %')
            writer.write(0, {'eval/top1_original': top1_original})
        reestimate = calibration.reestimation(
            config, d.model, variables, d.data.input_shape, d.data.calibration_images, d.mesh, log
        )
        settings = schedule.settings(config, batch_norm=reestimate is not None)
        ctx = _context(d, prep, settings, reestimate, writer)
        init = _init_record(ctx, prep, settings.phases, config.eval_init)
    except BaseException:
        writer.close()
        raise
    shown = ', '.join(f'{p.label} ({p.steps} steps)' for p in settings.phases)
    log('schedule: ' + (shown or 'no steps (measuring the untrained predictor only)'))
    return Plan(d, prep, settings, ctx, init, top1_original)


def run(plan: Plan) -> Outcome:
    """Runs (or resumes) the plan's schedule."""
    try:
        carry, records = loop.run_schedule(plan.ctx, plan.settings)
    finally:
        plan.ctx.metrics.close()
    kept = keeping.choice(plan.description.config.keep, carry, records)
    pparams, batch_stats = keeping.kept_arrays(kept, carry, records)
    plan.description.log(f'kept: {kept["phase"]} ({kept["reason"]})')
    variables = plan.description.variables
    if batch_stats is not None:  # the re-estimated statistics replace the stored
        variables = {**variables, 'batch_stats': jax.device_get(batch_stats)}
    return Outcome(plan, pparams, [plan.init, *records], variables, kept)


def store(outcome: Outcome) -> compressed.Compressed:
    """The run's `Compressed` artefact (the predictor stored as `predictor.quantize` says)."""
    plan = outcome.plan
    return stored.make_artifact(
        outcome.variables,
        plan.prep,
        plan.description.config,
        outcome.pparams,
        outcome.records,
        plan.top1_original,
        bare=plan.description.bare,
        kept=outcome.kept['index'],
    )


def check_finite(variables: dict) -> None:
    """Raises errors.NonFiniteError naming the leaves of `variables` holding NaN or inf."""
    bad = [
        jax.tree_util.keystr(path, simple=True, separator='/')
        for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]
        if np.asarray(leaf).dtype.kind == 'f' and not np.isfinite(np.asarray(leaf)).all()
    ]
    if bad:
        shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
        raise errors.NonFiniteError(
            f'the network to compress holds NaN or infinite values in {shown}: fix or '
            'retrain it (nothing nrnp does can rebuild them)'
        )


def _context(d: RunDescription, prep, settings, reestimate, writer) -> phases.Context:
    """The phases' `Context`: the problem, how a predictor is rebuilt and measured (as the
    artefact stores it), the distillation inputs."""
    kept = stored.as_stored(d.variables, prep.layout, d.config)  # what the artefact copies

    def rebuild(pparams):
        pmodel = reconstruction.predictor_for(prep.pmodel, pparams)  # rounds change widths
        return predictor.reconstruct(pmodel, prep.layout, pparams, prep.encoded, kept['params'])

    def rebuilt(pparams, batch_stats=None):  # the network the artefact would rebuild
        stats = (
            {}
            if batch_stats is None
            else {'batch_stats': stored.as_stored(batch_stats, config=d.config)}
        )
        return {**kept, **stats, 'params': rebuild(pparams)}

    def evaluate(pparams, batch_stats=None):
        return None if d.data.top1 is None else d.data.top1(rebuilt(pparams, batch_stats))

    distills = any(p.kind == 'distill' for p in settings.phases)
    setup, frozen = distillation_setup(d, prep) if distills else (None, None)
    return phases.Context(
        pmodel=prep.pmodel,
        input_dim=prep.input_dim,
        predictor_seed=prep.predictor_seed,
        problem=prep.problem,
        setup=setup,
        frozen=frozen,
        batches=d.data.train_batches,
        device_batches=d.data.device_batches,
        evaluate=evaluate,
        keys=prep.keys,
        log=d.log,
        workdir=d.workdir,
        mesh=d.mesh,
        metrics=writer,
        scheme=stored.scheme_of(d.config),
        batch_stats=d.variables['batch_stats'] if reestimate is not None else None,
        reestimate=reestimate,
        rebuild=rebuild,
        temporary=d.temporary,
        score=_heldout_score(d, rebuilt),
    )


def _heldout_score(d: RunDescription, rebuilt) -> Callable | None:
    """`(pparams, batch_stats) -> percent`: the rebuilt network's top-1 agreement with the
    original network on `calibration.HELDOUT` training images (`Data.heldout_images`, never the test
    images; the original's predictions made once, on first use); None without them."""
    images = d.data.heldout_images
    if images is None or d.model is None:
        return None
    held = calibration.HELDOUT
    count, size = calibration.batch_plan(held, HELDOUT_BATCH, images.available, d.mesh)
    made = {}

    def score(pparams, batch_stats=None):
        if not made:
            made['batches'] = images(count, size)
            made['classes'] = evaluation.predictions(d.model, d.variables, made['batches'])
        variables = rebuilt(pparams, batch_stats)
        return evaluation.agreement(d.model, variables, made['batches'], made['classes'], d.mesh)

    score.images = count * size
    return score


def _init_record(ctx: phases.Context, prep, schedule_phases, eval_init: bool) -> dict:
    """The untrained predictor's record (its top-1 with `eval_init`); without any phase
    (measuring only) it is the result, measured as stored."""
    first = prep.pmodel.clone(hidden=schedule.first_hidden(schedule_phases, prep.pmodel.hidden))
    pparams = predictor.init_predictor(first, prep.input_dim, prep.predictor_seed)
    seen = pparams if schedule_phases else ctx.seen('init', pparams)
    init = {
        'kind': 'init',
        'steps': 0,
        'seconds': 0.0,
        'top1': ctx.evaluate(seen) if eval_init or not schedule_phases else None,
        'rmse': reconstruction.full_rmse(first, pparams, prep.problem),
        'hidden': first.hidden,
    }
    ctx.log(f'untrained predictor: top1 {percent(init["top1"])}, rmse {init["rmse"]:.6f}')
    ctx.metrics.write(0, {'eval/top1_reconstructed': init['top1'], 'recon/rmse': init['rmse']})
    return init


def distillation_setup(d: RunDescription, prep) -> tuple[distillation.DistillSetup, object]:
    """The static `DistillSetup` and the `Frozen` arrays of the distillation phase."""
    config, model, variables = d.config, d.model, d.variables
    data, dist = d.data, config.distill
    if (data.train_batches is None and data.device_batches is None) or data.input_shape is None:
        raise ConfigError('distillation needs training images: give data or distill.steps=0')
    teacher_model, teacher_vars = model, variables
    if dist.teacher_checkpoint:
        name = dist.teacher_model or config.teacher.model
        teacher_model = models.build_model(
            name, config.data.num_classes, shortcut=dist.teacher_shortcut
        )
        teacher_vars = loading.load_target(
            dist.teacher_checkpoint,
            teacher_model,
            data.input_shape,
            download=config.data.download,
            log=d.log,
            flags=layouts.DISTILL_TEACHER_FLAGS,
        )
        d.log(f'distillation teacher: {name} from {dist.teacher_checkpoint}')
    use_features = dist.fm_weight != 0
    if use_features:
        _check_feature_maps(model, variables, teacher_model, teacher_vars, data.input_shape)
    setup = distillation.DistillSetup(
        predictor=prep.pmodel,
        target=model,
        teacher=teacher_model,
        layout=prep.layout,
        batch_size=min(dist.kernel_batch_size, prep.layout.num_kernels),
        magnitude_fraction=dist.magnitude_fraction,
        grad_through=dist.grad_through,
        temperature=dist.temperature,
        use_features=use_features,
        mesh=d.mesh,
        quantize=stored.scheme_of(config),  # it trains through the stored rounding
        batch_norm=dist.batch_norm,
    )
    frozen = distillation.Frozen(
        params=stored.as_stored(variables, prep.layout, config)['params'],  # the student's
        batch_stats=variables['batch_stats'],
        teacher_variables=teacher_vars,
    )
    return setup, frozen


def _check_feature_maps(model, variables, teacher_model, teacher_vars, input_shape) -> None:
    x = jnp.zeros(input_shape, jnp.float32)
    s_maps = jax.eval_shape(lambda: models.apply_with_features(model, variables, x)[1])
    t_maps = jax.eval_shape(lambda: models.apply_with_features(teacher_model, teacher_vars, x)[1])
    if [m.shape for m in s_maps] != [m.shape for m in t_maps]:
        raise ConfigError(
            'distill.fm_weight > 0 needs teacher feature maps matching the target: '
            f'{len(t_maps)} teacher maps vs {len(s_maps)} target maps. '
            'Set --config.distill.fm_weight=0 for a different teacher architecture.'
        )

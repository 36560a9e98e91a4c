"""Assembling a run: target + kernel table + data + schedule -> a trained `Compressed`.

  outcome = compress_target(variables, model, config, workdir=W, mesh=mesh, top1=top1_fn,
                            train_batches=train_fn, calibration_images=images_fn, log=print)
  outcome.compressed.save('net.nrnp'); outcome.records   # per-phase top-1, RMSE, times

The one function both entry points call: the CLI (`job.run`, which builds the target
and the data from the config) and the library (`library.compress`, which takes them
from the caller). It prepares the kernel table, measures the original network,
builds the distillation inputs, runs (or resumes) the schedule and makes the artefact.
With `predictor.quantize` set, the artefact stores the rounded predictor (and its copied
float32 leaves as float16): every evaluation after the reconstruction rounds measures the
network rebuilt from exactly those stored values (`stored.as_stored`, `Context.seen`), so
the last phase's numbers are the artefact's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from nrnp.artifact import compressed
from nrnp.core import predictor
from nrnp.errors import ConfigError
from nrnp.nets import layers, layouts, loading, models
from nrnp.pipeline import calibration, inputs, problem, stored
from nrnp.reporting import metrics
from nrnp.training import distillation, loop, reconstruction, run_state, schedule


@dataclasses.dataclass
class Outcome:
    """What `compress_target` returns.

    Attributes:
      compressed: the artefact.
      prep: the prepared problem (layout, table, coordinates, encodings, predictor).
      state: the final `reconstruction.PredictorState`.
      records: the 'init' record, then one per phase (kind, steps, seconds, top1, rmse),
        the last of which measured the network the artefact rebuilds.
      top1_original: the original network's top-1 on the test batches (None without them).
    """

    compressed: compressed.Compressed
    prep: problem.Prepared
    state: reconstruction.PredictorState
    records: list
    top1_original: float | None


def compress_target(
    variables: dict,
    model,
    config,
    *,
    workdir: str,
    mesh,
    input_shape: tuple[int, ...] | None = None,
    top1: Callable | None = None,
    train_batches: Callable | None = None,
    device_batches=None,
    calibration_images: Callable | None = None,
    bare: bool = False,
    write_metrics: bool = True,
    temporary: bool = False,
    log: Callable[[str], None] = print,
) -> Outcome:
    """Compresses `variables` as `config` says and returns the artefact and the history.

    Args:
      variables: `{'params', 'batch_stats', ...}` of the target.
      model: its Linen module (None for data-free runs without test batches).
      config: the run's ConfigDict (already validated).
      workdir: where checkpoints go; a rerun with the same arguments resumes.
      mesh: the device mesh (`sharding.make_mesh`).
      input_shape: `(1, H, W, C)`, needed for distillation.
      top1: `variables -> percent` on the test images (`evaluation.top1_batches` over
        host batches, or `device_data.top1` on the device), or None: no accuracy.
      train_batches: `(start_step, cycle) -> iterator` of distillation image batches
        (this process's rows), needed when the schedule distils on host batches.
      device_batches: `device_data.DeviceBatches`: the distillation images are drawn
        and augmented on the device instead (`train_batches` is then unused).
      calibration_images: unlabeled training images for BatchNorm re-estimation
        (`calibration.split_images` or `array_images`), or None: noise or synthetic
        images when `recalibrate` is on.
      bare: the caller passed bare params (the artefact then rebuilds bare params).
      write_metrics: write TensorBoard events and metrics.jsonl into `workdir`.
      temporary: `workdir` is deleted afterwards (messages do not point at it).
      log: progress sink.

    Returns:
      The `Outcome`.
    """
    inputs.check_finite(variables)
    params = variables['params']
    known = model is not None and input_shape is not None
    depthwise = layers.depthwise_kernels(model, variables, input_shape) if known else ()
    prep = problem.prepare(params, config, log, depthwise)
    writer = metrics.MetricWriter(workdir, enabled=write_metrics and jax.process_index() == 0)

    top1_original = None
    if top1 is not None:
        top1_original = top1(variables)
        log(f'eval/top1_original {top1_original:.2f} %')
        writer.write(0, {'eval/top1_original': top1_original})

    kept = stored.as_stored(variables, prep.layout, config)  # what the artefact copies

    def rebuild(pparams):
        pmodel = reconstruction.predictor_for(prep.pmodel, pparams)  # rounds change widths
        return predictor.reconstruct(pmodel, prep.layout, pparams, prep.encoded, kept['params'])

    def evaluate(pparams, batch_stats=None):
        if top1 is None:
            return None
        stats = {} if batch_stats is None else {'batch_stats': stored.as_stored(batch_stats)}
        return top1({**kept, **stats, 'params': rebuild(pparams)})

    recal = calibration.make(
        config,
        model,
        variables,
        input_shape=input_shape,
        train_images=calibration_images,
        mesh=mesh,
        log=log,
    )
    phases = schedule.build_schedule(config, batch_norm=recal is not None)
    scheme = stored.scheme_of(config)
    setup = frozen = None
    if any(p.kind == 'distill' for p in phases):
        if (train_batches is None and device_batches is None) or input_shape is None:
            raise ConfigError('distillation needs training images: give data or distill.steps=0')
        setup, frozen = distillation_setup(
            config, model, variables, prep.pmodel, prep.layout, input_shape, mesh, log
        )
        setup = dataclasses.replace(setup, quantize=scheme)
    seen = lambda p: p if phases else stored.view(p, scheme)  # no phase: the init is stored
    first = prep.pmodel.clone(hidden=schedule.first_hidden(config, phases))
    pparams = predictor.init_predictor(first, prep.input_dim, prep.predictor_seed)
    init = {
        'kind': 'init',
        'steps': 0,
        'seconds': 0.0,
        # Without any step (measuring only), the untrained predictor is the result.
        'top1': evaluate(seen(pparams)) if config.eval_init or not phases else None,
        'rmse': reconstruction.full_rmse(first, pparams, prep.problem),
        'hidden': first.hidden,
    }
    shown = '-' if init['top1'] is None else f'{init["top1"]:.2f} %'
    log(f'untrained predictor: top1 {shown}, rmse {init["rmse"]:.6f}')
    writer.write(0, {'eval/top1_reconstructed': init['top1'], 'recon/rmse': init['rmse']})
    ctx = run_state.Context(
        pmodel=prep.pmodel,
        input_dim=prep.input_dim,
        predictor_seed=prep.predictor_seed,
        problem=prep.problem,
        setup=setup,
        frozen=frozen,
        batches=train_batches,
        device_batches=device_batches,
        evaluate=evaluate,
        keys=prep.keys,
        log=log,
        workdir=workdir,
        mesh=mesh,
        metrics=writer,
        scheme=scheme,
        batch_stats=variables['batch_stats'] if recal is not None else None,
        recalibrate=None if recal is None else lambda pparams: recal(rebuild(pparams)),
        recalibration={} if recal is None else recal.info,
        temporary=temporary,
    )
    shown = ', '.join(f'{p.label} ({p.steps} steps)' for p in phases)
    log('schedule: ' + (shown or 'no steps (measuring the untrained predictor only)'))
    try:
        carry, records = loop.run_schedule(ctx, config, phases)
        state, records = carry.state, [init, *records]
        final = variables
        if carry.batch_stats is not None:  # the re-estimated statistics replace the stored
            final = {**variables, 'batch_stats': jax.device_get(carry.batch_stats)}
        artifact = stored.make_artifact(
            final, prep, config, state.pparams, records, top1_original, bare=bare
        )
    finally:
        writer.close()
    return Outcome(artifact, prep, state, records, top1_original)


def distillation_setup(config, model, variables, pmodel, layout, input_shape, mesh, log):
    """The static `DistillSetup` and the `Frozen` arrays of the distillation phase."""
    d = config.distill
    teacher_model, teacher_vars = model, variables
    if d.teacher_checkpoint:
        name = d.teacher_model or config.teacher.model
        teacher_model = models.build_model(
            name, config.data.num_classes, shortcut=d.teacher_shortcut
        )
        teacher_vars = loading.load_target(
            d.teacher_checkpoint,
            teacher_model,
            input_shape,
            download=config.data.download,
            log=log,
            flags=layouts.DISTILL_TEACHER_FLAGS,
        )
        log(f'distillation teacher: {name} from {d.teacher_checkpoint}')
    elif d.teacher_model:
        raise ConfigError('distill.teacher_model is set but distill.teacher_checkpoint is empty')
    use_features = d.fm_weight != 0
    if use_features:
        x = jnp.zeros(input_shape, jnp.float32)
        s_maps = jax.eval_shape(lambda: models.apply_with_features(model, variables, x)[1])
        t_maps = jax.eval_shape(
            lambda: models.apply_with_features(teacher_model, teacher_vars, x)[1]
        )
        if [m.shape for m in s_maps] != [m.shape for m in t_maps]:
            raise ConfigError(
                'distill.fm_weight > 0 needs teacher feature maps matching the target: '
                f'{len(t_maps)} teacher maps vs {len(s_maps)} target maps. '
                'Set --config.distill.fm_weight=0 for a different teacher architecture.'
            )
    setup = distillation.DistillSetup(
        predictor=pmodel,
        target=model,
        teacher=teacher_model,
        layout=layout,
        batch_size=min(d.kernel_batch_size, layout.num_kernels),
        magnitude_fraction=d.magnitude_fraction,
        grad_through=d.grad_through,
        temperature=d.temperature,
        stable_kd=d.stable_kd,
        use_features=use_features,
        mesh=mesh,
        batch_norm=d.batch_norm,
    )
    frozen = distillation.Frozen(
        params=stored.as_stored(variables, layout, config)['params'],  # the student's copies
        batch_stats=variables['batch_stats'],
        teacher_variables=teacher_vars,
    )
    return setup, frozen

"""Assembling a run: target + kernel table + data + schedule -> a trained `Compressed`.

  outcome = compress_target(variables, model, config, workdir=W, mesh=mesh,
                            test_batches=test_fn, train_batches=train_fn, log=print)
  outcome.compressed.save('net.nrnp'); outcome.records   # per-phase top-1, RMSE, times

The one function both entry points call: the CLI (`job.run`, which builds the target
and the data from the config) and the library (`library.compress`, which takes them
from the caller). It prepares the kernel table, measures the original network,
builds the distillation inputs, runs (or resumes) the schedule and makes the artefact.
With `predictor.quantize` set, the artefact stores the rounded predictor and a last
'quantize' record measures the network it rebuilds: the run's final numbers.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nrnp.artifact import compressed
from nrnp.core import coordinates, predictor
from nrnp.errors import ConfigError
from nrnp.nets import layers, layouts, loading, models, trees
from nrnp.pipeline import inputs, problem
from nrnp.reporting import metrics
from nrnp.training import distillation, loop, reconstruction, schedule


@dataclasses.dataclass
class Outcome:
    """What `compress_target` returns.

    Attributes:
      compressed: the artefact.
      prep: the prepared problem (layout, table, coordinates, encodings, predictor).
      state: the final `reconstruction.PredictorState`.
      records: the 'init' record, then one per phase (kind, steps, seconds, top1, rmse),
        then with `predictor.quantize` a 'quantize' record (the stored predictor's numbers).
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
    bare: bool = False,
    write_metrics: bool = True,
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
      bare: the caller passed bare params (the artefact then rebuilds bare params).
      write_metrics: write TensorBoard events and metrics.jsonl into `workdir`.
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

    def evaluate(pparams):
        if top1 is None:
            return None
        pmodel = reconstruction.predictor_for(prep.pmodel, pparams)  # rounds change widths
        rebuilt = predictor.reconstruct(pmodel, prep.layout, pparams, prep.encoded, params)
        return top1({**variables, 'params': rebuilt})

    phases = schedule.build_schedule(config)
    setup = frozen = None
    if any(p.kind == 'distill' for p in phases):
        if (train_batches is None and device_batches is None) or input_shape is None:
            raise ConfigError('distillation needs training images: give data or distill.steps=0')
        setup, frozen = distillation_setup(
            config, model, variables, prep.pmodel, prep.layout, input_shape, mesh, log
        )
        setup = dataclasses.replace(setup, quantize=aware_mode(config, 'distill'))
    first = prep.pmodel.clone(hidden=schedule.first_hidden(config, phases))
    pparams = predictor.init_predictor(first, prep.input_dim, prep.predictor_seed)
    init = {
        'kind': 'init',
        'steps': 0,
        'seconds': 0.0,
        'top1': evaluate(pparams) if config.eval_init else None,
        'rmse': reconstruction.full_rmse(first, pparams, prep.problem),
        'hidden': first.hidden,
    }
    shown = '-' if init['top1'] is None else f'{init["top1"]:.2f} %'
    log(f'untrained predictor: top1 {shown}, rmse {init["rmse"]:.6f}')
    writer.write(0, {'eval/top1_reconstructed': init['top1'], 'recon/rmse': init['rmse']})
    ctx = loop.Context(
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
        reconstruct_quantize=aware_mode(config, 'reconstruct'),
    )
    log('schedule: ' + ', '.join(f'{p.label} ({p.steps} steps)' for p in phases))
    try:
        state, records = loop.run_schedule(ctx, config, phases)
        records = [init, *records]
        artifact = make_artifact(
            variables, prep, config, state.pparams, records, top1_original, bare=bare
        )
        if artifact.quantize != 'none':
            record = quantized_record(artifact, prep, evaluate, log)
            writer.write(int(state.step), {'eval/top1_stored': record['top1']})
            records.append(record)
            artifact.history = records
            artifact.metrics.update(
                top1_reconstructed=record['top1'],
                reconstruction_rmse=record['rmse'],
                top1_reconstructed_fp32=records[-2]['top1'],
                reconstruction_rmse_fp32=records[-2]['rmse'],
            )
    finally:
        writer.close()
    return Outcome(artifact, prep, state, records, top1_original)


def aware_mode(config, phase: str) -> str:
    """The rounding `phase` ('distill' or 'reconstruct') trains through ('none' = float)."""
    aware = config.predictor.quantize_aware
    on = aware == 'all' or (aware == 'distill' and phase == 'distill')
    return config.predictor.quantize if on else 'none'


def quantized_record(artifact, prep, evaluate, log) -> dict:
    """Top-1 and RMSE of the network the artefact rebuilds (its dequantized predictor)."""
    start = time.time()
    pparams = jax.tree.map(jnp.asarray, artifact.predictor_params)
    record = {
        'kind': 'quantize',
        'mode': artifact.quantize,
        'steps': 0,
        'top1': evaluate(pparams),
        'rmse': reconstruction.full_rmse(prep.pmodel, pparams, prep.problem),
    }
    record['seconds'] = time.time() - start
    shown = '-' if record['top1'] is None else f'{record["top1"]:.2f} %'
    log(
        f'stored predictor ({artifact.quantize}): eval/top1_reconstructed {shown}, '
        f'recon/rmse {record["rmse"]:.6f}'
    )
    return record


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
    )
    frozen = distillation.Frozen(
        params=variables['params'],
        batch_stats=variables['batch_stats'],
        teacher_variables=teacher_vars,
    )
    return setup, frozen


def make_artifact(
    variables, prep, config, pparams, history, top1_original=None, *, bare: bool = False
) -> compressed.Compressed:
    """The `Compressed` artefact of a finished run (shared by `compress` and the CLI).

    The predictor is stored as `predictor.quantize` says; the artefact's
    `predictor_params` are then the dequantized weights.

    Args:
      variables: the target's variables ({'params', ...} collections).
      prep: the run's `problem.Prepared`.
      config: the run's config.
      pparams: the trained predictor params.
      history: the run's phase records ('init' first).
      top1_original: the original network's top-1, when measured.
      bare: the user passed bare params (reconstruct() then returns bare params).
    """
    flat = trees.flatten_variables(variables)
    represented = {('params', *layer.path) for layer in prep.layout.layers}
    enc = config.encoding
    return compressed.Compressed(
        leaves=[
            compressed.LeafSpec(path, tuple(v.shape), str(v.dtype), path in represented)
            for path, v in flat.items()
        ],
        copied={path: v for path, v in flat.items() if path not in represented},
        layout=prep.layout,
        ordering=config.kernels.ordering,
        positions=(
            []
            if config.kernels.ordering == 'none'
            else coordinates.layer_positions(prep.layout, prep.coords)
        ),
        encoding={
            'kind': enc.kind,
            'levels': enc.levels,
            'base': enc.base,
            'features': enc.features,
            'scale': enc.scale,
            'seed': config.seed,
        },
        predictor_settings={
            'hidden': prep.pmodel.hidden,
            'layers': config.predictor.layers,
            'init': config.predictor.init,
            'residual': config.predictor.residual,
            'input_dim': prep.input_dim,
            'quantize': config.predictor.quantize,
        },
        predictor_params=jax.tree.map(np.asarray, jax.device_get(pparams)),
        bare=bare,
        config=json.loads(config.to_json_best_effort()),
        history=history,
        metrics={
            'top1_original': top1_original,
            'top1_reconstructed': history[-1]['top1'],
            'reconstruction_rmse': history[-1]['rmse'],
        },
    )

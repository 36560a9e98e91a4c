"""The compression problem of one target: kernel table, coordinates, encodings, predictor.

  prep = prepare(params, config, log=print)
  prep.problem      # ReconstructionProblem: encoded [N, F], target/mask [N, 9], probs [N]
  prep.pmodel, prep.input_dim, prep.predictor_seed, prep.keys

Shared by the CLI (`train.run`) and the library API (`nrnp.compress`), so both
run the same code. Reads the `kernels`, `encoding`, `predictor` and `seed`
sections of a config.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from nrnp import (
    coordinates,
    distillation,
    encodings,
    importers,
    kernels,
    models,
    phases,
    predictor,
    reconstruction,
)


@dataclasses.dataclass
class Prepared:
    """Everything computed once per target (see module docstring)."""

    layout: kernels.KernelLayout
    table: np.ndarray  # [N, 9] original rows
    mask: np.ndarray  # [N, 9]
    coords: np.ndarray  # [N, 3] int32
    encoded: jax.Array  # [N, input_dim]
    pmodel: predictor.Predictor
    input_dim: int
    predictor_seed: int
    predictor_params: int
    keys: dict
    problem: reconstruction.ReconstructionProblem
    ordering_seconds: float


def make_encoder(encoding, seed: int):
    """The encoding section as `coords [N, 3] -> [N, F]` and its width F."""
    if encoding.kind == 'nern':
        fn = functools.partial(encodings.nern_encoding, levels=encoding.levels, base=encoding.base)
        return fn, 6 * encoding.levels
    if encoding.kind == 'gaussian':
        matrix = encodings.gaussian_matrix(seed, encoding.features, encoding.scale)

        def fn(coords):
            maxima = np.asarray(coords).max(axis=0) + 1
            return encodings.gaussian_encoding(coords, maxima, matrix)

        return fn, 2 * encoding.features
    raise ValueError(f"encoding.kind must be 'nern' or 'gaussian', got {encoding.kind!r}")


def predictor_module(p) -> predictor.Predictor:
    """The predictor section as a module."""
    return predictor.Predictor(
        hidden=p.hidden, layers=p.layers, initializer=p.init, residual=p.residual
    )


def named_keys(seed: int) -> dict:
    """One root key split into named keys once (randomness is a function of seed and step)."""
    root = jax.random.key(seed)
    names = ['predictor', 'reconstruct', 'distill', 'data']
    return {name: jax.random.fold_in(root, i) for i, name in enumerate(names)}


def selection(k) -> kernels.Predicate:
    """The kernels section as the representation predicate."""
    return kernels.select_kernels(tuple(k.sizes), k.exclude, k.large, dense=k.dense)


def prepare(params, config, log=print) -> Prepared:
    """Builds the kernel table, orderings, encodings and predictor module of `params`."""
    layout = kernels.kernel_layout(params, selection(config.kernels))
    table = np.asarray(kernels.gather(layout, params))  # [N, 9]
    mask = layout.mask()  # [N, 9]
    start = time.time()
    coords = coordinates.kernel_coordinates(layout, table, config.kernels.ordering, log)
    ordering_seconds = time.time() - start
    encode, input_dim = make_encoder(config.encoding, config.seed)
    encoded = jnp.asarray(encode(coords), jnp.float32)  # [N, input_dim]
    log(
        f'kernel table: {layout.num_kernels} kernels in {len(layout.layers)} layers, '
        f'{layout.num_params} represented params; {config.kernels.ordering} ordering '
        f'{ordering_seconds:.1f}s'
    )
    pmodel = predictor_module(config.predictor)
    keys = named_keys(config.seed)
    predictor_seed = int(jax.random.randint(keys['predictor'], (), 0, 2**30))
    n_pred = predictor.num_params(
        config.predictor.hidden, input_dim, config.predictor.layers, kernels.ROW
    )
    log(
        f'predictor: hidden {config.predictor.hidden}, {config.predictor.layers} layers, '
        f'{n_pred} params, ratio {n_pred / layout.num_params:.4f}'
    )
    table_j, mask_j = jnp.asarray(table), jnp.asarray(mask)
    problem = reconstruction.ReconstructionProblem(
        encoded, table_j, mask_j, reconstruction.magnitude_probabilities(table_j, mask_j)
    )
    return Prepared(
        layout=layout,
        table=table,
        mask=mask,
        coords=coords,
        encoded=encoded,
        pmodel=pmodel,
        input_dim=input_dim,
        predictor_seed=predictor_seed,
        predictor_params=n_pred,
        keys=keys,
        problem=problem,
        ordering_seconds=ordering_seconds,
    )


def run(
    prep: Prepared,
    config,
    schedule,
    *,
    evaluate,
    workdir: str,
    setup=None,
    frozen=None,
    batches=None,
    mesh=None,
    log=print,
):
    """Evaluates the untrained predictor, then runs (or resumes) `schedule`.

    Args:
      prep: the prepared problem.
      config: the run's config (its phase sections are read by `phases`).
      schedule: `phases.build_schedule(config)`.
      evaluate: `pparams -> top1 percent` of the rebuilt net, or returning None.
      workdir: where checkpoints go.
      setup, frozen, batches: the distillation phase's inputs (None without one).
      mesh: device mesh.
      log: progress sink.

    Returns:
      (final PredictorState, records: the 'init' record, then one per phase).
    """
    pparams = predictor.init_predictor(prep.pmodel, prep.input_dim, prep.predictor_seed)
    init = {
        'kind': 'init',
        'steps': 0,
        'seconds': 0.0,
        'top1': evaluate(pparams),
        'rmse': reconstruction.full_rmse(prep.pmodel, pparams, prep.problem),
    }
    top1 = '-' if init['top1'] is None else f'{init["top1"]:.2f} %'
    log(f'untrained predictor: top1 {top1}, rmse {init["rmse"]:.6f}')
    ctx = phases.Context(
        pmodel=prep.pmodel,
        input_dim=prep.input_dim,
        predictor_seed=prep.predictor_seed,
        problem=prep.problem,
        setup=setup,
        frozen=frozen,
        batches=batches,
        evaluate=evaluate,
        keys=prep.keys,
        log=log,
        workdir=workdir,
        mesh=mesh,
    )
    log('schedule: ' + ', '.join(f'{p.label} ({p.steps} steps)' for p in schedule))
    state, records = phases.run_schedule(ctx, config, schedule)
    return state, [init, *records]


def distillation_setup(config, model, variables, pmodel, layout, input_shape, mesh, log):
    """The static `DistillSetup` and the `Frozen` arrays of the distillation phase."""
    d = config.distill
    teacher_model, teacher_vars = model, variables
    if d.teacher_checkpoint:
        name = d.teacher_model or config.teacher.model
        teacher_model = models.build_model(
            name, config.data.num_classes, shortcut=d.teacher_shortcut
        )
        teacher_vars = importers.load_target(d.teacher_checkpoint, teacher_model, input_shape)
        log(f'distillation teacher: {name} from {d.teacher_checkpoint}')
    elif d.teacher_model:
        raise ValueError('distill.teacher_model is set but distill.teacher_checkpoint is empty')
    use_features = d.fm_weight != 0
    if use_features:
        x = jnp.zeros(input_shape, jnp.float32)
        s_maps = jax.eval_shape(lambda: models.apply_with_features(model, variables, x)[1])
        t_maps = jax.eval_shape(
            lambda: models.apply_with_features(teacher_model, teacher_vars, x)[1]
        )
        if [m.shape for m in s_maps] != [m.shape for m in t_maps]:
            raise ValueError(
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

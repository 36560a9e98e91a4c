"""The compression run: load the target, build the kernel table, run the phases, report.

  report = train.run(config, workdir)     # what `python -m nrnp.main` calls

This is the only module besides `configs/` that reads a ConfigDict; everything
it calls takes explicit arguments.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nrnp import (
    coordinates,
    data,
    encodings,
    evaluation,
    kernels,
    models,
    optim,
    predictor,
    reconstruction,
    report,
    teacher,
)


class Logger:
    """Prints and appends to `workdir/log.txt`."""

    def __init__(self, workdir: str, echo=print):
        self.path = os.path.join(workdir, 'log.txt')
        self.echo = echo

    def __call__(self, message: str):
        line = f'[{time.strftime("%H:%M:%S")}] {message}'
        self.echo(line, flush=True) if self.echo is print else self.echo(line)
        with open(self.path, 'a') as f:
            f.write(line + '\n')


def dataset_label(config) -> str:
    if config.data.image_folder:
        return f'image folder {config.data.image_folder}'
    return config.data.name


def load_split(config, split: str, workdir: str) -> data.Dataset:
    """One split of the configured dataset (image folders are cached under the workdir)."""
    return data.load_dataset(
        name=config.data.name,
        split=split,
        data_dir=config.data.data_dir or None,
        image_folder=config.data.image_folder or None,
        cache_dir=os.path.join(workdir, 'cache'),
    )


def build_target(config):
    kw = {}
    if config.teacher.model.startswith('resnet') and config.teacher.model not in (
        'resnet18',
        'resnet34',
    ):
        kw['shortcut'] = config.teacher.shortcut
    return models.build_model(config.teacher.model, config.data.num_classes, **kw)


def make_encoder(config):
    """The configured encoding as `coords [N, 3] -> [N, F]` and its width F."""
    e = config.encoding
    if e.kind == 'nern':
        fn = functools.partial(encodings.nern_encoding, levels=e.levels, base=e.base)
        return fn, 6 * e.levels
    if e.kind == 'gaussian':
        matrix = encodings.gaussian_matrix(config.seed, e.features, e.scale)

        def fn(coords):
            maxima = np.asarray(coords).max(axis=0) + 1
            return encodings.gaussian_encoding(coords, maxima, matrix)

        return fn, 2 * e.features
    raise ValueError(f"encoding.kind must be 'nern' or 'gaussian', got {e.kind!r}")


def reconstruction_rounds(total_steps: int, rounds: int) -> list[int]:
    """Splits `total_steps` over `rounds` as evenly as possible (earlier rounds get the rest)."""
    if rounds < 1:
        raise ValueError(f'reconstruct.rounds must be >= 1, got {rounds}')
    base, rest = divmod(int(total_steps), rounds)
    return [base + (1 if r < rest else 0) for r in range(rounds)]


def run(config: ml_collections.ConfigDict, workdir: str, echo=print) -> dict:
    """Runs the configured compression and writes `workdir/report.{json,md}`.

    Returns:
      The report dictionary.
    """
    start = time.time()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    log = Logger(workdir, echo)
    log(
        f'nrnp: {config.teacher.model} on {dataset_label(config)}, workdir {workdir}, '
        f'devices {jax.devices()}'
    )

    mean, std = tuple(config.data.mean), tuple(config.data.std)
    test = load_split(config, config.data.test_split, workdir)
    if config.data.test_limit:
        test = data.Dataset(
            test.images[: config.data.test_limit],
            test.labels[: config.data.test_limit],
            test.num_classes,
            test.class_names,
        )
    if test.num_classes > config.data.num_classes:
        raise ValueError(
            f'the dataset has {test.num_classes} classes but data.num_classes is '
            f'{config.data.num_classes}'
        )
    test_x = data.normalise(test.images, mean, std)
    log(f'test split {config.data.test_split!r}: {len(test.labels)} images {test_x.shape[1:]}')

    model = build_target(config)
    input_shape = (1, config.data.image_size, config.data.image_size, config.data.channels)
    variables, source = teacher.load_or_train(
        model,
        input_shape,
        checkpoint=config.teacher.checkpoint,
        workdir=workdir,
        train_data_fn=lambda: load_split(config, config.data.train_split, workdir),
        steps=config.teacher.train_steps,
        batch_size=config.teacher.train_batch_size,
        learning_rate=config.teacher.train_learning_rate,
        seed=config.seed,
        mean=mean,
        std=std,
        log=log,
    )
    params = variables['params']
    log(f'target: {source}')

    top1 = functools.partial(
        evaluation.top1,
        model,
        images=test_x,
        labels=test.labels,
        batch_size=config.data.eval_batch_size,
    )
    top1_original = top1(variables)
    log(f'eval/top1_original {top1_original:.2f} % on {len(test.labels)} images')

    # The kernel table and the predictor's inputs, computed once.
    layout = kernels.kernel_layout(
        params,
        kernels.select_kernels(
            tuple(config.kernels.sizes), config.kernels.exclude, config.kernels.large
        ),
    )
    table = np.asarray(kernels.gather(layout, params))  # [N, 9]
    mask = layout.mask()  # [N, 9]
    t = time.time()
    coords = coordinates.kernel_coordinates(layout, table, config.kernels.ordering, log)
    ordering_seconds = time.time() - t
    encode, input_dim = make_encoder(config)
    encoded = jnp.asarray(encode(coords), jnp.float32)  # [N, input_dim]
    log(
        f'kernel table: {layout.num_kernels} kernels in {len(layout.layers)} layers, '
        f'{layout.num_params} represented params; {config.kernels.ordering} ordering '
        f'{ordering_seconds:.1f}s'
    )

    pmodel = predictor.Predictor(
        hidden=config.predictor.hidden,
        layers=config.predictor.layers,
        initializer=config.predictor.init,
        residual=config.predictor.residual,
    )
    root = jax.random.key(config.seed)
    keys = {
        name: jax.random.fold_in(root, i)
        for i, name in enumerate(['predictor', 'reconstruct', 'distill', 'data'])
    }
    predictor_seed = int(jax.random.randint(keys['predictor'], (), 0, 2**30))
    pparams = predictor.init_predictor(pmodel, input_dim, predictor_seed)
    n_pred = sum(x.size for x in jax.tree.leaves(pparams))
    log(
        f'predictor: hidden {config.predictor.hidden}, {config.predictor.layers} layers, '
        f'{n_pred} params, ratio {n_pred / layout.num_params:.4f}'
    )

    table_j, mask_j = jnp.asarray(table), jnp.asarray(mask)
    probs = reconstruction.magnitude_probabilities(table_j, mask_j)

    def rebuilt_variables(pp):
        return {**variables, 'params': predictor.reconstruct(pmodel, layout, pp, encoded, params)}

    def measure(pp, target_rows):
        problem = reconstruction.ReconstructionProblem(encoded, target_rows, mask_j, probs)
        return top1(rebuilt_variables(pp)), reconstruction.full_rmse(pmodel, pp, problem)

    phases = []
    acc, rmse = measure(pparams, table_j)
    phases.append({'kind': 'init', 'steps': 0, 'seconds': 0.0, 'top1': acc, 'rmse': rmse})
    log(f'untrained predictor: top1 {acc:.2f} %, rmse {rmse:.6f}')

    rc = config.reconstruct
    batch_size = min(rc.batch_size, layout.num_kernels)
    state = None
    target_rows = table_j
    for r, steps in enumerate(reconstruction_rounds(rc.steps, rc.rounds)):
        if steps == 0:
            continue
        if r > 0:
            target_rows = reconstruction.predict_rows(pmodel, pparams, encoded)
            if rc.fresh_predictor:
                pparams = predictor.init_predictor(pmodel, input_dim, predictor_seed + r)
        tx = optim.make_optimizer(
            rc.optimizer,
            steps=steps,
            learning_rate=rc.learning_rate,
            b1=rc.b1,
            b2=rc.b2,
            eps=rc.eps,
            weight_decay=rc.weight_decay,
            final_learning_rate=rc.final_learning_rate,
            warmup=rc.warmup,
        )
        state = reconstruction.PredictorState(
            step=jnp.asarray(0 if state is None else state.step, jnp.int32),
            pparams=pparams,
            opt_states={'reconstruct': tx.init(pparams)},
        )
        problem = reconstruction.ReconstructionProblem(encoded, target_rows, mask_j, probs)
        step_fn = jax.jit(
            functools.partial(
                reconstruction.reconstruction_step,
                model=pmodel,
                tx=tx,
                batch_size=batch_size,
                magnitude_fraction=rc.magnitude_fraction,
            ),
            donate_argnums=0,
        )
        label = f'reconstruct round {r + 1}/{rc.rounds}'
        progress = report.Progress(steps, label, log, every=config.log_every)
        t = time.time()
        for i in range(1, steps + 1):
            state, metrics = step_fn(state, problem, keys['reconstruct'])
            if i % config.log_every == 0 or i == steps:
                loss = float(metrics['recon/loss'])
                if not np.isfinite(loss):
                    raise FloatingPointError(f'{label}: non-finite loss {loss} at step {i}')
                progress.update(i, metrics, force=True)
        jax.block_until_ready(state)
        seconds = time.time() - t
        pparams = state.pparams
        acc, rmse = measure(pparams, table_j)
        phases.append(
            {
                'kind': 'reconstruct',
                'round': r + 1,
                'steps': steps,
                'seconds': seconds,
                'top1': acc,
                'rmse': rmse,
                'step_ms': 1000 * seconds / steps,
            }
        )
        log(
            f'{label} done: {steps} steps in {seconds:.1f}s, eval/top1_reconstructed {acc:.2f} %, '
            f'recon/rmse {rmse:.6f} (vs original weights)'
        )

    if config.distill.steps:
        raise NotImplementedError('distillation phase: not available yet (distill.steps must be 0)')

    final_acc, final_rmse = phases[-1]['top1'], phases[-1]['rmse']
    out = {
        'target': config.teacher.model,
        'target_source': source,
        'dataset': dataset_label(config),
        'test_split': config.data.test_split,
        'test_images': int(len(test.labels)),
        'top1_original': top1_original,
        'top1_reconstructed': final_acc,
        'top1_reconstructed_best_seen': max(p['top1'] for p in phases),
        'represented_params': int(layout.num_params),
        'represented_layers': len(layout.layers),
        'num_kernels': int(layout.num_kernels),
        'predictor_params': int(n_pred),
        'ratio': n_pred / layout.num_params,
        'ordering': config.kernels.ordering,
        'ordering_seconds': ordering_seconds,
        'ordering_bytes': coordinates.ordering_bytes(layout, config.kernels.ordering),
        'reconstruction_rmse': final_rmse,
        'phases': phases,
        'wall_seconds': time.time() - start,
        'devices': [str(d) for d in jax.devices()],
        'config': config.to_json_best_effort(indent=2),
    }
    report.write_report(workdir, out)
    log(
        f'top1 original {top1_original:.2f} %  rebuilt {final_acc:.2f} %  ratio '
        f'{out["ratio"]:.4f}  ({n_pred} / {layout.num_params})  -> {workdir}/report.md'
    )
    return out

"""The command line's job: target and data from the config, then the run, then the report.

  report = job.run(config, workdir)     # what `python -m nrnp.main` calls

It loads (or trains) the target and opens the test and training data as the config
says, hands them to `assemble.compress_target` (the same run `nrnp.compress` does),
then writes `compressed.nrnp`, `report.json`, `report.md` and `report.png`.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import ml_collections
import numpy as np

from nrnp.core import coordinates
from nrnp.data import batching, sources
from nrnp.data.dataset import balanced_subset, check_same_classes
from nrnp.errors import ConfigError, DataError
from nrnp.nets import models
from nrnp.pipeline import assemble, targets, workdirs
from nrnp.reporting import plots, reports
from nrnp.training import evaluation, sharding


class Logger:
    """Prints and appends to `workdir/log.txt`."""

    def __init__(self, workdir: str, echo=print):
        self.path = os.path.join(workdir, 'log.txt')
        self.echo = echo

    def __call__(self, message: str):
        if jax.process_index() != 0:
            return  # one log per run, from process 0
        line = f'[{time.strftime("%H:%M:%S")}] {message}'
        self.echo(line, flush=True) if self.echo is print else self.echo(line)
        with open(self.path, 'a') as f:
            f.write(line + '\n')


def dataset_label(config) -> str:
    if config.data.image_folder:
        return f'image folder {config.data.image_folder}'
    return config.data.name


def load_split(config, split: str, workdir: str, crops: bool):
    """One split of the configured dataset: streamed (data.streaming) or held in memory.

    In memory, image folders are decoded once and cached under the workdir; streamed, the
    split is only listed/opened and each batch's images are decoded when it is drawn.
    Images are resized to data.image_size on reading unless `crops` (the split goes
    through random_resized_crop or the centre crop, which resize each image themselves).
    """
    kw = dict(
        name=config.data.name,
        split=split,
        data_dir=config.data.data_dir or None,
        image_folder=config.data.image_folder or None,
        image_size=None if crops else config.data.image_size,
        channels=config.data.channels if config.data.channels in (1, 3) else 3,
        download=config.data.download,
        download_url=config.data.download_url,
        download_sha256=config.data.download_sha256,
    )
    if config.data.streaming:
        return sources.open_dataset(**kw)
    return sources.load_dataset(**kw, cache_dir=os.path.join(workdir, 'cache'))


def test_batches(config, test, mesh):
    """`() -> iterator` of this process's rows of the test set's evaluation batches."""
    batch_size = min(config.data.eval_batch_size, len(test))
    batch_size = evaluation.round_batch(batch_size, mesh)
    return lambda: batching.prefetch(
        batching.eval_batches(
            test,
            batch_size,
            tuple(config.data.mean),
            tuple(config.data.std),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            crop=config.data.eval_crop,
            image_size=config.data.image_size,
            crop_fraction=config.data.crop_fraction,
        )
    )


def build_target(config):
    return models.build_model(
        config.teacher.model, config.data.num_classes, shortcut=config.teacher.shortcut
    )


def distillation_batches(config, train_data, start_step: int, cycle: int):
    """Augmented, normalised training images of one distillation phase from `start_step`."""
    return batching.train_batches(
        train_data,
        batch_size=config.distill.batch_size,
        seed=config.seed + 7919 * cycle,
        start_step=start_step,
        augment=config.data.augment,
        mean=tuple(config.data.mean),
        std=tuple(config.data.std),
        pad=config.data.pad,
        image_size=config.data.image_size if config.data.augment == 'random_resized_crop' else None,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def best_seen(records) -> float | None:
    """Best rebuilt top-1 seen at any evaluation of the run (selected on the test set)."""
    seen = [r['top1'] for r in records if r['kind'] != 'init']
    seen += [e['top1'] for r in records for e in r.get('evals', [])]
    return max((s for s in seen if s is not None), default=None)


def input_identities(config) -> dict:
    """What the run reads, for the workdir fingerprint: the teacher and the data source."""
    t, data = config.teacher, config.data
    if not t.checkpoint:
        teacher = 'trained in the workdir (its training config is in the fingerprint)'
    elif os.path.exists(os.path.expanduser(t.checkpoint)):
        teacher = workdirs.file_identity(t.checkpoint)
    else:
        teacher = t.checkpoint  # a URL or registry name, pinned by its hash when downloaded
    if data.image_folder:
        source = f'image folder {os.path.abspath(data.image_folder)}: '
        source += workdirs.folder_identity(data.image_folder)
    else:
        source = f'{data.name} in {data.data_dir or "the default data dir"}'
    out = {'teacher': teacher, 'data': source}
    spec = config.distill.teacher_checkpoint
    if spec:  # a local file, or a URL or registry name as given (pinned when downloaded)
        local = os.path.exists(os.path.expanduser(spec))
        out['distill_teacher'] = workdirs.file_identity(spec) if local else spec
    return out


def run(
    config: ml_collections.ConfigDict, workdir: str, echo=print, overwrite: bool = False
) -> dict:
    """Runs the configured compression and writes `workdir/report.{json,md}`.

    The workdir is claimed first (`workdirs.claim`): a new run writes its fingerprint,
    the same run resumes, another run's workdir is refused before anything is written
    unless `overwrite`.

    Returns:
      The report dictionary.
    """
    start = time.time()
    workdir = os.path.abspath(workdir)
    fingerprint = workdirs.fingerprint(config, input_identities(config))
    status = workdirs.claim(workdir, fingerprint, overwrite=overwrite, style='cli')
    log = Logger(workdir, echo)
    log(
        f'nrnp: {config.teacher.model} on {dataset_label(config)}, workdir {workdir} '
        f'({"resuming" if status == "resume" else "new run"}), devices {jax.devices()}'
    )

    mean, std = tuple(config.data.mean), tuple(config.data.std)
    test = load_split(
        config, config.data.test_split, workdir, crops=config.data.eval_crop == 'center'
    )
    if config.data.test_limit:
        test = balanced_subset(test, config.data.test_limit, config.seed)
    if test.num_classes > config.data.num_classes:
        raise ConfigError(
            f'the dataset has {test.num_classes} classes but data.num_classes is '
            f'{config.data.num_classes}'
        )
    found = test.read(np.arange(1))[0][0].shape[-1]
    if found != config.data.channels:
        raise DataError(
            f'{dataset_label(config)} has {found}-channel images but data.channels is '
            f'{config.data.channels}; set --config.data.channels={found}'
        )
    how = 'streamed' if config.data.streaming else 'in memory'
    subset = ' (a class-balanced subset, data.test_limit)' if config.data.test_limit else ''
    log(f'test split {config.data.test_split!r}: {len(test)} images{subset} ({how})')

    resized = config.data.augment == 'random_resized_crop'  # the only one for mixed sizes

    def train_split():
        train = load_split(config, config.data.train_split, workdir, crops=resized)
        check_same_classes(
            (config.data.train_split, train.class_names),
            (config.data.test_split, test.class_names),
            f'{dataset_label(config)}: the splits have different classes',
        )
        return train

    model = build_target(config)
    input_shape = (1, config.data.image_size, config.data.image_size, config.data.channels)
    variables, source = targets.load_or_train(
        model,
        input_shape,
        checkpoint=config.teacher.checkpoint,
        workdir=workdir,
        train_data_fn=train_split,
        steps=config.teacher.train_steps,
        batch_size=config.teacher.train_batch_size,
        learning_rate=config.teacher.train_learning_rate,
        seed=config.seed,
        mean=mean,
        std=std,
        augment='random_resized_crop' if resized else 'none',
        image_size=config.data.image_size if resized else None,
        log=log,
        checkpoint_sha256=config.teacher.checkpoint_sha256,
        download=config.data.download,
    )
    log(f'target: {source}')

    mesh = sharding.make_mesh(config.num_devices, config.model_axis)
    log(f'mesh: {dict(mesh.shape)} over {jax.process_count()} process(es)')
    train_batches = None
    if config.distill.steps:
        train_data = train_split()
        log(f'train split {config.data.train_split!r}: {len(train_data)} images ({how})')
        train_batches = functools.partial(distillation_batches, config, train_data)
    outcome = assemble.compress_target(
        variables,
        model,
        config,
        workdir=workdir,
        mesh=mesh,
        input_shape=input_shape,
        test_batches=test_batches(config, test, mesh),
        train_batches=train_batches,
        log=log,
    )
    prep, records, compressed = outcome.prep, outcome.records, outcome.compressed
    layout, n_pred, top1_original = prep.layout, prep.predictor_params, outcome.top1_original
    artifact_path = os.path.join(workdir, 'compressed.nrnp')
    if jax.process_index() == 0:
        compressed.save(artifact_path)
    sizes = compressed.size_report()

    final_acc, final_rmse = records[-1]['top1'], records[-1]['rmse']
    out = {
        'target': config.teacher.model,
        'target_source': source,
        'dataset': dataset_label(config),
        'test_split': config.data.test_split,
        'test_images': len(test),
        'top1_original': top1_original,
        'top1_reconstructed': final_acc,
        'top1_reconstructed_best_seen': best_seen(records),
        'represented_params': int(layout.num_params),
        'represented_layers': len(layout.layers),
        'num_kernels': int(layout.num_kernels),
        'predictor_params': int(n_pred),
        'ratio': n_pred / layout.num_params,
        'ordering': config.kernels.ordering,
        'ordering_seconds': prep.ordering_seconds,
        'ordering_bytes': coordinates.ordering_bytes(layout, config.kernels.ordering),
        'reconstruction_rmse': final_rmse,
        'artifact': artifact_path,
        'artifact_bytes': sizes['artifact_bytes'],
        'original_bytes': sizes['original_bytes'],
        'artifact_ratio': sizes['disk_ratio'],
        'phases': records,
        'predictor_seconds': sum(r['seconds'] for r in records),
        'wall_seconds': time.time() - start,
        'devices': [str(d) for d in jax.devices()],
        'config': config.to_json_best_effort(indent=2),
    }
    if jax.process_index() == 0:
        reports.write_report(workdir, out)
        plots.plot_report(out, os.path.join(workdir, 'report.png'))
    log(
        f'top1 original {top1_original:.2f} %  rebuilt {final_acc:.2f} %  ratio '
        f'{out["ratio"]:.4f}  ({n_pred} / {layout.num_params})  -> {workdir}/report.md'
    )
    return out

"""The command line's job: target and data from the config, then the run, then the report.

  report = job.run(config, workdir)     # what `python -m nrnp.main` calls

It loads (or trains) the target and opens the test and training data as the config
says, hands them to `assemble.compress_target` (the same run `nrnp.compress` does),
then writes `compressed.nrnp`, `report.json`, `report.md` and `report.png`.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np

from nrnp import errors, files, signals
from nrnp.core import kernels
from nrnp.data.dataset import balanced_subset, check_same_classes
from nrnp.errors import ConfigError, DataError
from nrnp.nets import models
from nrnp.pipeline import assemble, calibration, run_inputs, targets, workdirs
from nrnp.reporting import plots, reports
from nrnp.training import sharding

# The byte counts report.json repeats from `Compressed.size_report()`: every part of the file.
SIZE_KEYS = (
    'predictor_bytes',
    'ordering_bytes',
    'copied_bytes',
    'header_bytes',
    'framing_bytes',
    'artifact_bytes',
    'original_bytes',
)


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
        with errors.writing(self.path, 'the run log'), open(self.path, 'a', **files.ENCODING) as f:
            f.write(line + '\n')


def build_target(config):
    return models.build_model(
        config.teacher.model,
        config.data.num_classes,
        shortcut=config.teacher.shortcut,
        width_mult=config.teacher.width,
    )


def best_seen(records) -> float | None:
    """Best rebuilt top-1 seen at any evaluation of the run (selected on the test set)."""
    seen = [r['top1'] for r in records if r['kind'] != 'init']
    seen += [e['top1'] for r in records for e in r.get('evals', [])]
    return max((s for s in seen if s is not None), default=None)


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
    fingerprint = workdirs.fingerprint(config, run_inputs.input_identities(config))
    claim = workdirs.claim(workdir, fingerprint, overwrite=overwrite, style='cli')
    signals.claimed()  # from here a signal inside an import waits for it: files to unwind
    try:
        return _run(config, workdir, echo, claim, start)
    finally:
        claim.release()


def _pct(value) -> str:
    return '-' if value is None else f'{value:.2f} %'


def _run(config, workdir: str, echo, claim, start: float) -> dict:
    log = Logger(workdir, echo)
    log(
        f'nrnp: {config.teacher.model} on {run_inputs.dataset_label(config)}, workdir {workdir} '
        f'({"resuming" if claim.status == "resume" else "new run"}), devices {jax.devices()}'
    )
    if claim.lock is not None and not claim.lock.held:
        log(f'warning: {workdir} cannot be locked (its file system has no locks): start one run')
    if claim.removed:
        log(f'removed what an interrupted run left: {", ".join(claim.removed[:5])}')

    test = run_inputs.load_split(
        config, config.data.test_split, workdir, crops=config.data.eval_crop == 'center', log=log
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
            f'{run_inputs.dataset_label(config)} has {found}-channel images but data.channels is '
            f'{config.data.channels}; set --config.data.channels={found}'
        )
    how = 'streamed' if config.data.streaming else 'in memory'
    subset = ' (a class-balanced subset, data.test_limit)' if config.data.test_limit else ''
    log(f'test split {config.data.test_split!r}: {len(test)} images{subset} ({how})')

    resized = config.data.augment == 'random_resized_crop'  # the only one for mixed sizes

    def train_split():
        train = run_inputs.load_split(
            config, config.data.train_split, workdir, crops=resized, log=log
        )
        check_same_classes(
            (config.data.train_split, train.class_names),
            (config.data.test_split, test.class_names),
            f'{run_inputs.dataset_label(config)}: the splits have different classes',
        )
        return train

    model = build_target(config)
    input_shape = (1, config.data.image_size, config.data.image_size, config.data.channels)
    variables, source = targets.load_or_train(
        config,
        model,
        input_shape,
        workdir=workdir,
        train_data_fn=train_split,
        test_top1=lambda mesh: run_inputs.test_top1(config, test, model, mesh),
        test_images=len(test),
        log=log,
    )
    log(f'target: {source}')

    mesh = sharding.make_mesh(config.num_devices, config.model_axis)
    log(f'mesh: {dict(mesh.shape)} over {jax.process_count()} process(es)')
    top1 = run_inputs.test_top1(config, test, model, mesh)
    train_batches = device_batches = calibration_images = None
    if config.distill.steps or calibration.needs_train_split(config, variables):
        train_data = train_split()
        calibration_images = calibration.split_images(config, train_data)
        where = ''
        if config.distill.steps:
            train_batches, device_batches = run_inputs.distillation_images(config, train_data, mesh)
            where = ', drawn on the device' if device_batches else ', host pipeline'
        log(f'train split {config.data.train_split!r}: {len(train_data)} images ({how}{where})')
    outcome = assemble.compress_target(
        variables,
        model,
        config,
        workdir=workdir,
        mesh=mesh,
        input_shape=input_shape,
        top1=top1,
        train_batches=train_batches,
        device_batches=device_batches,
        calibration_images=calibration_images,
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
        'dataset': run_inputs.dataset_label(config),
        'test_split': config.data.test_split,
        'test_images': len(test),
        'top1_original': top1_original,
        'top1_reconstructed': final_acc,
        'top1_reconstructed_best_seen': best_seen(records),
        'represented_params': int(layout.num_params),
        'represented_layers': len(layout.layers),
        'num_kernels': int(layout.num_kernels),
        'kernel_rows': int(layout.num_kernels),
        'represented_by_kind': kernels.params_by_kind(layout, variables['params']),
        'pointwise_layout': config.kernels.pointwise,
        'predictor_params': int(n_pred),
        'ratio': n_pred / layout.num_params,
        'ordering': config.kernels.ordering,
        'ordering_seconds': prep.ordering_seconds,
        'reconstruction_rmse': final_rmse,
        'quantize': compressed.quantize,
        'artifact': artifact_path,
        **{k: sizes[k] for k in SIZE_KEYS},
        'artifact_ratio': sizes['artifact_ratio'],
        'phases': records,
        'predictor_seconds': sum(r['seconds'] for r in records),
        'wall_seconds': time.time() - start,
        'devices': [str(d) for d in jax.devices()],
        'config': config.to_json_best_effort(indent=2),
    }
    if jax.process_index() == 0:
        with errors.writing(workdir, 'the report in'):
            reports.write_report(workdir, out)
            plots.plot_report(out, os.path.join(workdir, 'report.png'))
    log(
        f'top1 original {_pct(top1_original)}  rebuilt {_pct(final_acc)}  ratio '
        f'{out["ratio"]:.4f}  ({n_pred} / {layout.num_params})  -> {workdir}/report.md'
    )
    log(
        f'artefact {sizes["artifact_bytes"]:,} B ({compressed.quantize} predictor '
        f'{sizes["predictor_bytes"]:,}, orderings {sizes["ordering_bytes"]:,}, copied '
        f'{sizes["copied_bytes"]:,}, header {sizes["header_bytes"]:,}), artifact_ratio '
        f'{sizes["artifact_ratio"]:.4f} of the original {sizes["original_bytes"]:,} B'
    )
    return out

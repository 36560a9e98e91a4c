"""The command line's door: a run described from the config, prepared, run, stored, reported.

  report = job.run(config, workdir)     # what `python -m nrnp.main` calls

`describe` loads (or trains) the target and opens the test and training splits as the
config says (`cli_data`); `compression` prepares, runs and stores it (what `nrnp.compress`
runs too); then `compressed.nrnp`, `report.json`, `report.md` and `report.png` are written.
"""

from __future__ import annotations

import dataclasses
import json
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
from nrnp.pipeline import budgets, calibration, cli_data, compression, targets, workdirs
from nrnp.pipeline.description import Data, RunDescription
from nrnp.reporting import plots, reports
from nrnp.training import sharding


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
    """The target network `config.teacher` names."""
    t = config.teacher
    return models.build_model(
        t.model, config.data.num_classes, shortcut=t.shortcut, width_mult=t.width
    )


def run(
    config: ml_collections.ConfigDict, workdir: str, echo=print, overwrite: bool = False
) -> dict:
    """Runs the configured compression and writes `workdir/report.{json,md}`.

    The workdir is claimed first (`workdirs.claim`): a new run writes its fingerprint,
    the same run resumes (a finished one returns its report at once, unchanged), a run
    changing only later phases' settings branches off the one held there (reusing the
    phases they share), another run's workdir is refused before anything is written
    unless `overwrite`.

    Returns:
      The report dictionary.
    """
    start, workdir = time.time(), os.path.abspath(workdir)
    fingerprint = workdirs.fingerprint(config, cli_data.input_identities(config))
    claim = workdirs.claim(workdir, fingerprint, overwrite=overwrite, style='cli')
    signals.claimed()  # from here a signal inside an import waits for it: files to unwind
    try:
        log = Logger(workdir, echo)
        _log_claim(log, config, workdir, claim)
        report = finished(workdir, fingerprint) if claim.status == 'resume' else None
        if report is not None:
            log(f'{workdir} holds this run, finished: its report stands (nothing is redone)')
            for line in reports.summary(report, workdir):
                log(line)
            return report
        branch = claim.status == 'branch'
        return _run(config, workdir, log, start, workdirs.digest(fingerprint), branch)
    finally:
        claim.release()


def _earlier_top1(workdir: str) -> float | None:
    """The original's top-1 in the report of the run `workdir` held (None: none there)."""
    try:
        with open(os.path.join(workdir, 'report.json'), **files.ENCODING) as f:
            value = json.load(f).get('top1_original')
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def finished(workdir: str, fingerprint: dict) -> dict | None:
    """The report of the run `fingerprint` names when `workdir` holds it finished (its
    report.json names that run and its artefact is there), else None."""
    path = os.path.join(workdir, 'report.json')
    if not os.path.exists(os.path.join(workdir, 'compressed.nrnp')):
        return None
    try:
        with open(path, **files.ENCODING) as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    return report if report.get('run') == workdirs.digest(fingerprint) else None


def _run(config, workdir: str, log, start: float, run_id: str, branch: bool) -> dict:
    description, source = describe(config, workdir, log)
    if branch:  # same target and test data: the original's top-1 is the earlier run's
        earlier = _earlier_top1(workdir)
        description = dataclasses.replace(description, top1_original=earlier)
    outcome = compression.run(compression.prepare(budgets.resolve(description)))
    artifact = compression.store(outcome)
    path = os.path.join(workdir, 'compressed.nrnp')
    if jax.process_index() == 0:
        artifact.save(path)
    prep = outcome.plan.prep
    report = reports.build(
        target=config.teacher.model,
        target_source=source,
        dataset=cli_data.dataset_label(config),
        test_split=config.data.test_split,
        test_images=description.data.test_images,
        top1_original=outcome.plan.top1_original,
        records=outcome.records,
        layout=prep.layout,
        represented_by_kind=kernels.params_by_kind(prep.layout, description.variables['params']),
        pointwise_layout=config.kernels.pointwise,
        predictor_params=prep.predictor_params,
        ordering=config.kernels.ordering,
        ordering_seconds=prep.ordering_seconds,
        quantize=artifact.quantize,
        artifact=path,
        sizes=artifact.size_report(),
        wall_seconds=time.time() - start,
        devices=[str(d) for d in jax.devices()],
        config=outcome.plan.description.config.to_json_best_effort(indent=2),
        kept=outcome.kept,
    )
    report['run'] = run_id  # a rerun of this run finds it finished (`finished`)
    done = outcome.plan.ctx.saved.get('finished', 0) if branch else 0
    reused = [r.get('label', r['kind']) for r in outcome.records[1 : 1 + done]]
    if reused:
        report['reused'] = reused
        report['notes'] = [f'reused from the earlier run in this workdir: {", ".join(reused)}']
    chosen = outcome.plan.description.budget
    if chosen is not None:
        report['budget'] = chosen
        took = f'; the whole run took {report["wall_seconds"] / 60:.1f} min (data loading included)'
        report.setdefault('notes', []).append(budgets.describe(chosen) + took)
    if jax.process_index() == 0:
        with errors.writing(workdir, 'the report in'):
            reports.write_report(workdir, report)
            plots.plot_report(report, os.path.join(workdir, 'report.png'))
    for line in reports.summary(report, workdir):
        log(line)
    return report


_STATUS = {'new': 'new run', 'resume': 'resuming', 'branch': 'branching off the run held there'}


def _log_claim(log, config, workdir: str, claim) -> None:
    log(
        f'nrnp: {config.teacher.model} on {cli_data.dataset_label(config)}, workdir {workdir} '
        f'({_STATUS[claim.status]}), devices {jax.devices()}'
    )
    if claim.lock is not None and not claim.lock.held:
        log(f'warning: {workdir} cannot be locked (its file system has no locks): start one run')
    if claim.status == 'branch':
        log(
            f'{workdir} holds a run differing only in later phases ({"; ".join(claim.changed)}): '
            'the phases the two share are reused'
        )
    if claim.removed:
        log(f'removed what an interrupted run left: {", ".join(claim.removed[:5])}')


def describe(config, workdir: str, log) -> tuple[RunDescription, str]:
    """The run the config describes, and where its target came from: the test split, the
    target (loaded, or trained and cached in the workdir), the mesh and, when distillation
    or re-estimation reads it, the training split."""
    test = _test_split(config, workdir, log)
    label, how = cli_data.dataset_label(config), cli_data.how_held(config)

    def train_split():
        resized = config.data.augment == 'random_resized_crop'  # the one for mixed sizes
        train = cli_data.load_split(config, config.data.train_split, workdir, resized, log)
        check_same_classes(
            (config.data.train_split, train.class_names),
            (config.data.test_split, test.class_names),
            f'{label}: the splits have different classes',
        )
        return train

    model = build_target(config)
    shape = (1, config.data.image_size, config.data.image_size, config.data.channels)
    variables, source = targets.load_or_train(
        config,
        model,
        shape,
        workdir=workdir,
        train_data_fn=train_split,
        test_top1=lambda mesh: cli_data.test_top1(config, test, model, mesh),
        test_images=len(test),
        log=log,
    )
    log(f'target: {source}')
    mesh = sharding.make_mesh(config.num_devices, config.model_axis)
    log(f'mesh: {dict(mesh.shape)} over {jax.process_count()} process(es)')
    data = Data(shape, cli_data.test_top1(config, test, model, mesh), len(test))
    if config.distill.steps or calibration.needs_train_split(config, variables):
        train = train_split()
        data.calibration_images = calibration.split_images(config, train)
        data.heldout_images = calibration.split_images(config, train, tail=True)
        where = ''
        if config.distill.steps:
            pool = calibration.without_heldout(config, train)
            data.train_batches, data.device_batches = cli_data.distillation_images(
                config, pool, mesh
            )
            where = ', drawn on the device' if data.device_batches else ', host pipeline'
        log(f'train split {config.data.train_split!r}: {len(train)} images ({how}{where})')
    return RunDescription(config, model, variables, data, workdir, mesh, log), source


def _test_split(config, workdir: str, log):
    """The test split (its class-balanced subset with `data.test_limit`), checked against
    `data.num_classes` and `data.channels`."""
    d = config.data
    test = cli_data.load_split(config, d.test_split, workdir, d.eval_crop == 'center', log)
    if d.test_limit:
        test = balanced_subset(test, d.test_limit, config.seed)
    if test.num_classes > d.num_classes:
        raise ConfigError(
            f'the dataset has {test.num_classes} classes but data.num_classes is {d.num_classes}'
        )
    found = test.read(np.arange(1))[0][0].shape[-1]
    if found != d.channels:
        raise DataError(
            f'{cli_data.dataset_label(config)} has {found}-channel images but data.channels is '
            f'{d.channels}; set --config.data.channels={found}'
        )
    subset = ' (a class-balanced subset, data.test_limit)' if d.test_limit else ''
    how = cli_data.how_held(config)
    log(f'test split {d.test_split!r}: {len(test)} images{subset} ({how})')
    return test

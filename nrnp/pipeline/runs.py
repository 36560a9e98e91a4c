"""Finished runs rebuilt from their workdirs, and width sweeps: what the notebooks call.

run = runs.load_run(workdir)     # a finished `nrnp.main` workdir
errors = analysis.per_layer_rmse(run.layout, run.table, run.rebuilt_rows, run.mask)
reports = runs.width_sweep(config, workdir, widths=(8, 16, 32))
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np

from nrnp.artifact import reader
from nrnp.core import kernel_rows, kernels, predictor
from nrnp.nets import loading, models
from nrnp.pipeline import job, problem


@dataclasses.dataclass
class Run:
    """A finished run, rebuilt from its workdir.

    Attributes:
      config: the run's ConfigDict (from report.json).
      report: report.json as a dict.
      model: the target module; variables: its original `{'params', 'batch_stats'}`.
      layout: the kernel table layout.
      table: `[N, 9]` float32 original kernel rows; mask: `[N, 9]` float32 0/1.
      coords: `[N, 3]` int32 coordinates the predictor was fed (the run's ordering).
      pmodel: the predictor module; pparams: its final params (last checkpoint).
      rebuilt_rows: `[N, 9]` float32 predictor output for every row (unmasked).
      rebuilt_variables: `variables` with every represented kernel predicted.
    """

    config: ml_collections.ConfigDict
    report: dict
    model: object
    variables: dict
    layout: kernel_rows.KernelLayout
    table: np.ndarray
    mask: np.ndarray
    coords: np.ndarray
    pmodel: predictor.Predictor
    pparams: dict
    rebuilt_rows: np.ndarray
    rebuilt_variables: dict


def load_run(workdir: str) -> Run:
    """Rebuilds a finished run from `workdir` (its report.json, teacher and artefact).

    The target comes from `teacher.checkpoint` of the run's config or, when that is
    empty, from the teacher the run trained and cached in `workdir/teacher`. The
    ordering is recomputed from the original weights (deterministic).

    Raises:
      FileNotFoundError: no report.json or compressed.nrnp (the run has not finished).
    """
    workdir = os.path.abspath(workdir)
    path = os.path.join(workdir, 'report.json')
    if not os.path.exists(path):
        raise FileNotFoundError(f'{path}: not a finished nrnp run')
    with open(path) as f:
        report = json.load(f)
    config = ml_collections.ConfigDict(json.loads(report['config']))
    model = job.build_target(config)
    input_shape = (1, config.data.image_size, config.data.image_size, config.data.channels)
    if config.teacher.checkpoint:
        variables = loading.load_target(config.teacher.checkpoint, model, input_shape)
    else:
        template = jax.eval_shape(
            lambda: models.init_variables(model, input_shape, seed=config.seed)
        )
        variables = loading.load_variables(os.path.join(workdir, 'teacher'), template)
    params = variables['params']
    prep = problem.prepare(params, config, log=lambda message: None)
    compressed = reader.load(os.path.join(workdir, 'compressed.nrnp'))
    pparams = compressed.predictor_params
    pmodel, layout = prep.pmodel, prep.layout
    rebuilt_rows = np.asarray(predictor.predict(pmodel, pparams, prep.encoded))  # [N, 9]
    rebuilt = kernels.scatter(layout, rebuilt_rows, params)
    table, coords = prep.table, prep.coords
    return Run(
        config=config,
        report=report,
        model=model,
        variables=variables,
        layout=layout,
        table=table,
        mask=layout.mask(),
        coords=coords,
        pmodel=pmodel,
        pparams=pparams,
        rebuilt_rows=rebuilt_rows,
        rebuilt_variables={**variables, 'params': rebuilt},
    )


def width_sweep(config, workdir: str, widths, echo=print) -> list[dict]:
    """Compresses the same target with predictors of each hidden width.

    Run h goes to `workdir/h{h}` (resumable like any run). Without a
    `teacher.checkpoint` the first run trains the teacher and the others reuse it
    (`workdir/h{widths[0]}/teacher`), so every width compresses the same network.

    Returns:
      One report dict per width (`job.run`'s), in `widths` order.
    """
    reports = []
    config = config.copy_and_resolve_references()
    for width in widths:
        config.predictor.hidden = int(width)
        run_dir = os.path.join(workdir, f'h{width}')
        reports.append(job.run(config, run_dir, echo=echo))
        if not config.teacher.checkpoint:
            config.teacher.checkpoint = os.path.join(os.path.abspath(run_dir), 'teacher')
    return reports

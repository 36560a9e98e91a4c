"""Looking inside a compressed network: per-layer error, kernels before/after, orderings.

  run = analysis.load_run(workdir)     # a finished `nrnp.main` / `train.run` workdir
  errors = analysis.per_layer_rmse(run.layout, run.table, run.rebuilt_rows, run.mask)
  smooth = analysis.compare_orderings(run.layout, run.table)  # {'none': {...}, ...}

The metric functions are pure numpy over kernel tables (`[num_kernels, 9]`, one 3x3
slot per row, see `nrnp.kernels`); `load_run` and `width_sweep` are the orchestration
the notebooks call (they read a ConfigDict, like `train.run`).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np

from nrnp import (
    artifact,
    compression,
    coordinates,
    importers,
    kernels,
    models,
    orderings,
    predictor,
    train,
)


def _layer_slice(layer: kernels.LayerSpec) -> slice:
    return slice(layer.offset, layer.offset + layer.num_rows)


def per_layer_rmse(layout: kernels.KernelLayout, original_rows, rebuilt_rows, mask) -> list[dict]:
    """Reconstruction error of every represented layer.

    Args:
      layout: the kernel table layout.
      original_rows: `[N, 9]` float, the original kernel table (`kernels.gather`).
      rebuilt_rows: `[N, 9]` float, the rebuilt table (predictor output or `gather`
        of the rebuilt params).
      mask: `[N, 9]` 0/1, real weights (`layout.mask()`); other entries are ignored.

    Returns:
      One dict per layer, in layout order: `name` ('a/b/kernel'), `shape` (HWIO),
      `params` (represented weights), `rmse` = sqrt(sum(mask (W - W')^2) / sum(mask))
      and `relative_rmse` = rmse / sqrt(sum(mask W^2) / sum(mask)) (inf when the
      layer's weights are all zero).
    """
    original = np.asarray(original_rows, np.float64)
    rebuilt = np.asarray(rebuilt_rows, np.float64)
    mask = np.asarray(mask, np.float64)
    if not original.shape == rebuilt.shape == mask.shape == (layout.num_kernels, kernels.ROW):
        raise ValueError(
            f'expected [{layout.num_kernels}, {kernels.ROW}] tables, got original '
            f'{original.shape}, rebuilt {rebuilt.shape}, mask {mask.shape}'
        )
    out = []
    for layer in layout.layers:
        sl = _layer_slice(layer)
        m = mask[sl]
        count = max(m.sum(), 1.0)
        rmse = float(np.sqrt(np.sum(m * np.square(original[sl] - rebuilt[sl])) / count))
        scale = float(np.sqrt(np.sum(m * np.square(original[sl])) / count))
        out.append(
            {
                'name': layer.name,
                'shape': layer.shape,
                'params': layer.num_params,
                'rmse': rmse,
                'relative_rmse': rmse / scale if scale > 0 else float('inf'),
            }
        )
    return out


def kernel_pairs(
    layout: kernels.KernelLayout, original_rows, rebuilt_rows, layer_index: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` kernels of one layer, original and rebuilt, as 3x3 squares.

    Kernel j of the layer is (filter j // I, channel j % I) in storage order (a tile
    for tiled large kernels). Entries outside the layer's mask (the 8 outer entries
    of a 1x1 kernel) are zeroed in both, so what is shown is what the network uses.

    Args:
      layout: the kernel table layout.
      original_rows: `[N, 9]` the original kernel table.
      rebuilt_rows: `[N, 9]` the rebuilt kernel table.
      layer_index: which layer of `layout.layers`.
      count: how many kernels (capped at the layer's row count).

    Returns:
      (original, rebuilt), each `[min(count, rows), 3, 3]` float32, [kh, kw] per kernel
      (kernel j equals the HWIO leaf's `[:, :, j % I, j // I]` for 3x3 layers).
    """
    layer = layout.layers[layer_index]
    count = min(count, layer.num_rows)
    rows = slice(layer.offset, layer.offset + count)
    mask = layout.mask()[rows]  # [count, 9]
    original = np.asarray(original_rows, np.float32)[rows] * mask
    rebuilt = np.asarray(rebuilt_rows, np.float32)[rows] * mask
    return original.reshape(count, 3, 3), rebuilt.reshape(count, 3, 3)


def ordering_smoothness(layout: kernels.KernelLayout, rows, coords) -> dict:
    """How similar the kernels at neighbouring coordinates are, along the channel axis.

    For every layer, kernel rows are placed on the grid their coordinates give and
    each pair (layer, f, c) / (layer, f, c + 1) of occupied cells contributes the cosine
    similarity of its two 9-vectors (0 when either is all zero). A good ordering puts
    similar kernels side by side, which is what the predictor finds easy to fit.

    Args:
      layout: the kernel table layout.
      rows: `[N, 9]` float kernel table (normally the original weights).
      coords: `[N, 3]` int (layer, filter, channel) of each row
        (`coordinates.kernel_coordinates`).

    Returns:
      `{'mean_cosine': float, 'pairs': int, 'per_layer': [{'name', 'mean_cosine',
      'pairs'}, ...]}`; the overall mean weights layers by their pair count, and a
      layer without pairs (one channel) has `mean_cosine` nan.
    """
    rows = np.asarray(rows, np.float64)
    coords = np.asarray(coords)
    if rows.shape != (layout.num_kernels, kernels.ROW) or coords.shape != (layout.num_kernels, 3):
        raise ValueError(
            f'expected rows [{layout.num_kernels}, 9] and coords [{layout.num_kernels}, 3], '
            f'got {rows.shape} and {coords.shape}'
        )
    norms = np.linalg.norm(rows, axis=1, keepdims=True)  # [N, 1]
    unit = rows / np.maximum(norms, 1e-12)
    per_layer, total, total_pairs = [], 0.0, 0
    for layer in layout.layers:
        sl = _layer_slice(layer)
        f, c = coords[sl, 1], coords[sl, 2]
        grid = np.zeros((f.max() + 1, c.max() + 1, kernels.ROW))  # [F, C, 9]
        filled = np.zeros(grid.shape[:2], bool)  # [F, C]
        grid[f, c] = unit[sl]
        filled[f, c] = True
        cosines = np.sum(grid[:, :-1] * grid[:, 1:], axis=-1)  # [F, C - 1]
        valid = filled[:, :-1] & filled[:, 1:]
        pairs = int(valid.sum())
        layer_sum = float(cosines[valid].sum())
        per_layer.append(
            {
                'name': layer.name,
                'mean_cosine': layer_sum / pairs if pairs else float('nan'),
                'pairs': pairs,
            }
        )
        total += layer_sum
        total_pairs += pairs
    return {
        'mean_cosine': total / total_pairs if total_pairs else float('nan'),
        'pairs': total_pairs,
        'per_layer': per_layer,
    }


def compare_orderings(layout: kernels.KernelLayout, rows, modes=orderings.MODES) -> dict[str, dict]:
    """`ordering_smoothness` of each ordering mode, computed from `rows` `[N, 9]`."""
    return {
        mode: ordering_smoothness(
            layout, rows, coordinates.kernel_coordinates(layout, np.asarray(rows), mode)
        )
        for mode in modes
    }


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
    layout: kernels.KernelLayout
    table: np.ndarray
    mask: np.ndarray
    coords: np.ndarray
    pmodel: predictor.Predictor
    pparams: dict
    rebuilt_rows: np.ndarray
    rebuilt_variables: dict


def load_run(workdir: str) -> Run:
    """Rebuilds a finished run from `workdir` (its report.json, teacher and checkpoints).

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
    model = train.build_target(config)
    input_shape = (1, config.data.image_size, config.data.image_size, config.data.channels)
    if config.teacher.checkpoint:
        variables = importers.load_target(config.teacher.checkpoint, model, input_shape)
    else:
        template = jax.eval_shape(
            lambda: models.init_variables(model, input_shape, seed=config.seed)
        )
        variables = importers.load_variables(os.path.join(workdir, 'teacher'), template)
    params = variables['params']
    prep = compression.prepare(params, config, log=lambda message: None)
    compressed = artifact.load(os.path.join(workdir, 'compressed.nrnp'))
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
      One report dict per width (`train.run`'s), in `widths` order.
    """
    reports = []
    config = config.copy_and_resolve_references()
    for width in widths:
        config.predictor.hidden = int(width)
        run_dir = os.path.join(workdir, f'h{width}')
        reports.append(train.run(config, run_dir, echo=echo))
        if not config.teacher.checkpoint:
            config.teacher.checkpoint = os.path.join(os.path.abspath(run_dir), 'teacher')
    return reports

"""Looking inside a compressed network: per-layer error, kernels before/after, orderings.

  errors = per_layer_rmse(layout, original_rows, rebuilt_rows, mask)
  smooth = compare_orderings(layout, original_rows)  # {'none': {...}, 'crossfilter': {...}}

Pure numpy over kernel tables (`[num_kernels, 9]`, one 3x3 slot per row, see
`nrnp.core.kernels`); `nrnp.pipeline.runs.load_run` rebuilds a finished run to feed them.
"""

from __future__ import annotations

import numpy as np

from nrnp.core import coordinates, kernel_rows, orderings


def _layer_slice(layer: kernel_rows.LayerSpec) -> slice:
    return slice(layer.offset, layer.offset + layer.num_rows)


def per_layer_rmse(
    layout: kernel_rows.KernelLayout, original_rows, rebuilt_rows, mask
) -> list[dict]:
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
    if not original.shape == rebuilt.shape == mask.shape == (layout.num_kernels, kernel_rows.ROW):
        raise ValueError(
            f'expected [{layout.num_kernels}, {kernel_rows.ROW}] tables, got original '
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
    layout: kernel_rows.KernelLayout, original_rows, rebuilt_rows, layer_index: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` kernels of one layer, original and rebuilt, as 3x3 squares.

    Kernel j of the layer is (filter j // I, channel j % I) in storage order (a tile
    for tiled large kernels; 9 input channels of a filter for grouped 1x1 rows).
    Entries outside the layer's mask (the 8 outer entries of a centre-layout 1x1
    kernel) are zeroed in both, so what is shown is what the network uses.

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


def ordering_smoothness(layout: kernel_rows.KernelLayout, rows, coords) -> dict:
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
    if rows.shape != (layout.num_kernels, kernel_rows.ROW) or coords.shape != (
        layout.num_kernels,
        3,
    ):
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
        grid = np.zeros((f.max() + 1, c.max() + 1, kernel_rows.ROW))  # [F, C, 9]
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


def compare_orderings(
    layout: kernel_rows.KernelLayout, rows, modes=orderings.MODES
) -> dict[str, dict]:
    """`ordering_smoothness` of each ordering mode, computed from `rows` `[N, 9]`."""
    return {
        mode: ordering_smoothness(
            layout, rows, coordinates.kernel_coordinates(layout, np.asarray(rows), mode)
        )
        for mode in modes
    }

"""Kernel coordinates: the raw integer (layer, filter, channel) each kernel slot is fed.

  coords = kernel_coordinates(layout, table, ordering='crossfilter')   # [N, 3] int32
  encoded = encodings.encode(coords, 'nern', levels=40, base=0.76)     # [N, 240]

Orderings only move inputs: row i of `coords` is the coordinate assigned to kernel
slot i, and the prediction for it is written back to slot i.
"""

from __future__ import annotations

import time

import numpy as np

from nrnp import kernels, orderings


def kernel_coordinates(
    layout: kernels.KernelLayout, table, ordering: str = 'crossfilter', log=None
) -> np.ndarray:
    """Coordinates of every table row.

    Args:
      layout: the kernel table layout.
      table: `[N, 9]` the original kernel rows (orderings are computed from them).
      ordering: 'none', 'infilter' or 'crossfilter' (METHOD.md section 3).
      log: optional callable taking a progress string.

    Returns:
      `[N, 3]` int32: (layer, filter position, channel position); a tiled large
      kernel's tile t of kernel (f, c) gets channel `c_pos * tiles + t`.
    """
    per_layer = kernels.kernels_by_layer(layout, table)
    out = []
    start = time.time()
    for index, (layer, k) in enumerate(zip(layout.layers, per_layer)):
        fpos, cpos = orderings.layer_positions(k, ordering)  # [O, I] each
        fpos = np.repeat(np.asarray(fpos, np.int32)[..., None], layer.tiles, axis=-1)
        cpos = np.asarray(cpos, np.int32)[..., None] * layer.tiles + np.arange(
            layer.tiles, dtype=np.int32
        )
        lpos = np.full_like(fpos, index)
        out.append(np.stack([lpos, fpos, cpos], axis=-1).reshape(layer.num_rows, 3))
        if log is not None and ordering != 'none' and time.time() - start > 5:
            log(
                f'ordering {ordering}: layer {index + 1}/{len(layout.layers)} '
                f'({time.time() - start:.0f}s)'
            )
    return np.concatenate(out, axis=0)


def ordering_bytes(layout: kernels.KernelLayout, ordering: str) -> int:
    """Bytes needed to store the orderings: one index per kernel, in the smallest int type."""
    if ordering == 'none':
        return 0
    total = 0
    for layer in layout.layers:
        n = layer.filters * layer.channels
        width = 1 if n <= 2**8 else 2 if n <= 2**16 else 4
        total += n * width
    return total

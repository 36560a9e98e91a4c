"""Kernel coordinates: the raw integer (layer, filter, channel) each kernel slot is fed.

  coords = kernel_coordinates(layout, table, ordering='crossfilter')   # [N, 3] int32
  encoded = encodings.make_encoder('nern', levels=40)[0](coords)       # [N, 240]
  positions = layer_positions(layout, coords)   # per layer a permutation; exact inverse:
  coords = positions_to_coordinates(layout, positions)

Orderings only move inputs: row i of `coords` is the coordinate assigned to kernel
slot i, and the prediction for it is written back to slot i.
"""

from __future__ import annotations

import time

import numpy as np

from nrnp.core import kernel_rows, kernels, orderings


def kernel_coordinates(
    layout: kernel_rows.KernelLayout, table, ordering: str = 'crossfilter', log=None
) -> np.ndarray:
    """Coordinates of every table row.

    Args:
      layout: the kernel table layout.
      table: `[N, 9]` the original kernel rows (orderings are computed from them).
      ordering: 'none', 'infilter' or 'crossfilter' (METHOD.md section 3).
      log: optional callable taking a progress string.

    Returns:
      `[N, 3]` int32: (layer, filter position, channel position); a tiled large
      kernel's tile t of kernel (f, c) gets channel `c_pos * tiles + t`; a grouped 1x1
      row (f, j) is one item of its layer (channel slot j counts the groups of 9), a
      depthwise kernel (f, 0) too.
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


def position_dtype(n: int) -> np.dtype:
    """The smallest unsigned int type holding 0..n-1."""
    return np.dtype(np.uint8 if n <= 2**8 else np.uint16 if n <= 2**16 else np.uint32)


def layer_positions(layout: kernel_rows.KernelLayout, coords: np.ndarray) -> list[np.ndarray]:
    """Per layer, the flat position `filter_pos * S + channel_pos` of every kernel slot.

    S is the layer's `channel_slots` (I, or ceil(I / 9) for grouped 1x1 rows). The
    compact form of an ordering: a permutation of 0..O*S-1 per layer (the artefact
    stores it with `permutation_codec`).

    Args:
      layout: the kernel table layout.
      coords: `[N, 3]` int32 from `kernel_coordinates`.

    Returns:
      One `[O * S]` array per layer, in the smallest unsigned int type.
    """
    out = []
    for layer in layout.layers:
        rows = coords[layer.offset : layer.offset + layer.num_rows]
        rows = rows.reshape(layer.kernel_slots, layer.tiles, 3)[:, 0]  # [O * S, 3]
        flat = rows[:, 1].astype(np.int64) * layer.channel_slots + rows[:, 2] // layer.tiles
        out.append(flat.astype(position_dtype(layer.kernel_slots)))
    return out


def positions_to_coordinates(layout: kernel_rows.KernelLayout, positions) -> np.ndarray:
    """Inverse of `layer_positions`: the `[N, 3]` int32 coordinates, exactly as computed.

    `positions=None` gives the storage order (ordering 'none').
    """
    out = []
    for index, layer in enumerate(layout.layers):
        n, slots = layer.kernel_slots, layer.channel_slots
        flat = np.arange(n) if positions is None else np.asarray(positions[index], np.int64)
        fpos = (flat // slots).astype(np.int32).reshape(layer.filters, slots)
        cpos = (flat % slots).astype(np.int32).reshape(layer.filters, slots)
        fpos = np.repeat(fpos[..., None], layer.tiles, axis=-1)
        cpos = cpos[..., None] * layer.tiles + np.arange(layer.tiles, dtype=np.int32)
        lpos = np.full_like(fpos, index)
        out.append(np.stack([lpos, fpos, cpos], axis=-1).reshape(layer.num_rows, 3))
    return np.concatenate(out, axis=0)

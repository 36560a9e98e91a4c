"""One layer of the kernel table: its spec, the table's layout, and its rows (both ways).

  layer = LayerSpec(('conv1', 'kernel'), (3, 3, 16, 32), 'float32', offset=0, tiles=1)
  rows = layer_rows(layer, kernel)       # [layer.num_rows, 9]
  kernel = rows_to_kernel(layer, rows)   # exact inverse on the real entries (`layer_mask`)

`kernels` builds layouts from a params tree and gathers/scatters whole tables; this module
holds the per-layer row formats it describes (module docstring there).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

ROW = 9  # entries per table row: one 3x3 kernel
GROUP = ROW  # input channels per row of a grouped 1x1 kernel
KINDS = ('3x3', 'depthwise', 'pointwise', 'large', 'dense')
Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One represented conv leaf.

    Attributes:
      path: pytree path of the kernel leaf, e.g. ('layer1_0', 'conv1', 'kernel').
      shape: the leaf's HWIO shape (k, k, in, out).
      dtype: the leaf's dtype name.
      offset: first table row of this layer.
      tiles: rows per (filter, channel) kernel: 1, or ceil(k/3)^2 when tiled.
      rank: 4 for conv kernels, 2 for Dense kernels viewed as 1x1 convs.
      group: input channels per row: `GROUP` for grouped 1x1 rows, else 1 (absent in
        artefacts written before the grouped layout: 1).
      depthwise: a depthwise conv's kernel (`[k, k, 1, C]`, one input channel per group);
        only the kind's name depends on it, not the rows.
    """

    path: Path
    shape: tuple[int, int, int, int]
    dtype: str
    offset: int
    tiles: int
    rank: int = 4
    group: int = 1
    depthwise: bool = False

    @property
    def kernel_size(self) -> int:
        return self.shape[0]

    @property
    def filters(self) -> int:
        return self.shape[3]

    @property
    def channels(self) -> int:
        return self.shape[2]

    @property
    def channel_slots(self) -> int:
        """Channel coordinates per filter: I, or ceil(I / group) for grouped 1x1 rows."""
        return -(-self.channels // self.group)

    @property
    def kernel_slots(self) -> int:
        """(filter, channel slot) pairs: what an ordering permutes."""
        return self.filters * self.channel_slots

    @property
    def num_rows(self) -> int:
        return self.kernel_slots * self.tiles

    @property
    def kind(self) -> str:
        """'dense', 'large' (> 3x3), 'pointwise' (1x1), 'depthwise' or '3x3' (2x2 included)."""
        if self.rank == 2:
            return 'dense'
        if self.kernel_size > 3:
            return 'large'
        if self.kernel_size == 1:
            return 'pointwise'
        return 'depthwise' if self.depthwise else '3x3'

    @property
    def num_params(self) -> int:
        return math.prod(self.shape)

    @property
    def name(self) -> str:
        return '/'.join(self.path)


@dataclasses.dataclass(frozen=True)
class KernelLayout:
    """The static description of a kernel table (hashable: usable as a jit static)."""

    layers: tuple[LayerSpec, ...]

    @property
    def num_kernels(self) -> int:
        return sum(layer.num_rows for layer in self.layers)

    @property
    def num_params(self) -> int:
        """Represented parameters (the denominator of the compression ratio)."""
        return sum(layer.num_params for layer in self.layers)

    def mask(self) -> np.ndarray:
        """Which table entries are real weights: `[num_kernels, 9]` float32 of 0/1."""
        return np.concatenate([layer_mask(layer) for layer in self.layers], axis=0)

    def layer_index(self) -> np.ndarray:
        """The layer number of every row: `[num_kernels]` int32."""
        return np.concatenate(
            [np.full(layer.num_rows, i, np.int32) for i, layer in enumerate(self.layers)]
        )


def layer_mask(layer: LayerSpec) -> np.ndarray:
    """Which entries of the layer's rows are real weights: `[num_rows, 9]` float32 0/1."""
    if layer.group > 1:
        real = np.arange(layer.channel_slots * layer.group) < layer.channels  # [G * g]
        rows = real.reshape(layer.channel_slots, layer.group).astype(np.float32)
        rows = np.pad(rows, ((0, 0), (0, ROW - layer.group)))  # [G, 9]
        return np.tile(rows, (layer.filters, 1))  # [O * G, 9]
    k = layer.kernel_size
    padded = _padded_size(k)
    square = np.zeros((padded, padded), np.float32)
    lo = 1 if k == 1 else 0
    square[lo : lo + k, lo : lo + k] = 1.0
    tiles = _to_tiles(square[None, None])  # [1, 1, tiles, 9]
    return np.broadcast_to(tiles, (layer.filters, layer.channels, layer.tiles, ROW)).reshape(
        layer.num_rows, ROW
    )


def _padded_size(k: int) -> int:
    return 3 if k <= 3 else 3 * math.ceil(k / 3)


def _to_tiles(x):
    """[O, I, P, P] with P a multiple of 3 -> [O, I, (P/3)^2, 9], tiles row-major."""
    o, i, p, _ = x.shape
    n = p // 3
    x = x.reshape(o, i, n, 3, n, 3)
    x = x.transpose(0, 1, 2, 4, 3, 5)  # [O, I, n, n, 3, 3]
    return x.reshape(o, i, n * n, ROW)


def _from_tiles(x, p: int):
    """[O, I, (P/3)^2, 9] -> [O, I, P, P]."""
    o, i = x.shape[:2]
    n = p // 3
    x = x.reshape(o, i, n, n, 3, 3).transpose(0, 1, 2, 4, 3, 5)  # [O, I, n, 3, n, 3]
    return x.reshape(o, i, p, p)


def layer_rows(layer: LayerSpec, kernel):
    """One HWIO kernel leaf as its table rows: `[k, k, I, O] -> [num_rows, 9]`.

    Grouped 1x1 rows: `[1, 1, I, O]` (or a Dense `[I, O]`) -> `[O * ceil(I / 9), 9]`, row
    f * G + j holding W[9j + e, f] in entry e (zeros past I).
    """
    k = layer.kernel_size
    kernel = jnp.asarray(kernel, jnp.float32).reshape(layer.shape)  # a Dense gets [1, 1, I, O]
    if layer.group > 1:
        x = kernel.reshape(layer.channels, layer.filters).T  # [O, I]
        width = layer.channel_slots * layer.group
        x = jnp.pad(x, ((0, 0), (0, width - layer.channels)))  # [O, G * g]
        x = x.reshape(layer.num_rows, layer.group)  # [O * G, g]
        return jnp.pad(x, ((0, 0), (0, ROW - layer.group)))
    x = jnp.transpose(kernel, (3, 2, 0, 1))  # [O, I, k, k]
    padded = _padded_size(k)
    lo = 1 if k == 1 else 0
    x = jnp.pad(x, ((0, 0), (0, 0), (lo, padded - k - lo), (lo, padded - k - lo)))
    return _to_tiles(x).reshape(layer.num_rows, ROW)


def rows_to_kernel(layer: LayerSpec, rows):
    """Inverse of `layer_rows`: `[num_rows, 9] -> [k, k, I, O]` in the leaf's dtype."""
    if layer.group > 1:
        x = rows[:, : layer.group].reshape(layer.filters, -1)[:, : layer.channels]  # [O, I]
        x = x.T.astype(layer.dtype)  # [I, O]
        return x if layer.rank == 2 else x.reshape(layer.shape)
    k = layer.kernel_size
    padded = _padded_size(k)
    lo = 1 if k == 1 else 0
    x = rows.reshape(layer.filters, layer.channels, layer.tiles, ROW)
    x = _from_tiles(x, padded)[:, :, lo : lo + k, lo : lo + k]  # [O, I, k, k]
    x = jnp.transpose(x, (2, 3, 1, 0)).astype(layer.dtype)
    return x.reshape(layer.shape[2:]) if layer.rank == 2 else x

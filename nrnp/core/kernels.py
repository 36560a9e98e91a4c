"""The kernel table: a target's conv weights as one `[num_kernels, 9]` array, and back.

  layout = kernel_layout(params, select_kernels(sizes=(1, 3)))
  table = gather(layout, params)            # [layout.num_kernels, 9]
  params = scatter(layout, table, params)   # exact inverse on represented leaves

Which leaves are represented is decided by one predicate over (pytree path, leaf):
by default every rank-4 `kernel` leaf (Flax HWIO layout) whose spatial size is
in `sizes`. Represented layers are ordered by the natural sort of their pytree
path (so `layer1_10` follows `layer1_9`), which for nrnp's ResNets is METHOD.md's
order: stem, then per block conv1, conv2 and the projection shortcut.

Every row holds one 3x3 slot. A 1x1 kernel lives in the centre entry (index 4)
of its row and the other 8 entries are masked out; a 2x2 kernel in the top-left
2x2. A kernel larger than 3x3 (e.g. a 7x7 stem) is either left out (the default
predicate copies it) or, with `large='tile'`, zero-padded to a multiple of 3 and
cut into ceil(k/3)^2 tiles of 3x3, one row per tile, tile t of kernel (f, c)
getting channel coordinate `c * tiles + t`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ROW = 9  # entries per table row: one 3x3 kernel
Path = tuple[str, ...]
Predicate = Callable[[Path, Any], bool]


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
    """

    path: Path
    shape: tuple[int, int, int, int]
    dtype: str
    offset: int
    tiles: int
    rank: int = 4

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
    def num_rows(self) -> int:
        return self.filters * self.channels * self.tiles

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
        return np.concatenate([_layer_mask(layer) for layer in self.layers], axis=0)

    def layer_index(self) -> np.ndarray:
        """The layer number of every row: `[num_kernels]` int32."""
        return np.concatenate(
            [np.full(layer.num_rows, i, np.int32) for i, layer in enumerate(self.layers)]
        )


def natural_key(path: Path) -> tuple:
    """Sort key for paths comparing digit runs as integers ('layer1_10' after 'layer1_9')."""
    return tuple(
        tuple(int(t) if t.isdigit() else t for t in re.split(r'(\d+)', part)) for part in path
    )


def path_names(path) -> Path:
    """A jax key path as a tuple of plain strings."""
    names = []
    for entry in path:
        for attr in ('key', 'name', 'idx'):
            if hasattr(entry, attr):
                names.append(str(getattr(entry, attr)))
                break
        else:
            names.append(str(entry))
    return tuple(names)


def select_kernels(
    sizes: Sequence[int] = (1, 3), exclude: str = '', large: str = 'copy', dense: bool = False
) -> Predicate:
    """The default predicate: rank-4 `kernel` leaves with square spatial size in `sizes`.

    This covers plain, grouped and depthwise convs (Flax stores a depthwise kernel as
    `[k, k, 1, C]`), so VGG-, ResNet- and MobileNet-style nets need no new code.

    Args:
      sizes: represented spatial kernel sizes (1 and 3 cover every CIFAR ResNet conv).
      exclude: a regular expression; leaves whose '/'-joined path matches are copied.
      large: 'copy' leaves kernels bigger than 3x3 out; 'tile' represents them too.
      dense: also represent rank-2 Dense `kernel` leaves `[in, out]`, each weight a
        1x1 kernel (row f * in + c holds W[c, f] in its centre).

    Returns:
      A predicate `(path, leaf) -> bool`.
    """
    if large not in ('copy', 'tile'):
        raise ValueError(f"large must be 'copy' or 'tile', got {large!r}")
    pattern = re.compile(exclude) if exclude else None

    def predicate(path: Path, leaf) -> bool:
        shape = np.shape(leaf)
        if path[-1] != 'kernel' or (pattern is not None and pattern.search('/'.join(path))):
            return False
        if len(shape) == 2:
            return dense
        if len(shape) != 4 or shape[0] != shape[1]:
            return False
        k = shape[0]
        return k in sizes or (large == 'tile' and k > 3)

    return predicate


def kernel_layout(params, predicate: Predicate) -> KernelLayout:
    """Lists the represented leaves of `params` (arrays or ShapeDtypeStructs).

    Raises:
      ValueError: if nothing is selected.
    """
    leaves = jax.tree.leaves_with_path(params)
    chosen = []
    for path, leaf in leaves:
        names = path_names(path)
        if predicate(names, leaf):
            chosen.append((names, leaf))
    if not chosen:
        raise ValueError(
            'No conv kernel is represented: the predicate selected none of '
            f'{[("/".join(path_names(p)), np.shape(x)) for p, x in leaves]}'
        )
    chosen.sort(key=lambda item: natural_key(item[0]))
    layers, offset = [], 0
    for names, leaf in chosen:
        shape = tuple(int(d) for d in np.shape(leaf))
        rank = len(shape)
        if rank == 2:
            shape = (1, 1) + shape  # a Dense [in, out] as a 1x1 conv
        tiles = math.ceil(shape[0] / 3) ** 2 if shape[0] > 3 else 1
        layer = LayerSpec(names, shape, str(jnp.dtype(leaf.dtype)), offset, tiles, rank)
        layers.append(layer)
        offset += layer.num_rows
    return KernelLayout(tuple(layers))


def _layer_mask(layer: LayerSpec) -> np.ndarray:
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
    """One HWIO kernel leaf as its table rows: `[k, k, I, O] -> [O * I * tiles, 9]`."""
    k = layer.kernel_size
    kernel = jnp.asarray(kernel, jnp.float32).reshape(layer.shape)  # a Dense gets [1, 1, I, O]
    x = jnp.transpose(kernel, (3, 2, 0, 1))  # [O, I, k, k]
    padded = _padded_size(k)
    lo = 1 if k == 1 else 0
    x = jnp.pad(x, ((0, 0), (0, 0), (lo, padded - k - lo), (lo, padded - k - lo)))
    return _to_tiles(x).reshape(layer.num_rows, ROW)


def rows_to_kernel(layer: LayerSpec, rows):
    """Inverse of `layer_rows`: `[O * I * tiles, 9] -> [k, k, I, O]` in the leaf's dtype."""
    k = layer.kernel_size
    padded = _padded_size(k)
    lo = 1 if k == 1 else 0
    x = rows.reshape(layer.filters, layer.channels, layer.tiles, ROW)
    x = _from_tiles(x, padded)[:, :, lo : lo + k, lo : lo + k]  # [O, I, k, k]
    x = jnp.transpose(x, (2, 3, 1, 0)).astype(layer.dtype)
    return x.reshape(layer.shape[2:]) if layer.rank == 2 else x


def _get(tree, path: Path):
    for name in path:
        tree = tree[name]
    return tree


def gather(layout: KernelLayout, params) -> jax.Array:
    """The represented kernels of `params` as `[num_kernels, 9]` float32 (jittable)."""
    return jnp.concatenate(
        [layer_rows(layer, _get(params, layer.path)) for layer in layout.layers], axis=0
    )


def scatter(layout: KernelLayout, table, params):
    """`params` with every represented leaf replaced from `table` `[num_kernels, 9]`.

    Leaves that are not represented are returned unchanged (the same objects), so
    copied parameters stay exactly the original ones. Jittable.
    """
    if table.shape != (layout.num_kernels, ROW):
        raise ValueError(
            f'table has shape {table.shape}, layout expects {(layout.num_kernels, ROW)}'
        )
    replaced = {
        layer.path: rows_to_kernel(layer, table[layer.offset : layer.offset + layer.num_rows])
        for layer in layout.layers
    }

    def swap(path, leaf):
        names = path_names(path)
        if names in replaced:
            new = replaced[names]
            if new.shape != np.shape(leaf):
                raise ValueError(
                    f'{"/".join(names)}: rebuilt shape {new.shape} != {np.shape(leaf)}'
                )
            return new
        return leaf

    return jax.tree.map_with_path(swap, params)


def kernels_by_layer(layout: KernelLayout, table) -> list[np.ndarray]:
    """Per layer, the kernels as `[O, I, tiles * 9]` (what orderings compare)."""
    table = np.asarray(table)
    return [
        table[layer.offset : layer.offset + layer.num_rows].reshape(
            layer.filters, layer.channels, layer.tiles * ROW
        )
        for layer in layout.layers
    ]

"""The kernel table: a target's conv weights as one `[num_kernels, 9]` array, and back.

  layout = kernel_layout(params, select_kernels(sizes=(1, 3)))
  table = gather(layout, params)            # [layout.num_kernels, 9]
  params = scatter(layout, table, params)   # exact inverse on represented leaves

Which leaves are represented is decided by one predicate over (pytree path, leaf):
by default every rank-4 `kernel` leaf (Flax HWIO layout) whose spatial size is
in `sizes`. Represented layers are ordered by the natural sort of their pytree
path (so `layer1_10` follows `layer1_9`), which for nrnp's ResNets is METHOD.md's
order: stem, then per block conv1, conv2 and the projection shortcut.

Every row holds 9 entries. A 3x3 kernel (plain or depthwise, `[3, 3, 1, C]`) is one
row; a 2x2 kernel sits in the top-left 2x2. 1x1 kernels (and Dense kernels viewed as
1x1 convs) have two layouts (`pointwise`): 'grouped' (the default) packs 9 consecutive
input channels of one filter into a row, row (f, j) holding channels 9j..9j+8 and the
channel coordinate counting those groups (the last group's missing channels masked when
I is not a multiple of 9); 'centre' (NeRN's) puts each weight in the centre entry
(index 4) of its own row, the other 8 masked, so the predictor runs once per weight.
A kernel larger than 3x3 (e.g. a 7x7 stem) is either left out (the default predicate
copies it) or, with `large='tile'`, zero-padded to a multiple of 3 and cut into
ceil(k/3)^2 tiles of 3x3, one row per tile, tile t of kernel (f, c) getting channel
coordinate `c * tiles + t`. `LayerSpec.kind` names each layer's kind: '3x3',
'depthwise', 'pointwise', 'large' or 'dense' (`params_by_kind` counts them).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nrnp import choices
from nrnp.core import kernel_rows
from nrnp.core.kernel_rows import KernelLayout, Path

Predicate = Callable[[Path, Any], bool]


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


def kernel_layout(
    params, predicate: Predicate, pointwise: str = 'grouped', depthwise: Collection[Path] = ()
) -> KernelLayout:
    """Lists the represented leaves of `params` (arrays or ShapeDtypeStructs).

    Args:
      params: the target's params pytree.
      predicate: which leaves are represented (`select_kernels`).
      pointwise: the row layout of 1x1 and Dense kernels, 'grouped' or 'centre'.
      depthwise: paths of depthwise kernels (`nets.layers.depthwise_kernels`), named
        'depthwise' instead of '3x3' (their rows are the same).

    Raises:
      ValueError: if nothing is selected, or for an unknown `pointwise` layout.
    """
    if pointwise not in choices.POINTWISE_LAYOUTS:
        raise ValueError(f'pointwise must be one of {choices.POINTWISE_LAYOUTS}, got {pointwise!r}')
    depthwise = {tuple(p) for p in depthwise}
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
        group = kernel_rows.GROUP if shape[0] == 1 and pointwise == 'grouped' else 1
        dtype, deep = str(jnp.dtype(leaf.dtype)), names in depthwise and shape[2] == 1
        layer = kernel_rows.LayerSpec(names, shape, dtype, offset, tiles, rank, group, deep)
        layers.append(layer)
        offset += layer.num_rows
    return KernelLayout(tuple(layers))


def _get(tree, path: Path):
    for name in path:
        tree = tree[name]
    return tree


def gather(layout: KernelLayout, params) -> jax.Array:
    """The represented kernels of `params` as `[num_kernels, 9]` float32 (jittable)."""
    return jnp.concatenate(
        [kernel_rows.layer_rows(layer, _get(params, layer.path)) for layer in layout.layers], axis=0
    )


def scatter(layout: KernelLayout, table, params):
    """`params` with every represented leaf replaced from `table` `[num_kernels, 9]`.

    Leaves that are not represented are returned unchanged (the same objects), so
    copied parameters stay exactly the original ones. Jittable.
    """
    if table.shape != (layout.num_kernels, kernel_rows.ROW):
        raise ValueError(
            f'table has shape {table.shape}, layout expects {(layout.num_kernels, kernel_rows.ROW)}'
        )
    replaced = {
        layer.path: kernel_rows.rows_to_kernel(
            layer, table[layer.offset : layer.offset + layer.num_rows]
        )
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
    """Per layer, the kernels as `[O, channel_slots, tiles * 9]` (what orderings compare)."""
    table = np.asarray(table)
    return [
        table[layer.offset : layer.offset + layer.num_rows].reshape(
            layer.filters, layer.channel_slots, layer.tiles * kernel_rows.ROW
        )
        for layer in layout.layers
    ]


def params_by_kind(layout: KernelLayout, params) -> dict[str, int]:
    """Parameters of `params` per kind (`KINDS`) and 'copied' (every unrepresented leaf).

    Args:
      layout: the table's layout.
      params: the target's params pytree (arrays or ShapeDtypeStructs; shapes are used).

    Returns:
      `{'3x3': n, 'depthwise': n, 'pointwise': n, 'large': n, 'dense': n, 'copied': n}`,
      summing to the params' total.
    """
    out = dict.fromkeys((*kernel_rows.KINDS, 'copied'), 0)
    for layer in layout.layers:
        out[layer.kind] += layer.num_params
    total = sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(params))
    out['copied'] = int(total - layout.num_params)
    return out

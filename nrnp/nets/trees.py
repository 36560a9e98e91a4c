"""Variables pytrees as flat `{path: array}` dicts and back, and their container types.

flat = flatten_variables({'params': {'c': {'kernel': k}}})  # {('params', 'c', 'kernel'): k}
tree = unflatten(flat)              # nested plain dicts again
tree = like(tree, frozen_input)     # FrozenDict in -> FrozenDict out
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def flatten_variables(tree, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], np.ndarray]:
    """A nested mapping of arrays as `{path: numpy array}` (mapping order kept).

    Raises:
      TypeError: for a node that is neither a mapping nor an array.
    """
    out = {}
    for key, value in tree.items():
        path = (*prefix, str(key))
        if hasattr(value, 'items'):
            out.update(flatten_variables(value, path))
        elif hasattr(value, 'shape') and hasattr(value, 'dtype'):
            out[path] = np.asarray(value)
        else:
            raise TypeError(f'{"/".join(path)}: expected nested dicts of arrays, got {type(value)}')
    return out


def unflatten(flat: dict[tuple[str, ...], object]) -> dict:
    """Inverse of `flatten_variables`: `{path: leaf}` -> nested plain dicts."""
    tree: dict = {}
    for path, leaf in flat.items():
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = leaf
    return tree


def like(tree, template):
    """`tree` (nested plain dicts) rebuilt with the mapping types of `template`, node by node.

    A Flax `FrozenDict` (or any mapping type constructible from a dict) in the template
    gives the same type at the same place; plain dicts stay plain.
    """
    if not isinstance(tree, dict) or not isinstance(template, Mapping):
        return tree
    children = {k: like(v, template[k]) if k in template else v for k, v in tree.items()}
    kind = type(template)
    return children if kind is dict else kind(children)

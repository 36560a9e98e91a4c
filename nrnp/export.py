"""Writes Flax variables as PyTorch-layout state dict `.npz` files, for any CNN.

  state_dict = export_state_dict(variables, 'r20.npz')    # nrnp names where every leaf has one
  state_dict = export_state_dict(variables, 'net.npz', naming='generic')
  state_dict = generic_state_dict(variables)              # the dict only, no file

The files read back with `importers.read_state_dict`; `Compressed.export_torch` writes
the rebuilt variables through `export_state_dict`.
"""

from __future__ import annotations

import io
import os

import numpy as np

from nrnp import importers

_GENERIC_LEAF = {
    'kernel': 'weight',
    'scale': 'weight',
    'mean': 'running_mean',
    'var': 'running_var',
}


def generic_state_dict(variables: dict) -> dict[str, np.ndarray]:
    """Any Flax CNN's variables as a PyTorch-layout state dict (no nrnp renames).

    Key: the module path without the collection, joined with '.', then the leaf
    renamed kernel/scale -> weight, mean -> running_mean, var -> running_var
    (others kept). Rank-4 kernels HWIO -> OIHW (a depthwise `[k, k, 1, C]` becomes
    torch's `[C, 1, k, k]`), rank-2 Dense kernels transposed to `[out, in]`.

    Raises:
      ValueError: when two leaves map to one key.
    """
    from nrnp.artifact import flatten_variables  # noqa: PLC0415  (artifact imports this module)

    out = {}
    for path, value in flatten_variables(variables).items():
        key = '.'.join([*path[1:-1], _GENERIC_LEAF.get(path[-1], path[-1])])
        if path[-1] == 'kernel' and value.ndim in (2, 4):
            value = value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)
        if key in out:
            raise ValueError(f'{"/".join(path)}: PyTorch key {key!r} is used twice')
        out[key] = value
    return out


def export_state_dict(variables: dict, path: str | os.PathLike, naming: str = 'auto') -> dict:
    """Writes `{'params', 'batch_stats'}` as a PyTorch-layout state dict `.npz` (atomically).

    Args:
      variables: Flax variables.
      path: the `.npz` file (readable by `importers.read_state_dict`).
      naming: 'nrnp' (`importers.variables_to_state_dict`: nrnp's ResNets and
        SmallCNN, torchvision/akamaster names), 'generic' (`generic_state_dict`),
        or 'auto' (nrnp's when every leaf has a name there, else generic).

    Returns:
      The state dict written.
    """
    from nrnp.artifact import _atomic_write  # noqa: PLC0415  (artifact imports this module)

    if naming not in ('auto', 'nrnp', 'generic'):
        raise ValueError(f"naming must be 'auto', 'nrnp' or 'generic', got {naming!r}")
    state_dict = None
    if naming in ('auto', 'nrnp'):
        try:
            state_dict = importers.variables_to_state_dict(variables)
        except importers.CheckpointError:
            if naming == 'nrnp':
                raise
    if state_dict is None:
        state_dict = generic_state_dict(variables)
    buffer = io.BytesIO()
    np.savez(buffer, **state_dict)
    _atomic_write(os.fspath(path), buffer.getvalue())
    return state_dict

"""Checkpoint import and export: PyTorch state dicts and .npz files to Flax variables and back.

  state_dict = read_state_dict('resnet20-12fca82f.th')
  variables = state_dict_to_variables(state_dict, init_variables(model, (1, 32, 32, 3)))
  save_variables('/tmp/target', variables); variables = load_variables('/tmp/target')

The rename between Flax and PyTorch is mechanical: module path ``layer1_0/conv1``
is torch ``layer1.0.conv1``, ``shortcut_conv``/``shortcut_bn`` are ``shortcut.0``/
``shortcut.1`` (likewise ``downsample``); conv kernels are HWIO here and OIHW in
torch, Dense kernels are transposed. PyTorch files are read with
``torch.load(weights_only=True)`` when torch is installed, and otherwise with a
restricted unpickler that only admits tensors, storages and ordered dicts
(``nrnp.torch_pickle``).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

_TORCH_SUFFIXES = ('.th', '.pt', '.pth')
_RENAMES = {
    'shortcut_conv': 'shortcut.0',
    'shortcut_bn': 'shortcut.1',
    'downsample_conv': 'downsample.0',
    'downsample_bn': 'downsample.1',
}
_LEAF_TO_TORCH = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, unsafe, or does not match the model."""


# ---------------------------------------------------------------- reading torch files


def _read_torch(path: str) -> Any:
    """Reads a torch checkpoint with ``torch.load(weights_only=True)``; arrays become numpy."""
    import torch  # noqa: PLC0415  (optional dependency)

    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # torch raises many types for truncated or unsafe files
        raise CheckpointError(f'{path}: torch.load failed: {e}') from e
    to_numpy = lambda t: (t.float() if t.dtype == torch.bfloat16 else t).detach().numpy()
    return jax.tree.map(lambda t: to_numpy(t) if isinstance(t, torch.Tensor) else t, obj)


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def read_state_dict(
    path: str | os.PathLike, use_torch: bool | None = None
) -> dict[str, np.ndarray]:
    """Reads a PyTorch checkpoint or ``.npz`` file into a flat state dict of numpy arrays.

    Args:
      path: a ``.npz``, ``.th``, ``.pt`` or ``.pth`` file.
      use_torch: read torch files with ``torch.load``; ``None`` means "if torch is
        importable". ``False`` forces the restricted reader.

    Returns:
      ``{torch_key: array}`` with any ``module.`` prefix stripped, a top-level
      ``state_dict``/``model`` entry unwrapped and ``num_batches_tracked`` dropped.

    Raises:
      CheckpointError: missing, truncated, foreign or unsafe file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f'{path}: no such checkpoint file')
    suffix = os.path.splitext(path)[1].lower()
    if suffix == '.npz':
        try:
            with np.load(path, allow_pickle=False) as data:
                obj = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise CheckpointError(f'{path}: unreadable .npz file ({e})') from e
    elif suffix in _TORCH_SUFFIXES:
        torch_ok = _torch_available() if use_torch is None else use_torch
        if torch_ok:
            obj = _read_torch(path)
        else:
            from nrnp import torch_pickle  # noqa: PLC0415  (it imports CheckpointError from here)

            obj = torch_pickle.load(path)
    else:
        raise CheckpointError(f'{path}: unknown checkpoint suffix {suffix!r}')
    for wrapper in ('state_dict', 'model'):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'{path}: expected a state dict, got {type(obj).__name__}')
    state_dict = {}
    for key, value in obj.items():
        key = key.removeprefix('module.')
        if key.endswith('num_batches_tracked'):
            continue
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f'{path}: entry {key!r} is {type(value).__name__}, not a tensor')
        state_dict[key] = value
    return state_dict


# ---------------------------------------------------------------- flax <-> torch layout


def _torch_key(path: tuple) -> str:
    """Maps a variables path ``('params', 'layer1_0', 'conv1', 'kernel')`` to a torch key."""
    collection, *modules, leaf = (getattr(k, 'key', k) for k in path)
    torch_leaf = _LEAF_TO_TORCH.get((collection, leaf))
    if torch_leaf is None:
        name = '/'.join([collection, *modules, leaf])
        raise CheckpointError(f'no PyTorch name for variable {name}')
    parts = [_RENAMES.get(m, re.sub(r'^(layer\d+)_(\d+)$', r'\1.\2', m)) for m in modules]
    return '.'.join([*parts, torch_leaf])


def _to_torch_layout(x: np.ndarray) -> np.ndarray:
    """HWIO conv kernel -> OIHW, [in, out] Dense kernel -> [out, in]; others unchanged."""
    if x.ndim == 4:
        return x.transpose(3, 2, 0, 1)
    return x.T if x.ndim == 2 else x


def _from_torch_layout(x: np.ndarray) -> np.ndarray:
    """OIHW conv weight -> HWIO, [out, in] Linear weight -> [in, out]; others unchanged."""
    if x.ndim == 4:
        return x.transpose(2, 3, 1, 0)
    return x.T if x.ndim == 2 else x


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return _to_torch_layout(np.empty(shape, np.bool_)).shape


def state_dict_to_variables(state_dict: Mapping[str, np.ndarray], template: dict) -> dict:
    """Maps a PyTorch-layout state dict onto a Flax variables template.

    Args:
      state_dict: ``{torch_key: array}`` as from ``read_state_dict`` (OIHW convs).
      template: ``{'params', 'batch_stats'}`` from ``init_variables`` or
        ``jax.eval_shape`` of it; only leaf shapes and dtypes are used.

    Returns:
      Variables with the template's structure, leaves ``jax.Array`` in the
      template's dtype (float32 for the nrnp models).

    Raises:
      CheckpointError: listing every missing key, unexpected key and shape
        mismatch (Flax path, torch key, checkpoint shape and expected shape).
    """
    problems, used = [], set()

    def convert(path, leaf):
        key, flax_path = _torch_key(path), jax.tree_util.keystr(path, simple=True, separator='/')
        if key not in state_dict:
            problems.append(f'missing: {flax_path} <- {key} (expected {_torch_shape(leaf.shape)})')
            return None
        used.add(key)
        value = np.asarray(state_dict[key])
        if value.shape != _torch_shape(leaf.shape):
            problems.append(
                f'shape mismatch: {flax_path} <- {key}: checkpoint {value.shape}, expected '
                f'{_torch_shape(leaf.shape)} (flax {tuple(leaf.shape)})'
            )
            return None
        return jnp.asarray(_from_torch_layout(value).astype(leaf.dtype))

    variables = jax.tree.map_with_path(convert, template)
    problems += [f'unexpected: {k} {np.shape(state_dict[k])}' for k in state_dict if k not in used]
    if problems:
        raise CheckpointError(
            f'state dict does not match the model ({len(problems)} problems):\n  '
            + '\n  '.join(problems)
        )
    return variables


def variables_to_state_dict(variables: dict) -> dict[str, np.ndarray]:
    """Exports Flax variables as a PyTorch-layout state dict (the inverse of the above).

    Args:
      variables: ``{'params', 'batch_stats'}`` of an nrnp model.

    Returns:
      ``{torch_key: array}`` with OIHW conv weights and ``[out, in]`` Linear weights.
    """
    leaves, _ = jax.tree.flatten_with_path(variables)
    return {_torch_key(path): _to_torch_layout(np.asarray(leaf)) for path, leaf in leaves}


# ---------------------------------------------------------------- nrnp's own checkpoints


def save_variables(path: str | os.PathLike, variables: dict) -> None:
    """Saves variables as an orbax checkpoint (written to a tmp dir, then renamed).

    Args:
      path: the checkpoint directory; must not exist yet.
      variables: any pytree of arrays, normally ``{'params', 'batch_stats'}``.
    """
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.abspath(path), variables)


def load_variables(path: str | os.PathLike, template: dict | None = None) -> dict:
    """Restores variables saved by ``save_variables``.

    Args:
      path: the checkpoint directory.
      template: optional pytree (concrete or ``jax.eval_shape``) fixing structure,
        shapes and dtypes; a mismatch raises.

    Returns:
      The restored variables.

    Raises:
      CheckpointError: missing directory or a checkpoint that does not fit ``template``.
    """
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f'{path}: no such checkpoint directory')
    with ocp.StandardCheckpointer() as checkpointer:
        try:
            return checkpointer.restore(path, template)
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise CheckpointError(f'{path}: cannot restore variables ({e})') from e


def load_target(path: str | os.PathLike, model, input_shape: tuple[int, ...]) -> dict:
    """Loads a target network's variables from a torch/npz file or an orbax directory.

    Args:
      path: ``.npz``/``.th``/``.pt``/``.pth`` file, or a ``save_variables`` directory.
      model: the Linen module the variables belong to.
      input_shape: NHWC input shape used to build the template, e.g. ``(1, 32, 32, 3)``.

    Returns:
      ``{'params', 'batch_stats'}`` for ``model``.

    Raises:
      CheckpointError: missing path, unreadable file or mismatching variables.
    """
    from nrnp.models import init_variables  # noqa: PLC0415  (keeps importers torch/flax-light)

    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f'{path}: no such checkpoint')
    template = jax.eval_shape(lambda: init_variables(model, input_shape))
    if os.path.isdir(path):
        return load_variables(path, template)
    return state_dict_to_variables(read_state_dict(path), template)

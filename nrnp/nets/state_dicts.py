"""PyTorch-layout state dicts: read (.th/.pt/.pth/.npz), map onto Flax variables and back, export.

  state_dict = read_state_dict('resnet20-12fca82f.th')
  variables = state_dict_to_variables(state_dict, init_variables(model, (1, 32, 32, 3)))
  export_state_dict(variables, 'r20.npz')      # nrnp names, or generic ones for any CNN

The rename between Flax and PyTorch is mechanical: module path ``layer1_0/conv1``
is torch ``layer1.0.conv1`` (MobileNetV2's ``features_2/conv_1_0`` is
``features.2.conv.1.0``), ``shortcut_conv``/``shortcut_bn`` are ``shortcut.0``/
``shortcut.1`` (likewise ``downsample``); conv kernels are HWIO here and OIHW in
torch (a depthwise ``[3, 3, 1, C]`` is torch's ``[C, 1, 3, 3]``), Dense kernels are
transposed. PyTorch files are read with
``torch.load(weights_only=True)`` when torch is installed, and otherwise with a
restricted unpickler that only admits tensors, storages and ordered dicts
(``nrnp.torch_pickle``).
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nrnp import files
from nrnp.errors import CheckpointError, NonFiniteError
from nrnp.nets import layouts
from nrnp.nets.trees import flatten_variables

_TORCH_SUFFIXES = ('.th', '.pt', '.pth')
_RENAMES = {
    'shortcut_conv': 'shortcut.0',
    'shortcut_bn': 'shortcut.1',
    'downsample_conv': 'downsample.0',
    'downsample_bn': 'downsample.1',
}
# torch Sequential indices written with '_' in Flax names: layer1_0 -> layer1.0 (ResNets),
# features_2 / conv_1_0 / classifier_1 -> features.2 / conv.1.0 / classifier.1 (MobileNetV2).
_INDEXED = re.compile(r'^(layer\d+|features|conv|classifier)((?:_\d+)+)$')
_dotted = lambda m: m.group(1) + m.group(2).replace('_', '.')
_LEAF_TO_TORCH = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}


# ---------------------------------------------------------------- reading torch files


def _read_torch(path: str) -> Any:
    """Reads a torch checkpoint with ``torch.load(weights_only=True)``; arrays become numpy."""
    import torch  # noqa: PLC0415  (optional dependency)

    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # torch raises many types for truncated or unsafe files
        from nrnp.nets import torch_pickle  # noqa: PLC0415

        torch_pickle.load(path)  # names what is wrong when the file is not a checkpoint
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f'{path}: torch.load failed: {first}') from e
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
            from nrnp.nets import torch_pickle  # noqa: PLC0415  (only without torch)

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
        if not isinstance(key, str):
            raise CheckpointError(f'{path}: state dict key {key!r} is not a string')
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
    parts = [_RENAMES.get(m) or _INDEXED.sub(_dotted, m) for m in modules]
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


def _summary(kind: str, lines: list[str], shown: int = 6) -> list[str]:
    """The first `shown` problems of one kind, then how many more there are."""
    more = [f'... and {len(lines) - shown} more {kind}'] if len(lines) > shown else []
    return lines[:shown] + more


def state_dict_to_variables(
    state_dict: Mapping[str, np.ndarray], template: dict, *, layout: str = 'auto', flags=None
) -> dict:
    """Maps a PyTorch-layout state dict onto a Flax variables template.

    Args:
      state_dict: ``{torch_key: array}`` as from ``read_state_dict`` (OIHW convs).
      template: ``{'params', 'batch_stats'}`` from ``init_variables`` or
        ``jax.eval_shape`` of it; only leaf shapes and dtypes are used.
      layout: the checkpoint's key layout (``layouts.LAYOUTS``); 'auto' detects
        chenyaofo's ``downsample``/``fc`` names given to a CIFAR ResNet.
      flags: the config fields a mismatch hint names (default ``layouts.TEACHER_FLAGS``).

    Returns:
      Variables with the template's structure, leaves ``jax.Array`` in the
      template's dtype (float32 for the nrnp models).

    Raises:
      CheckpointError: naming missing keys, unexpected keys and shape mismatches (Flax
        path, torch key, checkpoint shape and expected shape; the first few of each kind
        and their counts), with the architecture the keys suggest and the flags to set.
      NonFiniteError: a leaf holds NaN or infinite values (named).
    """
    paths = jax.tree.flatten_with_path(template)[0]
    expected = {_torch_key(path): _torch_shape(leaf.shape) for path, leaf in paths}
    if layout == 'auto':
        layout = layouts.detect_layout(state_dict, expected)
    state_dict = layouts.from_layout(state_dict, layout)
    missing, mismatched, used, bad, pairs = [], [], set(), [], []

    def convert(path, leaf):
        key, flax_path = _torch_key(path), jax.tree_util.keystr(path, simple=True, separator='/')
        if key not in state_dict:
            missing.append(f'missing: {flax_path} <- {key} (expected {expected[key]})')
            return None
        used.add(key)
        value = np.asarray(state_dict[key])
        if value.shape != expected[key]:
            pairs.append((value.shape, expected[key]))
            mismatched.append(
                f'shape mismatch: {flax_path} <- {key}: checkpoint {value.shape}, expected '
                f'{expected[key]} (flax {tuple(leaf.shape)})'
            )
            return None
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            bad.append(f'{flax_path} <- {key}: {int((~np.isfinite(value)).sum())} of {value.size}')
        return jnp.asarray(_from_torch_layout(value).astype(leaf.dtype))

    variables = jax.tree.map_with_path(convert, template)
    unexpected = [f'unexpected: {k} {np.shape(state_dict[k])}' for k in state_dict if k not in used]
    if missing or mismatched or unexpected:
        problems = {'missing': missing, 'unexpected': unexpected, 'shape mismatches': mismatched}
        raise _mismatch(problems, pairs, layout, state_dict, expected, flags)
    if bad:
        raise NonFiniteError(
            'the checkpoint holds NaN or infinite values (leaf <- key: count of size): '
            + '; '.join(bad)
        )
    return variables


def _mismatch(problems: dict, pairs, layout: str, state_dict, expected: dict, flags):
    """The CheckpointError listing `problems` ({kind: lines}), then the hints: the
    architecture the checkpoint looks like, the width factor its shapes differ by."""
    total, shapes = sum(map(len, problems.values())), len(problems['shape mismatches'])
    counts = (
        f'{total} problem{"s" * (total != 1)}: {len(problems["missing"])} missing, '
        f'{len(problems["unexpected"])} unexpected, {shapes} shape mismatch{"es" * (shapes != 1)}'
    )
    read_as = f', keys read in the {layout} layout' if layout not in ('nrnp', 'akamaster') else ''
    lines = [
        x
        for kind in ('missing', 'shape mismatches', 'unexpected')
        for x in _summary(kind, problems[kind])
    ]
    found = layouts.describe({k: np.shape(v) for k, v in state_dict.items()})
    arch = layouts.describe(expected)
    hints = [layouts.hint(found, arch, flags), layouts.width_hint(pairs, arch, flags)]
    lines += [h for h in hints if h]
    return CheckpointError(
        f'state dict does not match the model ({counts}{read_as}):\n  ' + '\n  '.join(lines)
    )


def variables_to_state_dict(variables: dict) -> dict[str, np.ndarray]:
    """Exports Flax variables as a PyTorch-layout state dict (the inverse of the above).

    Args:
      variables: ``{'params', 'batch_stats'}`` of an nrnp model.

    Returns:
      ``{torch_key: array}`` with OIHW conv weights and ``[out, in]`` Linear weights.
    """
    leaves, _ = jax.tree.flatten_with_path(variables)
    return {_torch_key(path): _to_torch_layout(np.asarray(leaf)) for path, leaf in leaves}


# ---------------------------------------------------------------- export, any CNN


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
    out = {}
    for path, value in flatten_variables(variables).items():
        key = '.'.join([*path[1:-1], _GENERIC_LEAF.get(path[-1], path[-1])])
        if path[-1] == 'kernel' and value.ndim in (2, 4):
            value = value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)
        if key in out:
            raise ValueError(f'{"/".join(path)}: PyTorch key {key!r} is used twice')
        out[key] = value
    return out


def export_state_dict(
    variables: dict, path: str | os.PathLike, naming: str = 'auto', layout: str = 'nrnp'
) -> dict:
    """Writes `{'params', 'batch_stats'}` as a PyTorch-layout state dict (atomically).

    Args:
      variables: Flax variables.
      path: a `.npz` file, or a `.pt`/`.pth`/`.th` file in PyTorch's zip format
        (`torch.load(weights_only=True)` reads it); `read_state_dict` reads both.
      naming: 'nrnp' (`variables_to_state_dict`: nrnp's ResNets and
        SmallCNN, torchvision/akamaster names), 'generic' (`generic_state_dict`),
        or 'auto' (nrnp's when every leaf has a name there, else generic).
      layout: with nrnp names, the key layout to write (`layouts.LAYOUTS`), e.g.
        'chenyaofo' for pytorch-cifar-models' `downsample`/`fc` names.

    Returns:
      The state dict written.
    """
    if naming not in ('auto', 'nrnp', 'generic'):
        raise ValueError(f"naming must be 'auto', 'nrnp' or 'generic', got {naming!r}")
    state_dict = None
    if naming in ('auto', 'nrnp'):
        try:
            state_dict = layouts.to_layout(variables_to_state_dict(variables), layout)
        except CheckpointError:
            if naming == 'nrnp':
                raise
    if state_dict is None:
        state_dict = generic_state_dict(variables)
    if os.path.splitext(os.fspath(path))[1].lower() in _TORCH_SUFFIXES:
        from nrnp.nets import torch_pickle  # noqa: PLC0415

        torch_pickle.save(state_dict, path)
        return state_dict
    buffer = io.BytesIO()
    np.savez(buffer, **state_dict)
    files.atomic_write(path, buffer.getvalue())
    return state_dict

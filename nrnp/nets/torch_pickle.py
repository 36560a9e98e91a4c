"""Reads PyTorch checkpoint files without torch, unpickling only tensors, storages and dicts.

  obj = torch_pickle.load('resnet20-12fca82f.th')  # legacy (torch < 1.6) or zip format
  obj['conv1.weight']                               # a numpy array in torch's OIHW layout
  torch_pickle.load('evil.pt')                      # CheckpointError: forbidden global ...

`state_dicts.read_state_dict` uses it when torch is not installed (or `use_torch=False`).
Any global outside `_ALLOWED_GLOBALS` raises instead of being imported, so a hostile file
cannot run code; tensors are rebuilt as numpy arrays from their storages' raw bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from nrnp.errors import CheckpointError


class _StorageType:
    """Stand-in for a torch storage class (``torch.FloatStorage``, ...): just its dtype."""

    def __init__(self, name: str, dtype: np.dtype):
        self.name, self.dtype = name, np.dtype(dtype)


class _Storage:
    """A storage seen in the pickle; ``data`` is filled in once its bytes are read."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype, self.numel, self.data = dtype, numel, None


class _TensorRef:
    """A tensor seen in the pickle, materialised after the storages are read."""

    def __init__(self, storage, offset, size, stride, *unused):
        del unused  # requires_grad, backward hooks, metadata
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    del requires_grad, backward_hooks
    return data


_STORAGE_DTYPES = {
    'FloatStorage': np.float32,
    'DoubleStorage': np.float64,
    'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16,
    'LongStorage': np.int64,
    'IntStorage': np.int32,
    'ShortStorage': np.int16,
    'CharStorage': np.int8,
    'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _TensorRef,  # torch < 0.4 legacy files
    ('torch._utils', '_rebuild_tensor_v2'): _TensorRef,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch.storage', 'UntypedStorage'): _StorageType('UntypedStorage', np.uint8),
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    **{('torch', n): _StorageType(n, d) for n, d in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and torch storage ids."""

    def __init__(self, file, path: str, storages: dict[str, _Storage]):
        super().__init__(file)
        self._path, self._storages = path, storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f'{self._path}: refusing to unpickle forbidden global {module}.{name} '
                '(only tensors, storages and dicts are allowed)'
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'):
            raise CheckpointError(f'{self._path}: unsupported persistent id {pid!r}')
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f'{self._path}: persistent id {pid!r} has no storage type')
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError(f'{self._path}: legacy storage views are not supported')
        if key not in self._storages:
            self._storages[key] = _Storage(storage_type.dtype, numel)
        return self._storages[key]


def _materialise(obj: Any, path: str) -> Any:
    """Replaces every ``_TensorRef`` in a nest of dicts/lists with a numpy array."""
    if isinstance(obj, _TensorRef):
        data = obj.storage.data
        itemsize = data.dtype.itemsize
        try:
            view = np.ndarray(
                tuple(obj.size),
                data.dtype,
                buffer=data,
                offset=obj.offset * itemsize,
                strides=tuple(s * itemsize for s in obj.stride),
            )
        except (TypeError, ValueError) as e:
            raise CheckpointError(f'{path}: tensor lies outside its storage ({e})') from None
        return np.array(view)
    if isinstance(obj, Mapping):
        return type(obj)((k, _materialise(v, path)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_materialise(v, path) for v in obj)
    return obj


def _read_torch_legacy(raw: bytes, path: str) -> Any:
    """Reads the pre-1.6 torch format: magic, version, sys_info, object, keys, raw storages."""
    f = io.BytesIO(raw)
    storages: dict[str, _Storage] = {}
    load = lambda: _RestrictedUnpickler(f, path, storages).load()
    if load() != 0x1950A86A20F9469CFC6C:
        raise CheckpointError(f'{path}: not a PyTorch checkpoint (bad magic number)')
    load()  # protocol version
    load()  # sys_info
    obj = load()
    for key in load():
        storage = storages[str(key)]
        numel = int.from_bytes(f.read(8), 'little', signed=True)
        nbytes = numel * storage.dtype.itemsize
        chunk = f.read(nbytes)
        if len(chunk) != nbytes or numel != storage.numel:
            raise CheckpointError(f'{path}: truncated data for storage {key}')
        storage.data = np.frombuffer(chunk, storage.dtype.newbyteorder('<'))
    return obj, storages


def _read_torch_zip(path: str) -> Any:
    """Reads the torch zip format: ``<archive>/data.pkl`` plus ``<archive>/data/<key>``."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith('data.pkl')]
        if len(pickles) != 1:
            raise CheckpointError(f'{path}: zip file without a single data.pkl')
        prefix = pickles[0][: -len('data.pkl')]
        order = '<'
        if f'{prefix}byteorder' in archive.namelist():
            order = '>' if archive.read(f'{prefix}byteorder').strip() == b'big' else '<'
        storages: dict[str, _Storage] = {}
        obj = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), path, storages).load()
        for key, storage in storages.items():
            chunk = archive.read(f'{prefix}data/{key}')
            if len(chunk) < storage.numel * storage.dtype.itemsize:
                raise CheckpointError(f'{path}: truncated data for storage {key}')
            storage.data = np.frombuffer(chunk, storage.dtype.newbyteorder(order)).astype(
                storage.dtype
            )
    return obj, storages


def load(path: str) -> Any:
    """Reads a torch checkpoint (legacy or zip) without torch and without arbitrary pickles.

    Returns:
      The pickled object, normally a state dict, with every tensor as a numpy array.

    Raises:
      CheckpointError: a forbidden global, or a foreign, truncated or malformed file.
    """
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        if zipfile.is_zipfile(io.BytesIO(raw)):
            obj, _ = _read_torch_zip(path)
        elif raw[:1] == b'\x80':
            obj, _ = _read_torch_legacy(raw, path)
        else:
            raise CheckpointError(f'{path}: not a PyTorch checkpoint (neither zip nor pickle)')
    except CheckpointError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        KeyError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        zipfile.BadZipFile,
    ) as e:
        raise CheckpointError(f'{path}: truncated or malformed PyTorch checkpoint ({e!r})') from e
    return _materialise(obj, path)

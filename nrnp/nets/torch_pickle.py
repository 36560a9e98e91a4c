"""Reads and writes PyTorch checkpoint files without torch, unpickling only tensors and dicts.

  obj = torch_pickle.load('resnet20-12fca82f.th')  # legacy (torch < 1.6) or zip format
  obj['conv1.weight']                               # a numpy array in torch's OIHW layout
  torch_pickle.load('evil.pt')                      # CheckpointError: forbidden global ...
  torch_pickle.save({'conv1.weight': w}, 'net.pt')  # torch.load(weights_only=True) reads it

`state_dicts.read_state_dict` uses `load` when torch is not installed (or `use_torch=False`).
Any global outside `_ALLOWED_GLOBALS` raises instead of being imported, so a hostile file
cannot run code; tensors are rebuilt as numpy arrays from their storages' raw bytes. `save`
writes torch's zip format (`archive/data.pkl` with persistent-id storages, `archive/data/<k>`
64-byte aligned, `archive/version`) from numpy arrays, emitting the pickle opcodes itself.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
import zlib
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
        return _materialise(obj, path)
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
        OverflowError,
        RecursionError,
        MemoryError,
        NotImplementedError,  # zip members compressed with an unsupported method
        OSError,
        struct.error,
        zlib.error,
        zipfile.BadZipFile,
    ) as e:
        raise CheckpointError(f'{path}: truncated or malformed PyTorch checkpoint ({e!r})') from e


# ---------------------------------------------------------------- writing


_STORAGE_NAMES = {np.dtype(d): n for n, d in _STORAGE_DTYPES.items()}
_ALIGNMENT = 64  # torch aligns each storage's bytes in the zip (what mmap loading needs)


class _Pickler:
    """Emits protocol-2 pickle opcodes for dicts, scalars, strings and numpy tensors."""

    def __init__(self):
        self.out, self.storages = bytearray(b'\x80\x02'), []

    def _global(self, module: str, name: str) -> None:
        self.out += f'c{module}\n{name}\n'.encode()

    def _tuple(self, items) -> None:
        self.out += b'('
        for item in items:
            self.value(item)
        self.out += b't'

    def value(self, obj: Any) -> None:
        if isinstance(obj, np.ndarray | np.generic):
            self._tensor(np.asarray(obj))
        elif isinstance(obj, Mapping):
            self.out += b'}'
            if obj:
                self.out += b'('
                for key, item in obj.items():
                    self.value(key)
                    self.value(item)
                self.out += b'u'  # SETITEMS
        elif isinstance(obj, bool) or obj is None:
            self.out += {True: b'\x88', False: b'\x89', None: b'N'}[obj]
        elif isinstance(obj, int):
            n = (obj.bit_length() + 8) // 8
            self.out += b'\x8a' + bytes([n]) + obj.to_bytes(n, 'little', signed=True)  # LONG1
        elif isinstance(obj, float):
            self.out += b'G' + struct.pack('>d', obj)
        elif isinstance(obj, str):
            data = obj.encode()
            self.out += b'X' + struct.pack('<I', len(data)) + data
        elif isinstance(obj, list | tuple):
            self._tuple(obj)  # tuples suffice for torch.load
        else:
            raise TypeError(f'cannot save a {type(obj).__name__} in a torch checkpoint')

    def _tensor(self, array: np.ndarray) -> None:
        array = np.asarray(array, array.dtype.newbyteorder('<'), order='C')  # keeps 0-d
        if array.dtype not in _STORAGE_NAMES:
            raise TypeError(f'no torch storage for dtype {array.dtype}')
        key = str(len(self.storages))
        self.storages.append(array.tobytes())
        strides = [int(np.prod(array.shape[i + 1 :])) for i in range(array.ndim)]
        self._global('torch._utils', '_rebuild_tensor_v2')
        self.out += b'(('  # MARK the arguments, MARK the storage's persistent id
        self.value('storage')
        self._global('torch', _STORAGE_NAMES[array.dtype])  # its type: a torch global
        for item in (key, 'cpu', array.size):
            self.value(item)
        self.out += b'tQ'  # TUPLE, BINPERSID: the storage; then offset, size, stride, ...
        self.value(0)
        self._tuple(array.shape)
        self._tuple(strides)
        self.out += b'\x89'  # requires_grad=False
        self._global('collections', 'OrderedDict')
        self.out += b')R'  # backward_hooks = OrderedDict()
        self.out += b'tR'  # TUPLE, REDUCE


def save(state_dict: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Writes `state_dict` in PyTorch's zip format, atomically (tmp file + rename).

    Args:
      state_dict: {key: numpy array}, possibly nested in dicts beside ints, floats and
        strings (e.g. {'state_dict': {...}, 'best_prec1': 93.4}).
      path: the `.pt`/`.pth`/`.th` file.
    """
    pickler = _Pickler()
    pickler.value(state_dict)
    pickler.out += b'.'  # STOP
    records = [('data.pkl', bytes(pickler.out)), ('byteorder', b'little')]
    records += [(f'data/{i}', data) for i, data in enumerate(pickler.storages)]
    records += [('version', b'3\n')]
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f'.{os.path.basename(path)}.tmp')
    try:
        with open(tmp, 'wb') as f, zipfile.ZipFile(f, 'w', zipfile.ZIP_STORED) as archive:
            for name, data in records:
                info = zipfile.ZipInfo(f'archive/{name}', date_time=(1980, 1, 1, 0, 0, 0))
                if name.startswith('data/'):  # pad the local header so the bytes align
                    pad = -(f.tell() + 30 + len(info.filename) + 4) % _ALIGNMENT
                    info.extra = b'FB' + struct.pack('<H', pad) + b'Z' * pad
                archive.writestr(info, data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

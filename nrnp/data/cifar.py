"""CIFAR-10/100 from the official binary archives (plain bytes, no pickle): find, fetch, read.

  archive = locate_archive('cifar100', data_dir='/data')   # manual/, data_dir/, or downloaded
  test = load_cifar('cifar100', 'test', archive)           # images [10000, 32, 32, 3] uint8

The archives are the ones TFDS builds its cifar10/cifar100 from; their URL, size and sha256
are read from the installed tensorflow_datasets' `url_checksums` (without importing it),
with the same values as constants when it is absent. `cifar-10-binary.tar.gz` holds
`cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin` (records: 1 label byte, 3072 bytes
CHW) and `batches.meta.txt`; `cifar-100-binary.tar.gz` holds `cifar-100-binary/{train,test}.bin`
(records: coarse label, fine label, 3072 bytes) and `fine_label_names.txt`. Decoded splits
are cached beside the archive (`<stem>.<split>.npz`, written atomically and verified on
reading: `npz_cache`), so a second read takes a fraction of a second instead of
decompressing 170 MB again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
import tarfile
import zlib

import numpy as np

from nrnp import files
from nrnp.data import downloads, npz_cache
from nrnp.data.dataset import Dataset
from nrnp.errors import DataError


@dataclasses.dataclass(frozen=True)
class Archive:
    """Where an archive comes from and what it must be."""

    url: str
    size: int | None
    sha256: str | None
    filename: str


@dataclasses.dataclass(frozen=True)
class _Layout:
    prefix: str  # directory inside the archive
    splits: dict  # split -> member files, in order
    label_bytes: int  # 1 (CIFAR-10) or 2 (CIFAR-100: coarse, fine)
    names_file: str
    num_classes: int
    python_prefix: str  # what the pickle ("python version") archive holds instead


_LAYOUTS = {
    'cifar10': _Layout(
        'cifar-10-batches-bin/',
        {'train': tuple(f'data_batch_{i}.bin' for i in range(1, 6)), 'test': ('test_batch.bin',)},
        1,
        'batches.meta.txt',
        10,
        'cifar-10-batches-py/',
    ),
    'cifar100': _Layout(
        'cifar-100-binary/',
        {'train': ('train.bin',), 'test': ('test.bin',)},
        2,
        'fine_label_names.txt',
        100,
        'cifar-100-python/',
    ),
}
NAMES = tuple(_LAYOUTS)
_KRIZ = 'https://www.cs.toronto.edu/~kriz/'
_FALLBACK = {  # tensorflow_datasets 4.9.10's url_checksums/cifar10.txt and cifar100.txt
    'cifar10': Archive(
        _KRIZ + 'cifar-10-binary.tar.gz',
        170052171,
        'c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd',
        'cifar-10-binary.tar.gz',
    ),
    'cifar100': Archive(
        _KRIZ + 'cifar-100-binary.tar.gz',
        168513733,
        '58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec',
        'cifar-100-binary.tar.gz',
    ),
}
_IMAGE_BYTES = 32 * 32 * 3
_CACHE_VERSION = 1


def _layout(name: str) -> _Layout:
    if name not in _LAYOUTS:
        raise DataError(f'no CIFAR archive for {name!r}; known: {", ".join(NAMES)}')
    return _LAYOUTS[name]


def archive_info(name: str) -> Archive:
    """The official archive of `name`: from TFDS's url_checksums when installed, else built in."""
    _layout(name)
    fallback = _FALLBACK[name]
    spec = importlib.util.find_spec('tensorflow_datasets')  # locates it, imports nothing
    for root in (spec.submodule_search_locations or []) if spec else []:
        try:
            with open(os.path.join(root, 'url_checksums', f'{name}.txt')) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) >= 3 and fields[0].endswith('/' + fallback.filename):
                        return Archive(fields[0], int(fields[1]), fields[2], fallback.filename)
        except (OSError, ValueError):
            continue
    return fallback


def locate_archive(
    name: str,
    data_dir: str | None,
    *,
    download: bool = True,
    url: str = '',
    sha256: str = '',
    log=print,
) -> str:
    """The path of `name`'s binary archive: found in `data_dir` or downloaded into it.

    Looks in `<data_dir>/downloads/manual/`, then `<data_dir>/`, then
    `<data_dir>/downloads/` (where it is downloaded to). Each is checked against the
    archive's size and sha256 (hashed once, then remembered beside it).

    Args:
      name: 'cifar10' or 'cifar100'.
      data_dir: the directory to search and download into; None or '' means
        `nrnp.files.cache_dir()/datasets`.
      download: False never touches the network (a missing archive raises).
      url: a mirror to download from instead of the official URL (same bytes expected
        unless `sha256` is given).
      sha256: the archive's expected sha256 instead of the official one (for another
        archive in the same format); its size is then not checked.
      log: progress sink.

    Raises:
      DownloadError: missing and not downloadable (offline, download=False) or not
        matching its checksum; the message says what to download and where to put it.
    """
    info = archive_info(name)
    size = None if sha256 else info.size
    sha256 = sha256 or info.sha256
    data_dir = os.path.abspath(data_dir or os.path.join(files.cache_dir(), 'datasets'))
    manual = os.path.join(data_dir, 'downloads', 'manual', info.filename)
    hint = (
        f'or set --config.data.data_dir=DIR (holding the archive, or a prepared TFDS '
        f'ArrayRecord {name}) or --config.data.image_folder=DIR'
    )
    if not download:
        hint += ' (--config.data.download=True fetches it)'
    for candidate in (manual, os.path.join(data_dir, info.filename)):
        if os.path.isfile(candidate):
            return downloads.fetch(url or info.url, candidate, sha256=sha256, size=size)
    dest = os.path.join(data_dir, 'downloads', info.filename)
    return downloads.fetch(
        url or info.url, dest, sha256=sha256, size=size, download=download, log=log, hint=hint
    )


# ---------------------------------------------------------------- reading


def _parse_split(split: str, name: str) -> tuple[str, str]:
    """'train[:90%]' -> ('train', ':90%'); the bracket is '' for a whole split."""
    match = re.fullmatch(r'(train|test)(?:\[([^\]]*)\])?', split.strip())
    if not match:
        raise DataError(
            f'{name} has splits train and test (optionally sliced, e.g. train[:90%]), not {split!r}'
        )
    return match.group(1), match.group(2) or ''


def _slice(spec: str, n: int, split: str) -> slice:
    """TFDS-style `a:b` bounds, each an int or a percent (rounded), on `n` examples."""
    if not spec:
        return slice(0, n)
    parts = spec.split(':')
    if len(parts) != 2:
        raise DataError(f'split {split!r}: expected [start:stop], e.g. train[:1000]')

    def bound(text: str, default: int) -> int:
        text = text.strip()
        if not text:
            return default
        try:
            return round(float(text[:-1]) * n / 100) if text.endswith('%') else int(text)
        except ValueError:
            raise DataError(f'split {split!r}: {text!r} is not an int or a percent') from None

    return slice(bound(parts[0], 0), bound(parts[1], n))


def _cache_path(archive_path: str, base: str) -> str:
    stem = os.path.basename(archive_path).removesuffix('.gz').removesuffix('.tar')
    return os.path.join(os.path.dirname(archive_path), f'{stem}.{base}.npz')


def _stamp(archive_path: str) -> np.ndarray:
    stat = os.stat(archive_path)
    return np.array([_CACHE_VERSION, stat.st_size, stat.st_mtime_ns], np.int64)


def _read_cache(path: str, stamp: np.ndarray, log):
    """The cached arrays when they verify (`npz_cache`) and are of this archive, else None."""
    arrays = npz_cache.read(path, ('stamp', 'images', 'labels', 'class_names'), log)
    if arrays is None or not np.array_equal(arrays.pop('stamp'), stamp):
        return None
    return arrays


def _remove_orphans(path: str) -> None:
    """Deletes `<path>.tmp-<pid>` files whose process is gone (a killed earlier write)."""
    directory, prefix = os.path.dirname(path), os.path.basename(path) + '.tmp-'
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            pid = name[len(prefix) :]
            if name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(directory, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process
    return True


def _write_cache(path: str, stamp: np.ndarray, arrays: dict) -> None:
    """Writes the decoded split through a temporary file + rename (best effort)."""
    _remove_orphans(path)
    tmp = f'{path}.tmp-{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            npz_cache.write(f, {'stamp': stamp, **arrays})
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only directory: decode again next time
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _decode(name: str, archive_path: str) -> dict[str, dict]:
    """Every split of the archive: {split: {images [N, 32, 32, 3], labels [N], class_names}}."""
    layout = _layout(name)
    wanted = {layout.prefix + f for files in layout.splits.values() for f in files}
    wanted.add(layout.prefix + layout.names_file)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive_path, 'r:gz') as tar:
            for member in tar:
                member_name = member.name.removeprefix('./')
                if member_name.startswith(layout.python_prefix):
                    raise DataError(
                        f'{archive_path} is the python (pickle) version of {name}; nrnp reads '
                        f'the binary version {archive_info(name).url}'
                    )
                if member_name in wanted and member.isfile():
                    found[member_name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(
            f'{archive_path}: unreadable archive ({e}); delete it and fetch it again'
        ) from e
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(
            f'{archive_path} is not the {name} binary archive: it lacks {", ".join(missing)}'
        )
    names = found[layout.prefix + layout.names_file].decode('utf-8', 'replace').splitlines()
    class_names = np.array([n.strip() for n in names if n.strip()])
    if len(class_names) != layout.num_classes:
        raise DataError(
            f'{archive_path}: {layout.names_file} names {len(class_names)} classes, '
            f'not {layout.num_classes}'
        )
    record = layout.label_bytes + _IMAGE_BYTES
    out = {}
    for split, members in layout.splits.items():
        raw = b''.join(found[layout.prefix + m] for m in members)
        if len(raw) % record:
            raise DataError(f'{archive_path}: {split} files are not whole {record}-byte records')
        records = np.frombuffer(raw, np.uint8).reshape(-1, record)  # [N, label bytes + 3072]
        labels = records[:, layout.label_bytes - 1].astype(np.int32)  # the fine label is last
        if labels.max(initial=0) >= layout.num_classes:
            raise DataError(f'{archive_path}: {split} has label {labels.max()} >= classes')
        images = records[:, layout.label_bytes :].reshape(-1, 3, 32, 32)  # [N, C, H, W]
        images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # [N, H, W, C]
        out[split] = {'images': images, 'labels': labels, 'class_names': class_names}
    return out


def load_cifar(name: str, split: str, archive_path: str, log=print) -> Dataset:
    """Reads one split of a CIFAR binary archive into memory.

    Args:
      name: 'cifar10' or 'cifar100'.
      split: 'train' or 'test', optionally sliced TFDS-style: 'train[:45000]', 'test[:10%]'.
      archive_path: the `.tar.gz` (e.g. from `locate_archive`).
      log: sink of the warning about a damaged cache file (set aside, decoded again).

    Returns:
      Dataset with images [N, 32, 32, 3] uint8 (NHWC), labels [N] int32 (CIFAR-100: the
      fine labels) and the class names in label order (CIFAR-100: the 100 fine names).

    Raises:
      DataError: an unreadable or foreign archive, or an unknown split.
    """
    layout = _layout(name)
    base, bounds = _parse_split(split, name)
    stamp = _stamp(archive_path)
    arrays = _read_cache(_cache_path(archive_path, base), stamp, log)
    if arrays is None:
        decoded = _decode(name, archive_path)
        for other, other_arrays in decoded.items():
            _write_cache(_cache_path(archive_path, other), stamp, other_arrays)
        arrays = decoded[base]
    index = _slice(bounds, len(arrays['labels']), split)
    return Dataset(
        arrays['images'][index],
        arrays['labels'][index],
        layout.num_classes,
        tuple(str(n) for n in arrays['class_names']),
    )

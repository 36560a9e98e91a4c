"""Decoded images cached as `.npz` files that carry the sha256 of their own arrays.

  with open(tmp, 'wb') as f: npz_cache.write(f, {'images': images, 'labels': labels})
  arrays = npz_cache.read(path, ('images', 'labels'), log=print)   # None: decode again

A cache file holds its arrays and `sha256`, the digest of every array's name, dtype, shape
and bytes. `read` verifies it: a file that is unreadable, has no digest (an older nrnp's)
or whose arrays do not match it is set aside (renamed `<file>.corrupt-<time>`) with one
warning line, and the caller decodes the images again. Writing it atomically is the
caller's (a temporary file, then a rename).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib

import numpy as np

from nrnp import files

DIGEST = 'sha256'


def digest(arrays: dict[str, np.ndarray]) -> str:
    """The hex sha256 of the arrays' names, dtypes, shapes and bytes (in name order)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        h.update(f'{name}\0{array.dtype.str}\0{array.shape}\0'.encode())
        h.update(array.tobytes())
    return h.hexdigest()


def write(f, arrays: dict[str, np.ndarray]) -> None:
    """Writes `arrays` and their digest as an `.npz` into the open binary file `f`."""
    np.savez(f, **arrays, **{DIGEST: np.array(digest(arrays))})


def _problem(path: str, names) -> tuple[dict | None, str]:
    """(arrays, '') when `path` verifies, else (None, what is wrong)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in names}
            recorded = str(z[DIGEST]) if DIGEST in z.files else None
    except (OSError, ValueError, KeyError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        return None, f'unreadable: {type(e).__name__}: {str(e)[:120]}'
    if recorded is None:
        return None, 'it has no checksum (an older nrnp wrote it)'
    if digest(arrays) != recorded:
        return None, 'its arrays do not match their checksum'
    return arrays, ''


def read(path: str, names, log=print, what: str = 'decoded-image cache') -> dict | None:
    """The arrays `names` of the cache file `path`, verified; None when there is none.

    A damaged file is set aside with one warning line (left in place, with a note, when
    its directory is read-only) and None returned: the caller decodes again.
    """
    if not os.path.exists(path):
        return None
    arrays, problem = _problem(path, names)
    if not problem:
        return arrays
    try:
        aside = f'set aside as {files.set_aside(path)}'
    except OSError as e:
        aside = f'left in place ({e.strerror})'
    log(f'warning: the {what} {path} is damaged ({problem}): {aside}; decoding the images again')
    return None

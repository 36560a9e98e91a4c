"""The decoded-image cache of image folders, one per user, shared by every workdir.

  path = entry(default_dir(), root, 'train', paths, 32, channels=3)     # keyed by content
  arrays = npz_cache.read(path, ('images', 'labels'), log)             # None: decode
  store(path, {'images': images, 'labels': labels}, log)               # atomic

It lives in `$NRNP_CACHE/images` (default `~/.cache/nrnp/images`, `files.cache_dir`), so a
second workdir on the same folder reads the decoded arrays instead of decoding again. An
entry is named by a content key: the sha256 of every file's path relative to the folder's
root, size and modification time (nanoseconds), in listing order, with the decoding settings
(image size, channels) and `KEY_VERSION`. Only `stat` is needed (milliseconds for 60,000
files, where hashing their bytes would read the whole folder); any edit, addition, removal or
rename changes the key; a moved folder, or a copy that keeps modification times (`cp -a`,
`rsync -a`), keeps it; a copy that does not costs one decoding. Entries verify themselves
(`npz_cache`: a damaged one is set aside and rebuilt) and are written atomically, so runs
sharing the cache never read half a file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import time

import numpy as np

from nrnp import errors, files
from nrnp.data import npz_cache

# Bump when decoding changes what an image becomes (entries of the old key are then unused).
KEY_VERSION = 1
STALE_TMP_S = 24 * 3600  # a temporary file untouched this long was left by a killed writer
# A full disk stops the run (its checkpoints would fail next); other places that cannot be
# written only cost caching.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_FIX = 'free some space, or set NRNP_CACHE to a place with room, then rerun'


def default_dir() -> str:
    """The shared decoded-image cache: `$NRNP_CACHE/images` (`files.cache_dir()`)."""
    return os.path.join(files.cache_dir(), 'images')


def content_key(root: str, paths: list[str], image_size: int | None, channels: int) -> str:
    """The hex sha256 naming `paths` decoded with these settings.

    Args:
      root: the image folder's root (paths are keyed relative to it).
      paths: every image file, in the order the images are decoded.
      image_size: the size images are resized to (None: as stored).
      channels: 1 or 3, what images are converted to.
    """
    digest = hashlib.sha256(repr((KEY_VERSION, image_size, channels, len(paths))).encode())
    for path in paths:
        st = os.stat(path)
        relative = os.path.relpath(path, root)
        digest.update(f'{relative}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode(**files.ENCODING))
    return digest.hexdigest()


def entry(
    cache_dir: str, root: str, split: str, paths: list[str], image_size: int | None, channels: int
) -> str:
    """The cache file of `paths` decoded with these settings (`content_key`)."""
    key = content_key(root, paths, image_size, channels)
    return os.path.join(cache_dir, f'imagefolder-{split}-{key[:24]}.npz')


def store(path: str, arrays: dict[str, np.ndarray], log=print) -> bool:
    """Writes `arrays` (`npz_cache.write`) to `path` atomically; whether it was written.

    Through `<random>.npz.tmp` + rename: complete or absent (an interrupt, SIGTERM
    included, removes the temporary file). A cache that cannot be written for another
    reason than space (read-only, no permission, `$NRNP_CACHE` a file) is worded as one
    warning line and the caller goes on without it.

    Raises:
      errors.StorageError: the disk is full or over quota (the message gives the free
        space the write met: it is worded before the temporary file goes).
    """
    cache_dir = os.path.dirname(path)
    tmp = None
    try:
        os.makedirs(cache_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix='.npz.tmp')
        with os.fdopen(fd, 'wb') as f:
            npz_cache.write(f, arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is meant to be shared
        os.replace(tmp, path)  # Atomic: concurrent readers never see half a file.
    except Exception as e:
        full = errors.storage_error(e, path, 'the decoded-image cache', _FIX, among=_FULL)
        if tmp is not None:
            os.unlink(tmp)
        if full is not None:
            raise full from e
        number = errors.storage_errno(e)
        if number is None:
            raise
        log(
            f'warning: cannot write the decoded-image cache {path} '
            f'({errors.reason(number, path)}): going on without it; set NRNP_CACHE to a '
            'writable directory to reuse decoded images'
        )
        return False
    except BaseException:
        if tmp is not None:
            os.unlink(tmp)
        raise
    remove_stale(cache_dir)
    return True


def remove_stale(cache_dir: str, older_than_s: float = STALE_TMP_S) -> list[str]:
    """Deletes the temporary files of writers killed long ago (others may be writing now)."""
    removed = []
    now = time.time()
    with contextlib.suppress(OSError):
        for e in os.scandir(cache_dir):
            if e.name.endswith('.npz.tmp') and now - e.stat().st_mtime > older_than_s:
                with contextlib.suppress(OSError):
                    os.remove(e.path)
                    removed.append(e.name)
    return removed

"""Small file helpers shared by every layer: atomic writes, file hashes, the cache directory.

atomic_write('/w/report.json', text)   # readers see the old file or the new one, never half
digest = sha256_file(path)             # hex sha256, read in 1 MiB chunks
root = cache_dir()                     # $NRNP_CACHE, $XDG_CACHE_HOME/nrnp or ~/.cache/nrnp
remove_stale('/w/cache', '[.]tmp$')    # what an interrupted write left behind

Text nrnp writes is UTF-8 whatever the locale (`ENCODING`; a path the locale cannot
decode keeps its bytes through `surrogateescape`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil

ENCODING = {'encoding': 'utf-8', 'errors': 'surrogateescape'}  # for text-mode open()


def atomic_write(path: str | os.PathLike, payload: bytes | str) -> None:
    """Writes `payload` to `path` through a temporary file in the same directory + rename.

    Raises:
      OSError: the directory cannot be written (`errors.writing` words it for the user).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.tmp-{os.getpid()}')
    data = payload.encode(**ENCODING) if isinstance(payload, str) else payload
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_source() -> tuple[str, str]:
    """(nrnp's cache directory, what chose it: 'NRNP_CACHE', 'XDG_CACHE_HOME' or '')."""
    if os.environ.get('NRNP_CACHE'):
        return os.path.abspath(os.path.expanduser(os.environ['NRNP_CACHE'])), 'NRNP_CACHE'
    if os.environ.get('XDG_CACHE_HOME'):
        return os.path.join(os.environ['XDG_CACHE_HOME'], 'nrnp'), 'XDG_CACHE_HOME'
    return os.path.join(os.path.expanduser('~'), '.cache', 'nrnp'), ''


def cache_dir() -> str:
    """nrnp's per-user cache: `$NRNP_CACHE`, else `$XDG_CACHE_HOME/nrnp`, else `~/.cache/nrnp`."""
    return cache_source()[0]


def remove_stale(directory: str, pattern: str) -> list[str]:
    """Deletes the entries of `directory` whose names match `pattern` (a regex); their names.

    For the temporary files and directories an interrupted write left behind: call it only
    where no other process writes (a workdir under its lock).
    """
    try:
        names = [n for n in os.listdir(directory) if re.search(pattern, n)]
    except OSError:
        return []
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)
    return names

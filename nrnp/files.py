"""Small file helpers shared by every layer: atomic writes, file hashes, the cache directory.

atomic_write('/w/report.json', text)   # readers see the old file or the new one, never half
digest = sha256_file(path)             # hex sha256, read in 1 MiB chunks
root = cache_dir()                     # $NRNP_CACHE, $XDG_CACHE_HOME/nrnp or ~/.cache/nrnp
"""

from __future__ import annotations

import hashlib
import os


def atomic_write(path: str | os.PathLike, payload: bytes | str) -> None:
    """Writes `payload` to `path` through a temporary file in the same directory + rename."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.tmp-{os.getpid()}')
    data = payload.encode() if isinstance(payload, str) else payload
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


def cache_dir() -> str:
    """nrnp's per-user cache: `$NRNP_CACHE`, else `$XDG_CACHE_HOME/nrnp`, else `~/.cache/nrnp`."""
    if os.environ.get('NRNP_CACHE'):
        return os.path.abspath(os.path.expanduser(os.environ['NRNP_CACHE']))
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'nrnp')

"""Small file helpers shared by every layer: atomic writes, file hashes, the cache directory.

atomic_write('/w/report.json', text)   # readers see the old file or the new one, never half
digest = sha256_file(path)             # hex sha256, read in 1 MiB chunks
root = cache_dir()                     # $NRNP_CACHE, $XDG_CACHE_HOME/nrnp or ~/.cache/nrnp
remove_stale('/w/cache', '[.]tmp$')    # what an interrupted write left behind
aside = set_aside('/w/teacher')         # a damaged file or directory, renamed, never deleted
seal('/w/teacher'); problem = verify('/w/teacher')   # '' when its files match CHECKSUMS

Text nrnp writes is UTF-8 whatever the locale (`ENCODING`; a path the locale cannot
decode keeps its bytes through `surrogateescape`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time

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


def set_aside(path: str) -> str:
    """Renames a damaged file or directory to `<path>.corrupt-<time>`; the new path.

    Kept for inspection, never deleted.

    Raises:
      OSError: it cannot be renamed (a read-only directory).
    """
    aside = base = f'{path}.corrupt-{time.strftime("%Y%m%d-%H%M%S")}'
    count = 1
    while os.path.lexists(aside):
        count += 1
        aside = f'{base}-{count}'
    os.replace(path, aside)
    return aside


CHECKSUMS = 'nrnp_checksums.json'  # in a directory: the sha256 of its other files


def checksums(directory: str) -> dict[str, str]:
    """{path relative to `directory`: hex sha256} of every file under it but CHECKSUMS."""
    out = {}
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            relative = os.path.relpath(path, directory)
            if relative != CHECKSUMS:
                out[relative] = sha256_file(path)
    return out


def seal(directory: str) -> None:
    """Writes `directory/CHECKSUMS`: the sha256 of every file under it (atomically, last)."""
    record = {'sha256': checksums(directory)}
    atomic_write(os.path.join(directory, CHECKSUMS), json.dumps(record, indent=0))


def verify(directory: str) -> str:
    """What is wrong with the files of `directory` ('' = verified against its CHECKSUMS).

    Returns:
      '' when every file matches its recorded sha256, else a short description of the
      first difference; a directory without CHECKSUMS (killed before it was sealed, the
      file deleted, or an older nrnp's) cannot be verified and counts as damaged.
    """
    path = os.path.join(directory, CHECKSUMS)
    if not os.path.exists(path):
        return f'its {CHECKSUMS} is missing, so it cannot be verified'
    try:
        with open(path, **ENCODING) as f:
            expected = json.load(f)['sha256']
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f'its {CHECKSUMS} is unreadable ({e})'
    for relative, digest in sorted(expected.items()):
        full = os.path.join(directory, relative)
        if not os.path.isfile(full):
            return f'{relative} is missing'
        if sha256_file(full) != digest:
            return f'{relative} does not match its checksum'
    return ''


def differences(old: dict, new: dict, prefix: str = '') -> list[str]:
    """'key: old -> new' for every entry where two recorded identities differ (nested keys
    dotted, tuples compared as the lists JSON gives back): the one "is this the same run?"
    rule, for a workdir's fingerprint, a trained teacher's config and a checkpoint's schedule.
    """
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, '<absent>'), new.get(key, '<absent>')
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f'{prefix}{key}.')
        elif _as_json(a) != _as_json(b):
            out.append(f'{prefix}{key}: {a!r} -> {b!r}')
    return out


def _as_json(value):
    return [_as_json(v) for v in value] if isinstance(value, tuple | list) else value

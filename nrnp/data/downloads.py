"""Fetching one file by URL into place: resumable, verified, atomic, and quick to fail offline.

  path = fetch(URL, '/data/downloads/cifar-10-binary.tar.gz', sha256=HEX, size=170052171,
               hint='or set --config.data.image_folder=DIR')   # returns at once when present
  fetch(URL, dest, sha256=HEX, download=False)   # missing: DownloadError saying what goes where
  file_digest(path)                              # its sha256, hashed once per size + mtime

The body streams to `<dest>.part` (resumed with an HTTP Range request on the next try or
call) and is renamed to `dest` only once its size and sha256 match, so `dest` is never half
written. A verified file's digest is remembered in `<dest>.sha256.json` (with its size and
mtime), so a large archive is hashed once, not on every run. Timeouts, resets, 5xx answers
and truncated bodies are retried; an unresolvable host or a refused connection (offline)
fails at once with what to download and where to put it (`transfer` does the HTTP).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time

from nrnp import errors, files
from nrnp.data import transfer
from nrnp.errors import DownloadError

_BACKOFF_SECONDS = 0.5  # the first retry's wait; doubled per retry, at most 8x


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    size: int | None = None,
    download: bool = True,
    retries: int = 3,
    timeout: float = 30.0,
    log=print,
    hint: str = '',
) -> str:
    """Returns `dest`, downloading `url` there first when it is missing.

    Args:
      url: http(s) URL of the file.
      dest: where the file belongs; its directory is created when downloading.
      sha256: the file's full hex sha256 (checked after download, and once for a file
        already at `dest`).
      sha256_prefix: the first hex digits of its sha256 (torch-hub file names), when the
        full digest is unknown.
      size: its size in bytes, when known (checked before hashing).
      download: False never touches the network: a missing file raises.
      retries: further attempts after a transient failure (each resumes the `.part`).
      timeout: seconds for connecting and for each read.
      log: progress sink (lines of bytes done/total, MB/s, ETA every ~2 s and at the end).
      hint: the caller's alternative, appended to the instructions of every error
        (e.g. 'or set --config.data.image_folder=DIR').

    Returns:
      The absolute path of the verified file.

    Raises:
      DownloadError: missing with `download=False`, offline, an HTTP error, retries
        exhausted, or a size/sha256 mismatch; the message names the URL, size, sha256,
        the destination and `hint`.
      errors.StorageError: the destination cannot be written (under nrnp's cache: naming
        NRNP_CACHE).
    """
    dest = os.path.abspath(os.fspath(dest))
    expect = _Expected(url, dest, sha256, sha256_prefix, size, hint)
    if os.path.isfile(dest):
        _check_existing(dest, expect)
        return dest
    if not download:
        raise DownloadError(expect.instructions('it is missing and downloads are disabled'))
    root, variable = files.cache_source()
    fix = 'free some space, or put the file there yourself'
    if dest.startswith(root + os.sep):
        fix = f'set NRNP_CACHE to a writable directory (the cache is {root}'
        fix += f', from ${variable})' if variable else ')'
    with errors.writing(dest, 'the download', fix):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with _directory_lock(os.path.dirname(dest)):
            if os.path.isfile(dest):  # another process fetched it while we waited
                _check_existing(dest, expect)
                return dest
            part = dest + '.part'
            _download(url, part, expect, retries, timeout, log)
            digest = _verify_part(part, expect)
            os.replace(part, dest)
            _remember(dest, digest)
    return dest


class _Expected:
    """What the file must be, and the instructions every error ends with."""

    def __init__(self, url, dest, sha256, sha256_prefix, size, hint):
        self.url, self.dest, self.size, self.hint = url, dest, size, hint
        self.sha256 = (sha256 or '').lower() or None
        self.prefix = (sha256_prefix or '').lower() or None
        for value in (self.sha256, self.prefix):
            if value is not None and not re.fullmatch(r'[0-9a-f]{1,64}', value):
                raise DownloadError(f'{url}: {value!r} is not a hex sha256 (prefix)')
        if self.sha256 is not None and len(self.sha256) != 64:
            raise DownloadError(f'{url}: sha256 {self.sha256!r} must have 64 hex digits')

    @property
    def hashed(self) -> bool:
        return bool(self.sha256 or self.prefix)

    def matches(self, digest: str) -> bool:
        return digest == self.sha256 if self.sha256 else digest.startswith(self.prefix or '')

    def describe_hash(self) -> str:
        return self.sha256 or (f'{self.prefix}... (prefix)' if self.prefix else 'not given')

    def instructions(self, reason: str) -> str:
        size = f'{self.size} bytes ({self.size / 1e6:.1f} MB)' if self.size else 'unknown'
        lines = [
            f'cannot get {os.path.basename(self.dest)}: {reason}.',
            f'  download:  {self.url}',
            f'  size:      {size}',
            f'  sha256:    {self.describe_hash()}',
            f'  put it at: {self.dest}',
        ]
        return '\n'.join(lines + ([f'  {self.hint}'] if self.hint else []))


# ---------------------------------------------------------------- files already here


def _sidecar(path: str) -> str:
    return path + '.sha256.json'


def _remember(path: str, digest: str) -> None:
    """Records `path`'s digest with its size and mtime (best effort: the dir may be read-only)."""
    stat = os.stat(path)
    record = {'sha256': digest, 'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns}
    with contextlib.suppress(OSError):
        files.atomic_write(_sidecar(path), json.dumps(record))


def file_digest(path: str) -> str:
    """`path`'s hex sha256: from its sidecar when size and mtime still match, else hashed
    now (and remembered)."""
    stat = os.stat(path)
    try:
        with open(_sidecar(path)) as f:
            record = json.load(f)
        if record['size'] == stat.st_size and record['mtime_ns'] == stat.st_mtime_ns:
            return str(record['sha256'])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = files.sha256_file(path)
    _remember(path, digest)
    return digest


def _check_existing(path: str, expect: _Expected) -> None:
    found = os.path.getsize(path)
    if expect.size is not None and found != expect.size:
        raise DownloadError(
            expect.instructions(f'{path} has {found} bytes, not {expect.size}; delete it')
        )
    if expect.hashed and not expect.matches(digest := file_digest(path)):
        raise DownloadError(
            expect.instructions(
                f'{path} has sha256 {digest}, expected {expect.describe_hash()}; delete it '
                '(it is downloaded again) or give its checksum'
            )
        )


def _verify_part(part: str, expect: _Expected) -> str:
    """The digest of a complete `.part`; a wrong size or digest deletes it and raises."""
    found = os.path.getsize(part)
    problem = None
    if expect.size is not None and found != expect.size:
        problem = f'got {found} bytes, expected {expect.size}'
    digest = files.sha256_file(part)
    if problem is None and not expect.matches(digest):
        problem = f'sha256 mismatch: expected {expect.describe_hash()}, got {digest}'
    if problem:
        os.remove(part)
        raise DownloadError(expect.instructions(f'the download is wrong ({problem}); deleted it'))
    return digest


@contextlib.contextmanager
def _directory_lock(directory: str):
    """Serialises downloads into one directory across processes (flock where available)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # filesystems without flock
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


# ---------------------------------------------------------------- the network


def _download(url: str, part: str, expect: _Expected, retries: int, timeout, log) -> None:
    """Streams `url` into `part`, resuming what is there; retries transient failures."""
    name = os.path.basename(expect.dest)
    attempt = 0
    try:
        transfer.check_resolvable(url)
        while True:
            try:
                return transfer.stream(url, part, expect.size, timeout=timeout, log=log, name=name)
            except transfer.Transient as e:
                if attempt >= retries:
                    raise DownloadError(
                        expect.instructions(
                            f'{e} (gave up after {attempt + 1} attempts; run again to resume '
                            f'from {part})'
                        )
                    ) from None
                attempt += 1
                wait = _BACKOFF_SECONDS * min(2 ** (attempt - 1), 8)
                log(f'{name}: {e}; retry {attempt}/{retries} in {wait:g} s')
                time.sleep(wait)
    except transfer.Unreachable as e:
        raise DownloadError(expect.instructions(f'{e} (offline?)')) from None
    except transfer.Failed as e:
        raise DownloadError(expect.instructions(str(e))) from None

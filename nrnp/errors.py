"""The errors nrnp raises on purpose, each with the exit status the command line uses.

  raise DataError('cifar100 is not in /data: ...; set --config.data.data_dir=DIR')
  except NrnpError as e: sys.exit(e.exit_code)   # what nrnp.main does, without a traceback
  with writing('/w/report.json', 'the report'): ...  # a full or read-only disk -> StorageError

Every expected failure is an `NrnpError`: bad input (config, checkpoint, data, workdir,
artefact, download, a disk that is read-only or full) exits with status 2, a run that
fails on its own (non-finite values) with 1, and a run stopped by SIGTERM or SIGINT with
75 (EX_TEMPFAIL: "run the same command again"). The bad-input errors also subclass
`ValueError`, so code written against the older `ValueError`s keeps working. A signal
outside the training loop is not an `NrnpError` but a KeyboardInterrupt
(`nrnp.signals.Interrupted` for SIGTERM), so it unwinds a run like Ctrl-C.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil

EXIT_FAILURE = 1  # a runtime failure (non-finite values, an internal error)
EXIT_BAD_INPUT = 2  # config, checkpoint, data, workdir, artefact or download problem
EXIT_PREEMPTED = 75  # SIGTERM/SIGINT: checkpoint written, rerun the command to resume
EXIT_INTERRUPTED = 130  # a second Ctrl-C: exited at once, without a new checkpoint


class NrnpError(Exception):
    """Base of nrnp's expected errors; `str(e)` is a complete message (what, where, fix)."""

    exit_code = EXIT_FAILURE


class BadInput(NrnpError, ValueError):
    """Something the user gave is wrong; the message says which and how to fix it."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(BadInput):
    """A config field has a wrong type, range or value, or fields contradict each other."""


class DataError(BadInput):
    """Input data is missing or malformed; the message names the path and the fix."""


class DownloadError(DataError):
    """A download failed, was refused offline, or did not match its checksum."""


class CheckpointError(BadInput):
    """A checkpoint is missing, malformed, unsafe, or does not match the model."""


class ArtifactError(BadInput):
    """A `.nrnp` file is missing, truncated, foreign or of an unsupported version."""


class WorkdirError(BadInput):
    """The workdir holds another run (different config, inputs or nrnp version)."""


class StorageError(BadInput):
    """A file or directory cannot be written or read: a read-only or full disk, a parent
    that is a file, a virtual file system; the message names the path and the fix."""


class NonFiniteError(NrnpError, FloatingPointError):
    """A loss or an input weight is NaN or infinite; the message names where."""


class Preempted(NrnpError):
    """SIGTERM or SIGINT stopped the run after its checkpoint was written."""

    exit_code = EXIT_PREEMPTED


# ---------------------------------------------------------------- disks and places

# errno values that say "the disk or the place is the problem", not nrnp.
STORAGE_ERRNOS = {
    errno.ENOSPC: 'no space left on device',
    errno.EDQUOT: 'disk quota exceeded',
    errno.EROFS: 'read-only file system',
    errno.EACCES: 'permission denied',
    errno.EPERM: 'operation not permitted',
    errno.ENOTDIR: 'a parent is not a directory',
    errno.EISDIR: 'it is a directory',
    errno.ENOENT: 'no such directory',
    errno.EEXIST: 'it exists and is not a directory',
}
FULL_OR_READ_ONLY = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
# The same problems as TensorStore (orbax's writer) and other C++ code word them.
_TEXT = [
    (re.compile(r"No space left on device|os_error_code='?28\b"), errno.ENOSPC),
    (re.compile(r'Disk quota exceeded'), errno.EDQUOT),
    (re.compile(r'Read-only file system'), errno.EROFS),
]
DEFAULT_FIX = 'free some space or choose a writable place, then rerun the same command'


def storage_errno(exc: BaseException, among=STORAGE_ERRNOS) -> int | None:
    """The errno in `among` behind `exc` or an exception it was raised from, else None."""
    for _ in range(20):
        if exc is None:
            return None
        if isinstance(exc, OSError) and exc.errno in among:
            return exc.errno
        for pattern, number in _TEXT:
            if number in among and pattern.search(str(exc)):
                return number
        exc = exc.__cause__ or exc.__context__
    return None


def _existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def reason(number: int, path: str) -> str:
    """What errno `number` means for `path`, in words (a full disk says how much is free)."""
    ancestor = _existing_ancestor(path)
    if number == errno.ENOSPC:
        with contextlib.suppress(OSError):
            usage = shutil.disk_usage(ancestor)
            return (
                f'no space left on device ({usage.free / 2**20:.1f} MiB free there now, of '
                f'{usage.total / 2**20:.1f} MiB)'
            )
    if number in (errno.ENOTDIR, errno.EEXIST) and not os.path.isdir(ancestor):
        return f'{ancestor} is a file, not a directory'
    if number == errno.ENOENT and ancestor != os.path.abspath(path) and os.path.isdir(ancestor):
        return f'{ancestor} does not accept new files (a virtual file system such as /proc?)'
    return STORAGE_ERRNOS.get(number) or os.strerror(number)


def storage_error(exc: BaseException, path: str, what: str, fix: str = DEFAULT_FIX, among=None):
    """A one-line `StorageError` for `exc` when a disk problem caused it, else None.

    Args:
      exc: what was raised while writing.
      path: what was being written.
      what: its description, e.g. 'checkpoint', 'the run log'.
      fix: what to do about it.
      among: the errno values to recognise (default: every `STORAGE_ERRNOS`).
    """
    number = storage_errno(exc, STORAGE_ERRNOS if among is None else among)
    if number is None:
        return None
    return StorageError(f'cannot write {what} {path}: {reason(number, path)}; {fix}')


@contextlib.contextmanager
def writing(path, what: str, fix: str = DEFAULT_FIX):
    """Turns a disk problem raised inside the block into a `StorageError` naming `path`."""
    try:
        yield
    except NrnpError:
        raise
    except Exception as e:
        error = storage_error(e, os.fsdecode(path), what, fix)
        if error is None:
            raise
        raise error from e

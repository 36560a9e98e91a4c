"""Who owns a workdir, and whether one can live at a path: the workdir lock and its checks.

  locks.check_location('runs/c100', fix)   # before any work: creatable and writable?
  lock = locks.WorkdirLock('runs/c100')    # exclusive, or errors.WorkdirError naming the owner
  lock.release()                           # or the process ends: the kernel drops the lock

The lock is an `fcntl.flock` on `W/.lock`, which records the owner's pid, host, start time
and command for the message a second run gets. A lock dies with its process however it
ends (SIGKILL included), so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time

from nrnp import errors, files

LOCK_FILE = '.lock'


def location_fix(style: str, default_workdir: bool = False) -> str:
    """What to do about a workdir that cannot be written, in the caller's terms."""
    if style != 'cli':
        return 'pass workdir= a writable directory (or None: a temporary one)'
    if default_workdir:
        return (
            f'the default workdir is runs/<recipe> under the current directory {os.getcwd()}: '
            'pass --workdir=DIR on a writable disk'
        )
    return 'choose another --workdir=DIR on a writable disk'


def check_location(workdir: str, fix: str) -> None:
    """Checks that `workdir` can be created and written, leaving nothing behind.

    Cheap and before any work (the command line calls it before downloads and JAX): the
    missing directories are created, probed with a file and removed again.

    Raises:
      errors.StorageError: naming the path, the reason (read-only, a parent that is a
        file, a virtual file system, full) and `fix`.
    """
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise errors.StorageError(f'the workdir {workdir} is a file, not a directory; {fix}')
    created, probe = [], os.path.join(workdir, f'.probe-{os.getpid()}')
    try:
        with errors.writing(workdir, 'the workdir', fix):
            missing, path = [], workdir
            while not os.path.lexists(path):
                missing.append(path)
                path = os.path.dirname(path)
            for path in reversed(missing):
                os.mkdir(path)
                created.append(path)
            with open(probe, 'wb'):
                pass
    finally:
        with contextlib.suppress(OSError):
            os.remove(probe)
        for path in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(path)


class WorkdirLock:
    """An exclusive `fcntl.flock` on `W/.lock`, held until `release()` or the process ends.

    Attributes:
      path: the lock file; held: False where the file system cannot lock (then nothing
        stops a second run: the caller should say so).
    """

    def __init__(self, workdir: str, style: str = 'cli'):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.held = False
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = self._owner()
            os.close(self._fd)
            alternative = 'use another --workdir' if style == 'cli' else 'pass another workdir='
            raise errors.WorkdirError(
                f'{workdir} is in use by another nrnp run ({owner}); wait for it to finish '
                f'(or stop it), or {alternative}'
            ) from None
        except OSError:  # a file system without locks (ENOLCK): run unguarded
            return
        self.held = True
        record = {
            'pid': os.getpid(),
            'host': socket.gethostname(),
            'started': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
            'started_unix': time.time(),
            'command': ' '.join(sys.argv)[:300],
        }
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(record) + '\n').encode(**files.ENCODING), 0)

    def _owner(self) -> str:
        try:
            record = json.loads(os.pread(self._fd, 4096, 0).decode(**files.ENCODING))
            age = time.time() - float(record['started_unix'])
            ago = f'{age:.0f} s' if age < 120 else f'{age / 60:.0f} min'
            ago = f'{age / 3600:.1f} h' if age >= 7200 else ago
            return (
                f'pid {record["pid"]} on {record["host"]}, started {record["started"]}, {ago} ago'
            )
        except (OSError, ValueError, KeyError, TypeError):
            return 'its pid is not recorded yet'

    def release(self) -> None:
        """Releases the lock (the file stays: deleting it would let two runs lock two files)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd, self.held = None, False

"""Who owns a workdir, and whether one can live at a path: the workdir lock and its checks.

  locks.check_location('runs/c100', fix)   # before any work: creatable and writable?
  lock = locks.WorkdirLock('runs/c100')    # exclusive, or errors.WorkdirError naming the owner
  lock.release()                           # or the process ends: the kernel drops the lock

The lock is two `fcntl.flock`s: on the workdir itself, which cannot be deleted while the
run uses it, and on `W/.lock`, which records the owner's pid, host, start time and command
for the message a second run gets. Deleting `W/.lock` by hand therefore frees nothing: a
second run still finds the workdir locked. A lock dies with its process however it ends
(SIGKILL included), so a killed run never leaves a stale lock behind.

  locks.refuse_if_held('runs/c100')       # a quick look before JAX's import (no lock kept)
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
RACES = 3  # tries of check_location when the processes of one run start together


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
            for attempt in range(RACES):
                try:
                    _make_and_probe(workdir, probe, created)
                    break
                except FileNotFoundError:
                    # The processes of one run start together: another removed (after its
                    # own probe) a directory it had made between our mkdir and our probe.
                    if attempt == RACES - 1:
                        raise
    finally:
        with contextlib.suppress(OSError):
            os.remove(probe)
        for path in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(path)


def _make_and_probe(workdir: str, probe: str, created: list) -> None:
    """Creates the missing directories up to `workdir` (adding them to `created`) and
    writes the empty file `probe` in it."""
    missing, path = [], workdir
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
            continue  # another process made it: it is not ours to remove
        created.append(path)
    with open(probe, 'wb'):
        pass


def _try_flock(fd: int) -> bool | None:
    """Takes an exclusive flock on `fd`: True, False when another holds it, None when the
    file system cannot lock (ENOLCK and the like)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _open_directory(workdir: str) -> int | None:
    try:
        return os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def _in_use(workdir: str, owner: str, style: str) -> errors.WorkdirError:
    alternative = 'use another --workdir' if style == 'cli' else 'pass another workdir='
    return errors.WorkdirError(
        f'{workdir} is in use by another nrnp run ({owner}); wait for it to finish (or stop '
        f'it), or {alternative}'
    )


def refuse_if_held(workdir: str, style: str = 'cli') -> None:
    """Raises what `WorkdirLock` would when another run holds `workdir`; takes nothing.

    Cheap and free of JAX, so a second start is refused at once (the lock itself is taken
    later, by `workdirs.claim`). Not for the processes of one multi-process run, which
    share the workdir their process 0 holds.

    Raises:
      errors.WorkdirError: naming the owner.
    """
    fd = _open_directory(workdir)
    if fd is None:
        return  # no workdir yet: nobody holds it
    try:
        if _try_flock(fd) is False:
            raise _in_use(workdir, _recorded_owner(workdir), style)
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _recorded_owner(workdir: str) -> str:
    """The owner `W/.lock` records, when it still holds one."""
    try:
        with open(os.path.join(workdir, LOCK_FILE), 'rb') as f:
            return _describe(f.read(4096))
    except OSError:
        return f'its {LOCK_FILE} was deleted, so its pid is unknown'


def _describe(raw: bytes) -> str:
    try:
        record = json.loads(raw.decode(**files.ENCODING))
        age = time.time() - float(record['started_unix'])
        ago = f'{age:.0f} s' if age < 120 else f'{age / 60:.0f} min'
        ago = f'{age / 3600:.1f} h' if age >= 7200 else ago
        return f'pid {record["pid"]} on {record["host"]}, started {record["started"]}, {ago} ago'
    except (ValueError, KeyError, TypeError):
        return 'its pid is not recorded yet'


class WorkdirLock:
    """Exclusive `fcntl.flock`s on the workdir and on `W/.lock`, held until `release()` or
    the process ends.

    Attributes:
      path: the lock file; held: False where the file system cannot lock (then nothing
        stops a second run: the caller should say so).
    """

    def __init__(self, workdir: str, style: str = 'cli'):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.held = False
        self._dir_fd = _open_directory(workdir)
        self._fd = None
        if self._dir_fd is not None and _try_flock(self._dir_fd) is False:
            os.close(self._dir_fd)
            raise _in_use(workdir, _recorded_owner(workdir), style)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            self.release()
            raise
        taken = _try_flock(self._fd)
        if taken is False:  # an older nrnp holds only the file
            owner = _describe(os.pread(self._fd, 4096, 0))
            self.release()
            raise _in_use(workdir, owner, style)
        if taken is None:  # a file system without locks (ENOLCK): run unguarded
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

    def release(self) -> None:
        """Releases the locks (the file stays: deleting it would let two runs lock two files)."""
        for fd in (self._fd, self._dir_fd):
            if fd is not None:
                os.close(fd)  # closing a descriptor releases its flock
        self._fd = self._dir_fd = None
        self.held = False

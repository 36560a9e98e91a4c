"""Test set-up: a persistent compilation cache, a private nrnp cache, the location of
../shared, and a suite that Ctrl-C or SIGTERM stops together with every process it started.

- `NRNP_CACHE` points at a directory of this session (removed at its end), so tests and
  the command lines they start never read or fill the user's cache; within the session
  the decoded-image cache is shared, as between a user's workdirs.
- Every `subprocess.Popen` a test starts (`subprocess.run` included, and `nrnp.main`
  command lines through `helpers.nrnp_cli`) gets its own process group, and the groups
  still running when the session ends (a Ctrl-C, a failure, SIGTERM) are killed with their
  children (grain workers). SIGTERM unwinds the session as Ctrl-C does.
- A Ctrl-C or SIGTERM that an in-process nrnp training loop turned into
  `errors.Preempted` (the loop takes both signals over, `training.interrupts`) stops the
  session instead of failing one test and going on to the next.
"""

import atexit
import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile

import jax
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

jax.config.update(
    'jax_compilation_cache_dir', os.environ.get('NRNP_JAX_CACHE', str(REPO / '.jax_cache'))
)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)

_CACHE = tempfile.mkdtemp(prefix='nrnp-test-cache-')
os.environ['NRNP_CACHE'] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


class _Child(subprocess.Popen):
    """`subprocess.Popen` in its own process group, remembered until the session ends."""

    running: list = []

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('start_new_session', True)
        super().__init__(*args, **kwargs)
        _Child.running = [c for c in _Child.running if c.poll() is None] + [self]


def kill_children() -> list[int]:
    """Kills the process group of every child still running; their pids."""
    killed = []
    for child in _Child.running:
        if child.poll() is None:  # its group is still ours: the leader is alive
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
                killed.append(child.pid)
            with contextlib.suppress(Exception):
                child.wait(timeout=10)
    _Child.running.clear()
    return killed


subprocess.Popen = _Child
atexit.register(kill_children)


def _sigterm(signum, frame):
    raise KeyboardInterrupt('SIGTERM')


def pytest_configure(config):
    signal.signal(signal.SIGTERM, _sigterm)


def pytest_sessionfinish(session, exitstatus):
    killed = kill_children()
    if killed:
        print(f'\nconftest: killed the process groups of {len(killed)} test subprocesses {killed}')


def _stopped_by_a_signal(e: BaseException | None) -> bool:
    from nrnp import errors, signals  # noqa: PLC0415

    for _ in range(20):
        if e is None:
            return False
        if isinstance(e, errors.Preempted | signals.Interrupted):
            return True
        e = e.__cause__ or e.__context__
    return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    if call.excinfo is not None and _stopped_by_a_signal(call.excinfo.value):
        item.session.shouldstop = 'a signal stopped an nrnp training loop (Ctrl-C or SIGTERM)'


def shared_dir() -> pathlib.Path | None:
    """`$NRNP_SHARED` or `../shared` beside the checkout, when present."""
    path = pathlib.Path(os.environ.get('NRNP_SHARED', REPO.parent / 'shared'))
    return path if path.is_dir() else None


@pytest.fixture
def shared():
    path = shared_dir()
    if path is None:
        pytest.skip('../shared (or $NRNP_SHARED) is absent: real weights and images unavailable')
    return path


@pytest.fixture
def http_server():
    """A 127.0.0.1 file server (tests/local_http.py), shut down after the test."""
    from local_http import FileServer

    with FileServer() as server:
        yield server

"""SIGTERM and Ctrl-C at every instant of the command line, from its first line to its exit.

  from nrnp import signals
  signals.install()              # nrnp.main's first statement, before anything heavy is imported
  signals.set_workdir(workdir)   # the exit line names the newest checkpoint there
  signals.claimed()              # the run owns its workdir now: it has files to unwind

Standard library only, and nothing is imported once a signal has arrived: a signal that
lands while a module is being imported (jax's import takes seconds) must never re-enter
the import machinery, where half-imported modules crash (NameError, segfaults).

A signal raises `Interrupted` (SIGTERM) or `KeyboardInterrupt` (Ctrl-C) in the main
thread, which unwinds the run (temporary files removed) up to `nrnp.main.run`; it prints
`stopped_line` and leaves with `os._exit(75)` (interpreter shutdown after an interrupted
compilation can crash). Inside an import it does not raise: before the run has claimed
its workdir there is nothing to unwind, so the line is printed and the process exits at
once; afterwards the signal is held until the import has finished. A raised signal that
was swallowed (inside a garbage-collection callback, which JAX has) is sent again every
0.2 s until the run has seen it. A second Ctrl-C while the first unwinds exits 130 at once.

Inside the training loop `training.interrupts.catch` takes both signals over: they only
set `requested()`, and work that runs for long between two steps (evaluation, BatchNorm
re-estimation, synthetic images) calls `check()`, which raises `Interrupted` then.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

EXIT_PREEMPTED = 75  # as nrnp.errors: stopped, rerun the same command
EXIT_INTERRUPTED = 130  # a second Ctrl-C
NAMES = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'Ctrl-C (SIGINT)'}
_RESEND_SECONDS = 0.2


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or a stop asked for inside the training loop), raised where the run is.

    A KeyboardInterrupt, so SIGTERM unwinds a run (cleaning up temporary files) like Ctrl-C.

    Attributes:
      signal_name: 'SIGTERM' or 'Ctrl-C (SIGINT)'.
    """

    def __init__(self, signal_name: str = 'SIGTERM'):
        super().__init__(signal_name)
        self.signal_name = signal_name


class _State:
    pid = 0  # the process that installed the handler (forked workers are others)
    workdir = ''  # the run's workdir once known
    claimed = False  # the run owns the workdir: an import in progress defers a signal
    pending = 0  # a signal raised (or deferred) that the run has not seen yet
    resent = False  # the signal arriving now is `_resend`'s, not the user's
    requested = None  # inside `training.interrupts.catch`: the name of the first signal


def install() -> None:
    """Routes SIGTERM and SIGINT to this module's handler (main thread only)."""
    _State.pid, _State.workdir, _State.claimed, _State.pending = os.getpid(), '', False, 0
    for signum in NAMES:
        signal.signal(signum, _handle)


def set_workdir(workdir: str) -> None:
    """The run's workdir (absolute), so the exit line can name its newest checkpoint."""
    _State.workdir = workdir


def workdir() -> str:
    """The run's workdir, or '' before it is known."""
    return _State.workdir


def claimed() -> None:
    """From now on the run has files to unwind: a signal inside an import waits for it."""
    _State.claimed = True


def name_of(e: BaseException) -> str:
    """The signal an interrupt came from."""
    return e.signal_name if isinstance(e, Interrupted) else NAMES[signal.SIGINT]


def _importing(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith('<frozen importlib'):
            return True
        frame = frame.f_back
    return False


def _handle(signum, frame):
    if os.getpid() != _State.pid:  # a forked worker: die as the signal says
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)
    if _State.pending and not _State.resent:  # the user's second signal while one unwinds
        if signum == signal.SIGINT:
            leave_now('second Ctrl-C: exiting now', EXIT_INTERRUPTED)
        return
    _State.resent = False
    if _importing(frame):
        if not _State.claimed:
            leave(NAMES[signum])
        _pend(signum)
        return
    _pend(signum)
    raise Interrupted('SIGTERM') if signum == signal.SIGTERM else KeyboardInterrupt


def _pend(signum: int) -> None:
    if not _State.pending:
        _State.pending = signum
        threading.Thread(target=_resend, args=(signum,), daemon=True).start()


def _resend(signum: int) -> None:
    """Sends `signum` again until the run has seen it (`seen`): it was deferred, or its
    exception was swallowed (raised inside a garbage-collection callback)."""
    while _State.pending:
        time.sleep(_RESEND_SECONDS)
        if _State.pending:
            _State.resent = True
            os.kill(os.getpid(), signum)


def seen() -> None:
    """The run caught the interrupt, or is ending anyway: stop resending it, and ignore
    further signals (the exit is under way)."""
    _State.pending = 0
    for signum in NAMES:
        signal.signal(signum, signal.SIG_IGN)


def stopped_line(name: str) -> str:
    """The one line for a run stopped by signal `name` outside the training loop."""
    if not _State.workdir:
        return f'stopped by {name} while starting: nothing written yet; run the same command again'
    last = last_checkpoint(_State.workdir)
    if last:
        return (
            f'stopped by {name}: the last checkpoint {last} stays; run the same command again '
            'to resume'
        )
    return (
        f'stopped by {name} before the first checkpoint: nothing to save yet; run the same '
        'command again to start'
    )


def last_checkpoint(workdir: str) -> str | None:
    """The newest run (else teacher) checkpoint directory of `workdir`, or None."""
    for name in ('checkpoints', 'teacher_checkpoints'):
        try:
            steps = sorted(int(n) for n in os.listdir(os.path.join(workdir, name)) if n.isdigit())
        except OSError:
            steps = []
        if steps:
            return os.path.join(workdir, name, str(steps[-1]))
    return None


def leave(name: str) -> None:
    """Prints `stopped_line(name)` and exits 75 at once (nothing imported, no shutdown)."""
    leave_now(stopped_line(name), EXIT_PREEMPTED)


def leave_now(message: str, status: int) -> None:
    """Writes `nrnp: message` to stderr and exits with `status` without interpreter shutdown."""
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 (interrupted mid-write, a closed pipe: leave the rest)
        pass
    os.write(2, f'nrnp: {message}\n'.encode(errors='backslashreplace'))
    os._exit(status)


# ------------------------------------------------------- inside the training loop


def request(name: str | None) -> None:
    """Set by `training.interrupts.catch` when a signal arrives (None when it ends)."""
    _State.requested = name


def requested() -> str | None:
    """The name of the signal that asked the training loop to stop, or None."""
    return _State.requested


def check() -> None:
    """Raises `Interrupted` when the training loop was asked to stop (long work between
    steps calls it every few seconds); outside the loop the handler raises by itself."""
    if _State.requested is not None:
        raise Interrupted(_State.requested)

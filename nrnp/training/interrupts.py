"""SIGTERM and Ctrl-C during training: finish the step, write a checkpoint, exit cleanly.

  with interrupts.catch(log) as stop:
      for step in ...:
          state = train_step(state)
          if stop.requested:
              save(step, state)
              raise errors.Preempted(f'{stop.requested}: checkpoint written at step {step}')

Inside `catch` the first SIGTERM or SIGINT only sets `stop.requested` (the signal's
name, also `nrnp.signals.requested()`); the loop saves at its next step and raises
`Preempted` (exit status 75: rerun the same command to resume). Work that runs for long
between two steps (evaluation, BatchNorm re-estimation) calls `nrnp.signals.check()`,
which raises `signals.Interrupted` then: the loop turns it into `Preempted` naming the
last checkpoint. A second SIGINT exits at once with status 130, without a new checkpoint
(the last one stays). Outside `catch` the signals keep their usual behaviour (the command
line's `nrnp.signals`). Only the main thread can install handlers; elsewhere `catch` is a
no-op.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

from nrnp import errors, signals

_NAMES = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'SIGINT'}


class Stop:
    """What `catch` yields: `requested` is None, or the name of the first signal."""

    def __init__(self, log=print):
        self.requested: str | None = None
        self.log = log

    def _handle(self, signum, frame):
        del frame
        if self.requested is not None and signum == signal.SIGINT:
            print('nrnp: second Ctrl-C: exiting now (the last checkpoint stays)', file=sys.stderr)
            sys.stderr.flush()
            os._exit(errors.EXIT_INTERRUPTED)
        if self.requested is None:
            self.requested = _NAMES.get(signum, str(signum))
            signals.request(self.requested)
            self.log(
                f'{self.requested}: writing a checkpoint at the next step, then exiting (work '
                'between steps stops sooner, keeping the last checkpoint; Ctrl-C again to exit '
                'at once)'
            )


@contextlib.contextmanager
def catch(log=print):
    """Routes SIGTERM and SIGINT to a `Stop` flag for the duration of the block."""
    stop = Stop(log)
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop._handle) for s in _NAMES}
    try:
        yield stop
    finally:
        signals.request(None)
        for s, handler in previous.items():
            signal.signal(s, handler)

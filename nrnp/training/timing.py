"""A phase's clock: compilation, steps per second and host time per step, apart from
evaluations and checkpoint saves.

  clock = PhaseClock(first, lookahead=True)
  with clock.device():                      # the jitted call (dispatch and any wait)
      state, metrics = step(state, *args)
  clock.stepped(k, metrics)                 # step first + 1 compiles: timed apart
  metrics = clock.wait(metrics)             # a wait on the device is device time
  with clock.apart(evaluation=True): ...    # evaluations and saves are not step time
  record.update(clock.summary(done))        # seconds, compile_seconds, steps_per_second, ...

Host time per step is the loop's time outside the jitted step (input, host-to-device
copies, logging), excluding compilation, evaluations and saves.
"""

from __future__ import annotations

import contextlib
import time

import jax


class PhaseClock:
    """Times one phase's steps (see the module docstring).

    Args:
      first: steps of the phase already done (a resumed phase starts after them).
      lookahead: let one step run ahead of the host (two in flight); False waits for
        every step (a multi-device CPU mesh: XLA:CPU over simulated devices deadlocked at
        a collective's rendezvous with many steps queued).
    """

    def __init__(self, first: int, lookahead: bool = True):
        self.start = time.time()
        self.first = first
        self.lookahead = lookahead
        self.compile_seconds = self.eval_seconds = self.apart_seconds = 0.0
        self.device_seconds = 0.0
        self.last_step, self.last_time = first + 1, self.start
        self._previous = None

    @contextlib.contextmanager
    def device(self):
        """Counts the enclosed time as device time (a jitted call, a wait on its result)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.device_seconds += time.perf_counter() - start

    def wait(self, tree):
        """`tree` once computed, the wait counted as device time."""
        with self.device():
            return jax.block_until_ready(tree)

    def stepped(self, k: int, metrics) -> None:
        """After step `k` is dispatched: bound the steps in flight; time the compilation."""
        self.wait(self._previous if self.lookahead else metrics)
        self._previous = metrics
        if k == self.first + 1:  # the first call compiles: time it apart from the steps
            jax.block_until_ready(metrics)
            self.compile_seconds = time.time() - self.start
            self.last_time = time.time()
            self.device_seconds = 0.0

    def rate(self, k: int) -> float | None:
        """Steps per second since the last call (compilation and evaluations excluded)."""
        now = time.time()
        rate = (k - self.last_step) / (now - self.last_time) if k > self.last_step else None
        self.last_step, self.last_time = k, now
        return rate

    def timed(self, k: int) -> tuple[int, float]:
        """(steps after the compiling first one up to `k`, their seconds: compilation,
        evaluations and saves excluded), for a rate that holds after compilation."""
        seconds = time.time() - self.start - self.compile_seconds - self.apart_seconds
        return k - self.first - 1, max(seconds, 0.0)

    @contextlib.contextmanager
    def apart(self, evaluation: bool = False):
        """Excludes the enclosed time (an evaluation, a save) from the step rates."""
        start = time.time()
        try:
            yield
        finally:
            spent = time.time() - start
            self.apart_seconds += spent
            if evaluation:
                self.eval_seconds += spent
                self.last_time += spent

    def summary(self, done: int) -> dict:
        """The phase's timing fields for its record, `done` steps run in this process."""
        seconds = time.time() - self.start
        timed = seconds - self.compile_seconds - self.eval_seconds
        host = timed - self.device_seconds - (self.apart_seconds - self.eval_seconds)
        return {
            'seconds': seconds,
            'step_ms': 1000 * seconds / max(done, 1),
            'compile_seconds': self.compile_seconds,
            'steps_per_second': (done - 1) / timed if done > 1 and timed > 0 else None,
            'host_ms_per_step': 1000 * max(host, 0.0) / (done - 1) if done > 1 else None,
        }

"""Progress lines for long loops: step, metrics, rate and ETA, at most every N steps or seconds.

progress = Progress(total=10_000, label='reconstruct round 1', log=print, first=4000)
progress.update(step, {'recon/loss': 0.01})      # prints every `every` steps with ETA

After a resume (`first` steps done by an earlier process) the counter goes on from there
(`reconstruct round 1 4100/10000`); the rate and ETA count this process's steps only.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """Prints `label step/total loss rate ETA` at most every `every` steps or `seconds` seconds.

    Args:
      total: the steps of the whole loop.
      label: what is counted, e.g. 'reconstruct round 1'.
      log: the line sink.
      every, seconds: print at most every `every` steps or `seconds` seconds.
      unit: what the rate counts.
      first: steps done before this process started (a resumed run).
    """

    def __init__(
        self,
        total: int,
        label: str,
        log: Callable[[str], None] = print,
        every: int = 100,
        seconds: float = 10.0,
        unit: str = 'step',
        first: int = 0,
    ):
        self.total, self.label, self.log, self.first = total, label, log, first
        self.every, self.seconds, self.unit = every, seconds, unit
        self.start = self.last = time.time()

    def update(self, step: int, metrics: dict | None = None, force: bool = False):
        """`step`: steps done in the whole loop so far (earlier processes' included)."""
        now = time.time()
        if not (
            force or step == self.total or step % self.every == 0 or now - self.last > self.seconds
        ):
            return
        self.last = now
        # This process's steps, compilation included: a pessimistic ETA.
        rate = (step - self.first) / max(now - self.start, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float('inf')
        parts = [f'{self.label} {step}/{self.total}']
        for key, value in (metrics or {}).items():
            parts.append(f'{key}={float(value):.5g}')
        parts.append(f'{rate:.2f} {self.unit}/s')
        parts.append(f'ETA {format_seconds(eta)}')
        self.log('  '.join(parts))


def format_seconds(seconds: float) -> str:
    if seconds == float('inf'):
        return '?'
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'

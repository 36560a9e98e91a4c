"""Progress lines for long loops: step, metrics, rate and ETA, at most every N steps or seconds.

progress = Progress(total=10_000, label='reconstruct round 1', log=print)
progress.update(step, {'recon/loss': 0.01})      # prints every `every` steps with ETA
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """Prints `label step/total loss rate ETA` at most every `every` steps or `seconds` seconds."""

    def __init__(
        self,
        total: int,
        label: str,
        log: Callable[[str], None] = print,
        every: int = 100,
        seconds: float = 10.0,
        unit: str = 'step',
    ):
        self.total, self.label, self.log = total, label, log
        self.every, self.seconds, self.unit = every, seconds, unit
        self.start = self.last = time.time()

    def update(self, step: int, metrics: dict | None = None, force: bool = False):
        """`step`: steps done in this phase so far."""
        now = time.time()
        if not (
            force or step == self.total or step % self.every == 0 or now - self.last > self.seconds
        ):
            return
        self.last = now
        rate = step / max(now - self.start, 1e-9)  # includes compilation: a pessimistic ETA
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

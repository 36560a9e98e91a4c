"""Progress lines for long loops: step, metrics, rate, the loop's ETA and the whole run's,
every N steps and at least every few seconds of wall time.

progress = Progress(total=10_000, label='reconstruct round 1', log=print, first=4000)
progress.update(step, {'recon/loss': 0.01})      # prints every `every` steps or `seconds`
if progress.due(): ...                           # `seconds` passed since the last line

After a resume (`first` steps done by an earlier process) the counter goes on from there
(`reconstruct round 1 4100/10000`); the rate and ETA count this process's steps only.
Given `timed=(steps, seconds)` (steps run and their seconds, compilation and evaluations
excluded: `training.timing.PhaseClock.timed`), the rate is the measured step rate, so the
ETA is updated once the first step has compiled. With `later` (the steps of each kind
the run still has after this loop) and `costs` (seconds per step of each kind measured
so far in this process, shared by the run's loops), each line also gives the whole run's
ETA: this loop's rest plus the later steps at their measured costs, with the kinds not
timed yet named (`run ETA >= 3m10s, distill not timed yet`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

SECONDS = 10.0  # the longest wall time between two lines of a loop (by default)


class Progress:
    """Prints `label step/total loss rate ETA [run ETA]` every `every` steps or `seconds`.

    Args:
      total: the steps of the whole loop.
      label: what is counted, e.g. 'reconstruct round 1'.
      log: the line sink.
      every, seconds: print every `every` steps, and when `seconds` of wall time passed
        (None: `SECONDS`).
      unit: what the rate counts.
      first: steps done before this process started (a resumed run).
      kind: what a step of this loop is (the key of `costs`), e.g. 'reconstruct'.
      later: `{kind: steps}` the run still runs after this loop (None: no run ETA).
      costs: `{kind: seconds per step}`, measured; this loop writes its own kind's.
    """

    def __init__(
        self,
        total: int,
        label: str,
        log: Callable[[str], None] = print,
        every: int = 100,
        seconds: float | None = None,
        unit: str = 'step',
        first: int = 0,
        kind: str = '',
        later: dict | None = None,
        costs: dict | None = None,
    ):
        self.total, self.label, self.log, self.first = total, label, log, first
        self.every, self.unit = every, unit
        self.seconds = SECONDS if seconds is None else seconds
        self.kind, self.later = kind, later
        self.costs = {} if costs is None else costs
        self.start = self.last = time.time()

    def due(self) -> bool:
        """`seconds` of wall time passed since the last line (or the start)."""
        return time.time() - self.last >= self.seconds

    def update(self, step: int, metrics: dict | None = None, force: bool = False, timed=None):
        """`step`: steps done in the whole loop so far (earlier processes' included);
        `timed`: `(steps, seconds)` measured without compilation (None: this process's
        steps over its wall time, compilation included, a pessimistic rate)."""
        now = time.time()
        if not (force or step == self.total or step % self.every == 0 or self.due()):
            return
        self.last = now
        steps, seconds = timed if timed and timed[0] > 0 else (step - self.first, now - self.start)
        rate = steps / max(seconds, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float('inf')
        if timed and timed[0] > 0 and self.kind:
            self.costs[self.kind] = seconds / steps
        parts = [f'{self.label} {step}/{self.total}']
        for key, value in (metrics or {}).items():
            parts.append(f'{key}={float(value):.5g}')
        parts.append(f'{rate:.2f} {self.unit}/s')
        parts.append(f'ETA {format_seconds(eta)}')
        if self.later is not None:
            parts.append(run_eta(eta, self.later, self.costs))
        self.log('  '.join(parts))


def run_eta(eta: float, later: dict, costs: dict) -> str:
    """'run ETA 5m10s', or 'run ETA >= 3m10s, distill not timed yet' when a later kind has
    no measured cost."""
    unknown = [kind for kind, steps in later.items() if steps and kind not in costs]
    total = eta + sum(steps * costs[kind] for kind, steps in later.items() if kind in costs)
    if not unknown:
        return f'run ETA {format_seconds(total)}'
    return f'run ETA >= {format_seconds(total)}, {", ".join(unknown)} not timed yet'


def format_seconds(seconds: float) -> str:
    if seconds == float('inf'):
        return '?'
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'

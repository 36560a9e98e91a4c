"""Run reports (`report.json`, `report.md`) and progress lines for long loops.

progress = Progress(total=10_000, label='reconstruct round 1', log=print)
progress.update(step, {'recon/loss': 0.01})      # prints every `every` steps with ETA
write_report(workdir, report)                   # report.json + report.md
"""

from __future__ import annotations

import json
import os
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


def _atomic_write(path: str, text: str):
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def _fmt(value, digits=2):
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.{digits}f}'
    return str(value)


def markdown(report: dict) -> str:
    """A readable summary of `report` (the same numbers as report.json)."""
    r = report
    lines = [
        f'# nrnp report: {r.get("target", "?")} on {r.get("dataset", "?")}',
        '',
        '| | value |',
        '| --- | --- |',
        f'| top-1 original | {_fmt(r.get("top1_original"))} % |',
        f'| top-1 rebuilt (final) | {_fmt(r.get("top1_reconstructed"))} % |',
    ]
    if r.get('top1_reconstructed_best_seen') is not None:
        lines.append(
            f'| top-1 rebuilt, best seen during the run (test-set selected) | '
            f'{_fmt(r["top1_reconstructed_best_seen"])} % |'
        )
    lines += [
        f'| test images | {r.get("test_images")} |',
        f'| represented conv params | {r.get("represented_params"):,} |',
        f'| predictor params | {r.get("predictor_params"):,} |',
        f'| ratio (predictor / represented) | {_fmt(r.get("ratio"), 4)} |',
    ]
    if r.get('artifact_ratio') is not None:
        lines.append(
            f'| stored artefact / original model (bytes) | {_fmt(r["artifact_ratio"], 4)} |'
        )
    lines += [
        f'| reconstruction RMSE | {_fmt(r.get("reconstruction_rmse"), 6)} |',
        f'| wall time | {_fmt(r.get("wall_seconds"), 1)} s |',
        '',
        '## Phases',
        '',
        '| # | kind | steps | seconds | top-1 | RMSE |',
        '| --- | --- | --- | --- | --- | --- |',
    ]
    for i, p in enumerate(r.get('phases', [])):
        lines.append(
            f'| {i} | {p["kind"]} | {p["steps"]} | {_fmt(p.get("seconds"), 1)} | '
            f'{_fmt(p.get("top1"))} | {_fmt(p.get("rmse"), 6)} |'
        )
    if r.get('notes'):
        lines += ['', '## Notes', ''] + [f'- {n}' for n in r['notes']]
    if r.get('config'):
        lines += ['', '## Config', '', '```', r['config'].rstrip(), '```']
    return '\n'.join(lines) + '\n'


def write_report(workdir: str, report: dict):
    """Writes `workdir/report.json` and `workdir/report.md` atomically."""
    os.makedirs(workdir, exist_ok=True)
    _atomic_write(os.path.join(workdir, 'report.json'), json.dumps(report, indent=2) + '\n')
    _atomic_write(os.path.join(workdir, 'report.md'), markdown(report))

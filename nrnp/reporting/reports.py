"""Run reports: `report.json` (every number of a run) and `report.md` (the same, readable).

write_report(workdir, report)      # both files, written atomically
text = markdown(report)
"""

from __future__ import annotations

import json
import os

from nrnp import files


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
    recal = [p for p in r.get('phases', []) if p.get('kind') == 'recalibrate']
    if recal:
        last = recal[-1]
        lines.append(
            f'| BatchNorm statistics re-estimated ({last.get("mode")}, {last.get("images")} '
            f'{last.get("source")} images, {len(recal)} time(s)): top-1 before the last | '
            f'{_fmt(last.get("top1_before"))} % |'
        )
    if r.get('top1_reconstructed_best_seen') is not None:
        lines.append(
            f'| top-1 rebuilt, best seen during the run (test-set selected) | '
            f'{_fmt(r["top1_reconstructed_best_seen"])} % |'
        )
    lines += [
        f'| test images | {r.get("test_images")} |',
        f'| represented conv params | {r.get("represented_params"):,} |',
    ]
    if r.get('represented_by_kind'):
        kinds = ', '.join(f'{k} {v:,}' for k, v in r['represented_by_kind'].items() if v)
        rows = f'{r.get("kernel_rows"):,} (1x1 rows {r.get("pointwise_layout", "?")})'
        lines += [f'| params by kind | {kinds} |', f'| kernel table rows | {rows} |']
    lines += [
        f'| predictor params | {r.get("predictor_params"):,} |',
        f'| ratio (predictor / represented) | {_fmt(r.get("ratio"), 4)} |',
    ]
    if r.get('artifact_ratio') is not None:
        lines.append(
            f'| stored artefact / original model (bytes) | {_fmt(r["artifact_ratio"], 4)} |'
        )
    parts = [(k, r.get(f'{k}_bytes')) for k in ('predictor', 'ordering', 'copied', 'header')]
    if all(isinstance(v, int) for _, v in parts):
        shown = ', '.join(f'{k} {v:,}' for k, v in parts)
        framing = r.get('framing_bytes')
        lines.append(
            f'| artefact bytes ({shown}, framing {_fmt(framing)}; stored '
            f'{r.get("quantize", "none")}) | {_fmt(r.get("artifact_bytes"))} |'
        )
    lines += [
        f'| reconstruction RMSE | {_fmt(r.get("reconstruction_rmse"), 6)} |',
        f'| wall time | {_fmt(r.get("wall_seconds"), 1)} s |',
        '',
        '## Phases',
        '',
        '| # | kind | predictor h | steps | seconds | top-1 | RMSE |',
        '| --- | --- | --- | --- | --- | --- | --- |',
    ]
    for i, p in enumerate(r.get('phases', [])):
        lines.append(
            f'| {i} | {p["kind"]} | {_fmt(p.get("hidden"))} | {p["steps"]} | '
            f'{_fmt(p.get("seconds"), 1)} | {_fmt(p.get("top1"))} | {_fmt(p.get("rmse"), 6)} |'
        )
    if r.get('notes'):
        lines += ['', '## Notes', ''] + [f'- {n}' for n in r['notes']]
    if r.get('config'):
        lines += ['', '## Config', '', '```', r['config'].rstrip(), '```']
    return '\n'.join(lines) + '\n'


def write_report(workdir: str, report: dict):
    """Writes `workdir/report.json` and `workdir/report.md` atomically."""
    os.makedirs(workdir, exist_ok=True)
    files.atomic_write(os.path.join(workdir, 'report.json'), json.dumps(report, indent=2) + '\n')
    files.atomic_write(os.path.join(workdir, 'report.md'), markdown(report))

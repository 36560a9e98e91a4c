"""Run reports: `report.json` (every number of a run) and `report.md` (the same, readable).

report = build(target='resnet20', records=records, sizes=size_report, ...)   # its keys
write_report(workdir, report)      # both files, written atomically
text = markdown(report); lines = summary(report)
"""

from __future__ import annotations

import json
import os

from nrnp import files
from nrnp.core import kernel_rows

# The byte counts report.json repeats from `Compressed.size_report()`: every part of the file.
SIZE_KEYS = (
    'predictor_bytes',
    'ordering_bytes',
    'copied_bytes',
    'header_bytes',
    'framing_bytes',
    'artifact_bytes',
    'original_bytes',
)


def build(
    *,
    target: str,
    target_source: str,
    dataset: str,
    test_split: str,
    test_images: int,
    top1_original: float | None,
    records: list[dict],
    layout: kernel_rows.KernelLayout,
    represented_by_kind: dict,
    pointwise_layout: str,
    predictor_params: int,
    ordering: str,
    ordering_seconds: float,
    quantize: str,
    artifact: str,
    sizes: dict,
    wall_seconds: float,
    devices: list[str],
    config: str,
    kept: dict | None = None,
) -> dict:
    """report.json's dictionary: every number of a finished run (the phase records, the
    artefact's `size_report`, the config as JSON text), under the keys the docs list.
    `kept`: the phase the artefact holds (`training.keeping.choice`; None: the last)."""
    kept = kept or {'index': len(records) - 1}
    k = kept['index']
    return {
        'target': target,
        'target_source': target_source,
        'dataset': dataset,
        'test_split': test_split,
        'test_images': test_images,
        'top1_original': top1_original,
        'top1_reconstructed': records[k]['top1'],
        'top1_reconstructed_best_seen': best_seen(records),
        'kept_phase': kept.get('phase'),
        'kept_reason': kept.get('reason'),
        'heldout_scores': kept.get('scores'),
        'represented_params': int(layout.num_params),
        'represented_layers': len(layout.layers),
        'num_kernels': int(layout.num_kernels),
        'represented_by_kind': represented_by_kind,
        'pointwise_layout': pointwise_layout,
        'predictor_params': int(predictor_params),
        'ratio': predictor_params / layout.num_params,
        'ordering': ordering,
        'ordering_seconds': ordering_seconds,
        'reconstruction_rmse': records[k]['rmse'],
        'quantize': quantize,
        'artifact': artifact,
        **{k: sizes[k] for k in SIZE_KEYS},
        'artifact_ratio': sizes['artifact_ratio'],
        'phases': records,
        'predictor_seconds': sum(r['seconds'] for r in records),
        'wall_seconds': wall_seconds,
        'devices': devices,
        'config': config,
    }


def best_seen(records: list[dict]) -> float | None:
    """Best rebuilt top-1 seen at any evaluation of the run (selected on the test set)."""
    seen = [r['top1'] for r in records if r['kind'] != 'init']
    seen += [e['top1'] for r in records for e in r.get('evals', [])]
    return max((s for s in seen if s is not None), default=None)


def summary(r: dict, workdir: str) -> list[str]:
    """The two lines a finished run ends its log with: accuracy and sizes."""
    return [
        f'top1 original {percent(r["top1_original"])}  rebuilt {percent(r["top1_reconstructed"])}'
        f'  ratio {r["ratio"]:.4f}  ({r["predictor_params"]} / {r["represented_params"]})  -> '
        f'{workdir}/report.md',
        f'artefact {r["artifact_bytes"]:,} B ({r["quantize"]} predictor '
        f'{r["predictor_bytes"]:,}, orderings {r["ordering_bytes"]:,}, copied '
        f'{r["copied_bytes"]:,}, header {r["header_bytes"]:,}), artifact_ratio '
        f'{r["artifact_ratio"]:.4f} of the original {r["original_bytes"]:,} B',
    ]


def percent(value: float | None) -> str:
    """A top-1 as the logs and reports show it ('NN.NN %'), or '-' when it was not measured."""
    return '-' if value is None else f'{value:.2f} %'


def _fmt(value, digits=2):
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.{digits}f}'
    return str(value)


def markdown(report: dict) -> str:
    """A readable summary of `report` (the same numbers as report.json)."""
    r = report
    lines = [f'# nrnp report: {r.get("target", "?")} on {r.get("dataset", "?")}', '']
    lines += _summary_table(r)
    lines += [
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
    lines += ['', '![top-1 of the rebuilt network after each phase](report.png)']  # job writes it
    if r.get('notes'):
        lines += ['', '## Notes', ''] + [f'- {n}' for n in r['notes']]
    if r.get('config'):  # last: the long part
        lines += ['', '## Config', '', '```', r['config'].rstrip(), '```']
    return '\n'.join(lines) + '\n'


def _summary_table(r: dict) -> list[str]:
    """The report's first table: accuracy, what is represented, sizes, time."""
    lines = [
        '| | value |',
        '| --- | --- |',
        f'| top-1 original | {_fmt(r.get("top1_original"))} % |',
        f'| top-1 rebuilt (final) | {_fmt(r.get("top1_reconstructed"))} % |',
    ]
    if r.get('kept_phase'):
        lines.append(f'| kept phase | {r["kept_phase"]}: {r.get("kept_reason")} |')
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
        rows = f'{r.get("num_kernels"):,} (1x1 rows {r.get("pointwise_layout", "?")})'
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
    ]
    return lines


def write_report(workdir: str, report: dict):
    """Writes `workdir/report.json` and `workdir/report.md` atomically."""
    os.makedirs(workdir, exist_ok=True)
    files.atomic_write(os.path.join(workdir, 'report.json'), json.dumps(report, indent=2) + '\n')
    files.atomic_write(os.path.join(workdir, 'report.md'), markdown(report))

"""PNG plots of run reports: top-1 after each phase.

  plot_report(json.load(open('workdir/report.json')), 'workdir/report.png')

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no display, no global
state), so plotting works in threads, on servers and in tests. PNGs are written atomically.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nrnp import files


def phase_label(phase: Mapping, cycles: int = 1) -> str:
    """'init', 'reconstruct r1', 'quantize', 'distill', with ' c2' appended when a run
    has several cycles."""
    kind = phase.get('kind')
    if kind is None:
        raise ValueError(f'phase record {dict(phase)} has no "kind"')
    label = f'{kind} r{phase["round"]}' if kind == 'reconstruct' and 'round' in phase else kind
    if cycles > 1 and 'cycle' in phase:
        label += f' c{phase["cycle"]}'
    return label


def _number(record: Mapping, key: str, what: str) -> float:
    value = record.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f'{what} needs a numeric {key!r}, got {value!r}')
    return float(value)


def _save(fig: Figure, path: str) -> None:
    """The PNG, written atomically: complete or absent, never half written."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=120)
    files.atomic_write(path, buffer.getvalue())


def plot_report(report: Mapping, path: str) -> None:
    """Writes a PNG of the rebuilt network's top-1 after each phase of a run.

    x is the phase index (labelled 'init', 'reconstruct r1', 'distill', ...), y the top-1 (%)
    of the rebuilt network after that phase; a horizontal line marks the original network's
    top-1, and the reconstruction RMSE, where recorded, is drawn on a second axis.

    Args:
      report: a `report.json` dict with 'phases' (records with 'kind' and 'top1', optionally
        'round', 'cycle', 'rmse'), 'top1_original', and optionally 'target',
        'predictor_params' and 'ratio' for the title.
      path: output PNG path.

    Raises:
      ValueError: no phases, or a record lacks a number the plot needs.
    """
    phases = report.get('phases')
    if not phases:
        raise ValueError('report has no "phases" records: nothing to plot (is it a report.json?)')
    original = _number(report, 'top1_original', 'report')
    cycles = max(int(p.get('cycle', 1)) for p in phases)
    labels = [phase_label(p, cycles) for p in phases]
    # A phase may record top1=None (not measured: the untrained predictor by default).
    measured = [i for i, p in enumerate(phases) if 'top1' not in p or p['top1'] is not None]
    top1 = [_number(phases[i], 'top1', f'phase {i} ({labels[i]})') for i in measured]
    xs = measured

    fig = Figure(figsize=(max(6.0, 0.9 * len(phases) + 2), 4.2), layout='constrained')
    ax = fig.add_subplot()
    ax.axhline(original, color='0.3', linestyle='--', label=f'original {original:.2f} %')
    ax.plot(xs, top1, 'o-', color='C0', label='rebuilt')
    for x, y in zip(xs, top1):
        ax.annotate(f'{y:.1f}', (x, y), textcoords='offset points', xytext=(0, 6), ha='center')
    ax.set_xticks(
        range(len(phases)),
        labels,
        rotation=30 if len(phases) > 5 else 0,
        ha='right' if len(phases) > 5 else 'center',
    )
    ax.set_xlabel('phase')
    ax.set_ylabel('top-1 (%)')
    ax.set_ylim(0, max(100.0, *top1, original) * 1.02)  # top1 may be empty
    ax.grid(axis='y', alpha=0.3)
    rmse = [p.get('rmse') for p in phases]
    handles, names = ax.get_legend_handles_labels()
    if all(isinstance(r, (int, float)) for r in rmse):
        ax2 = ax.twinx()
        (line,) = ax2.plot(range(len(phases)), rmse, 's:', color='C1', label='kernel RMSE')
        ax2.set_ylabel('kernel RMSE')
        handles.append(line)
        names.append(line.get_label())
    ax.set_xlim(-0.5, len(phases) - 0.5)
    fig.legend(handles, names, loc='outside lower center', ncols=len(handles))

    title = str(report.get('target', 'network'))
    extras = []
    if isinstance(report.get('predictor_params'), (int, float)):
        extras.append(f'predictor {int(report["predictor_params"]):,} params')
    if isinstance(report.get('ratio'), (int, float)):
        extras.append(f'ratio {report["ratio"]:.3f}')
    ax.set_title(f'{title}: ' + ', '.join(extras) if extras else title)
    _save(fig, path)

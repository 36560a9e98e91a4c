"""Tests for nrnp.plots: PNGs are written and open, labels are right, bad input is refused."""

import copy

import pytest
from PIL import Image

from nrnp.reporting import plots

REPORT = {
    'target': 'smallcnn',
    'top1_original': 96.39,
    'predictor_params': 4825,
    'ratio': 0.0868,
    'phases': [
        {'kind': 'init', 'steps': 0, 'top1': 9.72, 'rmse': 0.158},
        {'kind': 'reconstruct', 'round': 1, 'cycle': 1, 'steps': 40, 'top1': 9.72, 'rmse': 0.142},
        {'kind': 'distill', 'round': 1, 'cycle': 1, 'steps': 6, 'top1': 9.72, 'rmse': 0.150},
    ],
}


def _is_png(path, min_size=(200, 150)):
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == 'PNG' and img.size >= min_size
        return img.size


def test_plot_report_writes_png(tmp_path):
    path = tmp_path / 'phases.png'
    plots.plot_report(REPORT, str(path))
    _is_png(path)
    # Without RMSE or title extras it still plots.
    bare = copy.deepcopy(REPORT)
    for key in ('predictor_params', 'ratio', 'target'):
        del bare[key]
    for p in bare['phases']:
        del p['rmse']
    plots.plot_report(bare, str(tmp_path / 'bare.png'))
    _is_png(tmp_path / 'bare.png')


def test_phase_labels():
    assert [plots.phase_label(p) for p in REPORT['phases']] == [
        'init',
        'reconstruct r1',
        'distill',
    ]
    assert plots.phase_label({'kind': 'reconstruct', 'round': 2, 'cycle': 3}, cycles=3) == (
        'reconstruct r2 c3'
    )


def test_plot_report_rejects_bad_input(tmp_path):
    path = str(tmp_path / 'x.png')
    for bad in ({}, {'top1_original': 90.0, 'phases': []}):
        with pytest.raises(ValueError, match='no "phases"'):
            plots.plot_report(bad, path)
    no_top1 = copy.deepcopy(REPORT)
    del no_top1['phases'][2]['top1']
    with pytest.raises(ValueError, match=r"phase 2 \(distill\).*'top1'"):
        plots.plot_report(no_top1, path)
    no_original = {k: v for k, v in REPORT.items() if k != 'top1_original'}
    with pytest.raises(ValueError, match='top1_original'):
        plots.plot_report(no_original, path)

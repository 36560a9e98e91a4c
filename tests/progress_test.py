"""Progress lines: every N steps and every few seconds of wall time, with the loop's ETA
from the measured step rate and the whole run's ETA; the library's lines timestamped."""

import re

import nrnp
from nrnp.nets import models
from nrnp.reporting import progress

FAST = dict(
    reconstruct__steps=4,
    reconstruct__batch_size=256,
    predictor__hidden=8,
    predictor__layers=3,
    predictor__quantize='none',
    encoding__levels=4,
    recalibrate__images=0,
)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_line_every_n_steps_and_when_the_seconds_pass(monkeypatch):
    clock, lines = Clock(), []
    monkeypatch.setattr(progress.time, 'time', clock)
    bar = progress.Progress(1000, 'distill c1', lines.append, every=200, seconds=20, kind='x')
    for step in range(1, 5):
        clock.now += 6.0  # 6 s a step: a line every 20 s of wall time, not every 200 steps
        bar.update(step)
    assert [line.split('  ')[0] for line in lines] == ['distill c1 4/1000']
    assert bar.due() is False
    clock.now += 20.0
    assert bar.due() is True


def test_the_eta_uses_the_measured_rate_and_the_later_steps_costs(monkeypatch):
    clock, lines, costs = Clock(), [], {'reconstruct': 0.05}
    monkeypatch.setattr(progress.time, 'time', clock)
    later = {'recalibrate': 0, 'distill': 10, 'quantize': 100}
    bar = progress.Progress(
        1000, 'reconstruct', lines.append, every=100, kind='reconstruct', later=later, costs=costs
    )
    clock.now += 30.0  # compilation: excluded by `timed`
    bar.update(100, {'recon/loss': 0.5}, timed=(99, 9.9))  # 0.1 s a step after it
    assert costs['reconstruct'] == 0.1
    assert '10.00 step/s  ETA 1m30s' in lines[-1]  # 900 steps at 0.1 s
    assert lines[-1].endswith('run ETA >= 1m30s, distill, quantize not timed yet')
    costs.update(distill=6.0, quantize=0.2)
    bar.update(200, timed=(199, 19.9))
    assert lines[-1].endswith('ETA 1m20s  run ETA 2m40s')  # 80 s + 10 x 6 s + 100 x 0.2 s
    assert progress.run_eta(float('inf'), {}, {}) == 'run ETA ?'


def _compress(**kwargs):
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    variables = models.init_variables(model, (1, 8, 8, 1))
    return nrnp.compress(variables, model, **FAST, **kwargs)


def test_the_run_prints_lines_by_wall_time_with_the_run_eta(monkeypatch):
    monkeypatch.setattr(progress, 'SECONDS', 0.0)  # every step is "a while" later
    lines = []
    _compress(log_every=1000, log=lines.append)
    steps = [line for line in lines if re.match(r'reconstruct c1 round 1 \d/4 ', line)]
    assert [line.split('  ')[0].split()[-1] for line in steps] == ['1/4', '2/4', '3/4', '4/4']
    assert all(re.search(r'  ETA \d+m\d\ds  run ETA \d+m\d\ds$', line) for line in steps)


def test_the_library_log_is_timestamped_by_default(capsys, monkeypatch):
    monkeypatch.setattr(progress, 'SECONDS', 1e9)  # lines by steps only
    _compress(log_every=2)
    out = capsys.readouterr().out.splitlines()
    assert out and all(re.match(r'\[\d\d:\d\d:\d\d\] ', line) for line in out), out[:3]
    steps = [line.split('  ')[0][11:] for line in out if '] reconstruct c1 round 1 ' in line]
    assert steps[:2] == ['reconstruct c1 round 1 2/4', 'reconstruct c1 round 1 4/4']

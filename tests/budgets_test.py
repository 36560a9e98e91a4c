"""`budget`: steps planned from measured costs, kept for a resumed run, used by the run."""

import json
import time
import types

import numpy as np
import pytest

import nrnp
from nrnp import errors
from nrnp.configs import default
from nrnp.data import dataset
from nrnp.nets import models
from nrnp.pipeline import budgets
from nrnp.pipeline.description import Data, RunDescription

FIGURES = {
    'probe_seconds': 10.0,
    'reconstruct': 0.01,
    'reconstruct_compile': 2.0,
    'distill': 1.0,
    'distill_compile': 5.0,
    'evaluation': 1.0,
    'recalibrate': 0.5,
}
OUTSIDE = 10 + budgets.STORE_SECONDS + 2 + 5 + 3 * (1.1 + 0.5)  # 26.8 s with distillation


def _config(minutes, reconstruct=1000, distill=100, quantize='none'):
    c = default.get_config()
    c.budget = minutes
    c.reconstruct.steps, c.distill.steps = reconstruct, distill
    c.predictor.quantize = quantize
    return c


def test_enough_time_keeps_the_steps_as_set():
    chosen = budgets.plan(_config(10), FIGURES, (1000, 100))
    assert chosen['steps'] == [1000, 100]
    assert chosen['note'] == 'the steps as set fit'
    assert chosen['planned_seconds'] == pytest.approx(OUTSIDE + 1000 * 0.01 + 100 * 1.0)


def test_a_short_budget_splits_in_the_recipes_proportions():
    chosen = budgets.plan(_config(1.5), FIGURES, (1000, 100))  # 90 s: 63.2 s for steps
    left = 90 - OUTSIDE
    share = 100 / 110  # the recipe spends 10 s reconstructing, 100 s distilling
    assert chosen['steps'][1] == int(left * share)  # 57
    assert chosen['steps'][0] in (619, 620)  # the rest, 6.2 s at 10 ms a step
    assert chosen['planned_seconds'] <= 90


def test_too_few_distillation_steps_are_dropped_for_reconstruction():
    chosen = budgets.plan(_config(1.0, quantize='none'), FIGURES, (10_000, 20))
    r, d = chosen['steps']
    assert d == 0 and 'lower top-1' in chosen['note']
    outside = 10 + budgets.STORE_SECONDS + 2 + 3 * 1.6  # no distillation compilation
    assert r == int((60 - outside) / 0.01)
    assert chosen['planned_seconds'] <= 60


def test_quantize_phase_steps_are_paid_for_without_distillation():
    figures = {**FIGURES, 'quantize': 0.02, 'quantize_compile': 3.0}
    chosen = budgets.plan(_config(1.0, distill=0, quantize='int6'), figures, (100_000, 0))
    fraction = default.get_config().predictor.quantize_fraction
    outside = 10 + budgets.STORE_SECONDS + 2 + 3 + 3 * 1.6
    assert chosen['steps'] == [int((60 - outside) / (0.01 + fraction * 0.02)), 0]


def test_a_budget_too_short_is_refused_naming_what_would_do():
    with pytest.raises(errors.ConfigError, match=r'budget=0.2 min is too short.*at least budget='):
        budgets.plan(_config(0.2), FIGURES, (1000, 100))


def test_a_resumed_run_reuses_the_choice_without_probing(tmp_path, monkeypatch):
    calls = []

    def probe(d):
        calls.append(d)
        return dict(FIGURES)

    monkeypatch.setattr(budgets, 'probe', probe)
    logs = []
    d = RunDescription(_config(1.5), None, {}, Data(), str(tmp_path), None, logs.append)
    first = budgets.resolve(d)
    assert len(calls) == 1 and d.config.reconstruct.steps == 1000  # the caller's is unchanged
    stored = json.loads((tmp_path / budgets.FILE).read_text())
    steps = (first.config.reconstruct.steps, first.config.distill.steps)
    assert stored['steps'] == list(steps) == first.budget['steps']
    again = budgets.resolve(d)
    assert len(calls) == 1  # not probed again
    assert (again.config.reconstruct.steps, again.config.distill.steps) == steps
    assert any('(resumed)' in line for line in logs)
    other = RunDescription(_config(3), None, {}, Data(), str(tmp_path), None, logs.append)
    budgets.resolve(other)  # another budget: probed again
    assert len(calls) == 2


def test_no_budget_changes_nothing():
    d = RunDescription(_config(0), None, {}, Data(), '', None)
    assert budgets.resolve(d) is d


def test_the_library_runs_the_steps_the_budget_chose():
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    variables = models.init_variables(model, (1, 8, 8, 1), seed=0)
    train = dataset.load_digits('train')
    logs = []
    art = nrnp.compress(
        variables,
        model,
        data=(train.images[:256], train.labels[:256]),
        config=default.get_config('tiny'),
        budget=5.0,
        reconstruct__steps=120,
        distill__steps=0,
        log=logs.append,
    )
    probed = [line for line in logs if line.startswith('budget probe: reconstruct')]
    assert any(' done: ' in line for line in probed)  # the probe's phases say when they end
    chosen = [line for line in logs if 'measured reconstruction' in line]
    assert chosen and 'reconstruct.steps 120 -> 120' in chosen[0]  # 5 min fit 120 steps
    assert [r['steps'] for r in art.history if r['kind'] == 'reconstruct'] == [120]
    assert np.isfinite(art.history[-1]['rmse'])


def test_the_probe_times_an_evaluation_when_the_top1_is_known_and_every_round(monkeypatch):
    records = [
        {'kind': 'reconstruct', 'steps_per_second': 100.0, 'compile_seconds': 2.0},
        {'kind': 'reconstruct', 'steps_per_second': 50.0, 'compile_seconds': 3.0},
        {'kind': 'recalibrate', 'seconds': 0.5},
    ]
    probed = []
    monkeypatch.setattr(budgets.compression, 'prepare', lambda d: probed.append(d) or d)
    outcome = types.SimpleNamespace(records=records)
    monkeypatch.setattr(budgets.compression, 'run', lambda d: outcome)
    config = _config(5, distill=0)
    config.reconstruct.round_hidden = (16, 8)  # two rounds, though reconstruct.rounds is 1
    evaluated = []
    data = Data(top1=lambda v: evaluated.append(v) or time.sleep(0.05) or 70.0)
    d = RunDescription(config, None, {}, data, '', None, top1_original=81.0)  # a branch
    figures = budgets.probe(d)
    assert len(evaluated) == 1 and figures['evaluation'] >= 0.05  # timed, not taken as 0 s
    assert 'top1_original' not in figures  # the known 81.0 stays the run's
    assert probed[0].config.reconstruct.steps == 2 * budgets.PROBE_STEPS['reconstruct']
    assert figures['reconstruct'] == pytest.approx((0.01 + 0.02) / 2)  # the rounds' mean
    assert figures['reconstruct_compile'] == 5.0  # each round compiles its width

"""Progressive rounds of their own widths and steps: schedule, targets, artefact, resume."""

import os

import jax
import numpy as np
import pytest
from helpers import final_arrays

import nrnp
from nrnp.configs import catalog, default
from nrnp.core import predictor
from nrnp.nets import models
from nrnp.pipeline import validation
from nrnp.training import checkpoints, optim, reconstruction, rounds, schedule

pytestmark = pytest.mark.slow  # runs progressive rounds end to end, with crashes and resumes

# Rounds of widths 12 then 8 (6 steps each), 2 distillation steps, a checkpoint every 2.
RUN = dict(
    reconstruct__steps=12,
    reconstruct__round_hidden=(12, 8),
    reconstruct__batch_size=128,
    predictor__layers=3,
    encoding__levels=4,
    distill__steps=2,
    distill__batch_size=4,
    distill__kernel_batch_size=32,
    checkpoint_every=2,
    log_every=1,
)


def _problem():
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 8, 8, 1))))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(
        lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype), dict(shapes)
    )
    variables['batch_stats'] = jax.tree.map(lambda x: np.abs(x) + 0.5, variables['batch_stats'])
    batches = [np.full((4, 8, 8, 1), i, np.float32) for i in range(2)]
    return model, variables, batches


def _compress(workdir, log=None):
    model, variables, batches = _problem()
    return nrnp.compress(variables, model, data=batches, workdir=workdir, log=log, **RUN)


def _config(**fields):
    c = default.get_config()
    for dotted, value in fields.items():
        section, name = dotted.split('.')
        c[section][name] = value
    return c


def test_schedule_of_rounds():
    c = _config(**{'reconstruct.round_hidden': (180, 160, 140), 'reconstruct.steps': 10})
    c.distill.steps = 5
    c.recalibrate.images = 0  # no 'recalibrate' phases (recalibration_test places them)
    got = [(p.kind, p.steps, p.round, p.hidden) for p in schedule.build_schedule(c)]
    assert got == [
        ('reconstruct', 4, 1, 180),
        ('reconstruct', 3, 2, 160),
        ('reconstruct', 3, 3, 140),
        ('distill', 5, 1, 140),  # distillation trains the last round's predictor
    ]
    c.reconstruct.round_steps = (6, 2, 1)  # replaces the even split of reconstruct.steps
    assert [p.steps for p in schedule.build_schedule(c)][:3] == [6, 2, 1]
    c.reconstruct.round_hidden = ()
    c.predictor.hidden = 50
    assert [p.hidden for p in schedule.build_schedule(c)] == [50] * 4  # () = predictor.hidden
    # Each round's cosine spans its own steps: every round ends at the final rate (as its
    # optimizer reports the rate it applied).
    settings = schedule.settings(c)
    params, grads = {'w': np.ones(3, np.float32)}, {'w': np.ones(3, np.float32)}
    for i in range(3):
        tx = settings.optimizer(i)
        state = optim.select_phase(tx.init(params), 'reconstruct', tx)
        rates = []
        for _ in range(settings.phases[i].steps + 1):
            _, state = tx.update(grads, state, params)
            rates.append(float(optim.learning_rate(state, tx)))
        assert rates[0] == pytest.approx(5e-3) and rates[-1] == pytest.approx(1e-6, rel=1e-3)


def test_validation_of_round_fields():
    def found(**fields):
        return '\n'.join(validation.problems(_config(**fields), style='library'))

    assert found(**{'reconstruct.round_hidden': (180, 140)}) == ''
    assert 'reconstruct__round_hidden=(180, 0)' in found(**{'reconstruct.round_hidden': (180, 0)})
    assert 'reconstruct__round_steps=(5, -1)' in found(**{'reconstruct.round_steps': (5, -1)})
    assert 'one entry per round' in found(
        **{'reconstruct.round_hidden': (180, 140), 'reconstruct.round_steps': (5,)}
    )
    assert 'reconstruct__rounds=3: disagrees' in found(
        **{'reconstruct.round_hidden': (180, 140), 'reconstruct.rounds': 3}
    )
    assert 'reconstruct__steps=1' in found(
        **{'reconstruct.round_hidden': (180, 140), 'reconstruct.steps': 1}
    )
    c = _config(**{'reconstruct.round_hidden': (180, 140)})
    c.cycles = 2
    assert 'cycles=2 cannot repeat' in '\n'.join(validation.problems(c))
    c.reconstruct.round_hidden = (140, 140)  # one width: cycles may repeat it
    assert not any('round_hidden' in p for p in validation.problems(c))


def test_a_round_starts_a_fresh_predictor_of_its_width_on_the_last_rebuild():
    encoded = np.random.default_rng(1).standard_normal((50, 24)).astype(np.float32)
    table = np.random.default_rng(2).standard_normal((50, 9)).astype(np.float32)
    problem = reconstruction.ReconstructionProblem(
        encoded, table, np.ones_like(table), np.full(50, 0.02, np.float32)
    )
    wide, narrow = predictor.Predictor(hidden=12, layers=3), predictor.Predictor(hidden=8, layers=3)
    tx = optim.phase_switch(
        {
            'reconstruct': optim.make_optimizer('ranger', steps=5),
            'distill': optim.make_optimizer('adam', steps=5),
        }
    )
    state = rounds.fresh_state(wide, 24, seed=3, tx=tx)
    phase = schedule.Phase('reconstruct', 5, round=2, cycle=1, hidden=8)
    new, target = rounds.start_round(
        state, phase, narrow, problem, input_dim=24, predictor_seed=3, tx=tx
    )
    np.testing.assert_array_equal(target, predictor.predict(wide, state.pparams, encoded))
    jax.tree.map(
        np.testing.assert_array_equal,
        new.pparams,
        predictor.init_predictor(narrow, 24, rounds.round_key(3, phase)),
    )
    # Every optimizer state now has the new width (distillation will train this predictor).
    shapes = {x.shape for x in jax.tree.leaves(new.opt_state.inner) if x.ndim == 2}
    assert shapes == {(24, 8), (8, 8), (8, 9)}
    first = schedule.Phase('reconstruct', 5, round=1, cycle=1, hidden=12)
    _, target = rounds.start_round(
        state, first, wide, problem, input_dim=24, predictor_seed=3, tx=tx
    )
    assert target is problem.target  # round 1 fits the original rows


def test_rounds_of_changing_width_end_to_end(tmp_path):
    comp = _compress(tmp_path / 'w')
    history = comp.history
    assert [(r['kind'], r['hidden']) for r in history] == [
        ('init', 12),
        ('reconstruct', 12),
        ('recalibrate', 12),  # BatchNorm re-estimated after every round
        ('reconstruct', 8),
        ('recalibrate', 8),
        ('distill', 8),
    ]
    n8 = predictor.num_params(8, 24, layers=3)
    assert comp.size_report()['predictor_params'] == n8 == 24 * 8 + 8 + 8 * 8 + 8 + 8 * 9 + 9
    assert comp.predictor_settings['hidden'] == 8
    # The stored predictor rebuilds what the run trained.
    rebuilt = comp.reconstruct()
    assert rebuilt['params']['conv1']['kernel'].shape == (3, 3, 1, 4)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('rounds_reference')
    _compress(workdir)
    return workdir


# Saves: #1 r1 step 2, #2 r1 step 4, #3 end of r1 (h=12 kept), #4 its BatchNorm statistics
# re-estimated (same step: replaces #3), #5 r2 step 2 (h=8), #6 r2 step 4, #7 end of r2, #8
# re-estimated (before distillation), #9 end of distillation: the end.
@pytest.mark.parametrize('crash_after', [3, 4, 5, 8])
def test_crash_and_resume_across_width_changes_is_bit_exact(
    reference, tmp_path, monkeypatch, crash_after
):
    real = checkpoints.RunCheckpointer.save
    count = {'n': 0}

    def save_then_crash(self, step, arrays, meta):
        real(self, step, arrays, meta)
        if os.path.basename(self.directory) != 'checkpoints':
            return  # W/phases: the boundaries a later branch starts from
        count['n'] += 1
        if count['n'] == crash_after:
            raise KeyboardInterrupt('simulated kill')

    monkeypatch.setattr(checkpoints.RunCheckpointer, 'save', save_then_crash)
    workdir = tmp_path / 'w'
    with pytest.raises(KeyboardInterrupt):
        _compress(workdir)
    if crash_after == 5:  # round 2's target is round 1's rebuild (the checkpoint before it)
        ckpt = checkpoints.RunCheckpointer(os.path.join(workdir, 'checkpoints'))
        before, inside = (ckpt.manager.restore(s) for s in ckpt.manager.all_steps())
        ckpt.close()
        assert (before['meta']['phase'], before['meta']['step']) == (2, 0)
        assert (inside['meta']['phase'], inside['meta']['step']) == (2, 2)
        assert before['meta']['records'][-1]['kind'] == 'recalibrate'
        jax.tree.map(  # the re-estimated statistics are carried into round 2's checkpoints
            np.testing.assert_array_equal,
            before['arrays']['batch_stats'],
            inside['arrays']['batch_stats'],
        )
        pparams = before['arrays']['state']['pparams']
        rebuilt = predictor.predict(
            predictor.Predictor(hidden=12, layers=3), pparams, _prepared_encoding()
        )
        np.testing.assert_allclose(inside['arrays']['round_target'], rebuilt, rtol=0, atol=0)
    monkeypatch.undo()
    logs = []
    comp = _compress(workdir, log=logs.append)
    assert any('resuming from checkpoint' in line for line in logs)
    assert [r['hidden'] for r in comp.history] == [12, 12, 12, 8, 8, 8]
    step_ref, ref = final_arrays(reference)
    step_new, new = final_arrays(workdir)
    assert step_ref == step_new
    jax.tree.map(np.testing.assert_array_equal, ref['arrays'], new['arrays'])


def _prepared_encoding():
    from nrnp.pipeline import problem

    config = default.get_config()
    catalog.apply_overrides(config, dict(RUN))
    _, variables, _ = _problem()
    return problem.prepare(variables['params'], config, log=lambda m: None).encoded

"""The kept phase: scored on held-out training images, never the test set; the best kept."""

import types

import jax
import numpy as np
import pytest
from library_test import FAST, VGG, random_variables

import nrnp
from nrnp.core import quantize
from nrnp.training import keeping
from nrnp.training.phases import Carry
from nrnp.training.schedule import Phase


def _ctx(scores, mode='int6'):
    """A context whose held-out score of a net is the next of `scores` (its params' value)."""
    return types.SimpleNamespace(
        score=lambda pparams, stats: scores[int(pparams['w'][0])],
        seen=lambda kind, pparams: pparams,
        log=lambda line: None,
        pmodel=types.SimpleNamespace(hidden=16),
        scheme=quantize.Scheme(mode),
    )


def _run(ctx, phases):
    carry, records = Carry(None, None, {'mean': np.zeros(2)}), []
    for index, phase in enumerate(phases):
        state = types.SimpleNamespace(pparams={'w': np.array([index], np.float32)})
        carry = Carry(state, None, {'mean': np.full(2, index)}, carry.best, carry.kept)
        record = {'kind': phase.kind, 'label': phase.label}
        carry = keeping.after_phase(ctx, phase, index, carry, record, records)
        records.append(record)
    return carry, records


PHASES = [
    Phase('reconstruct', 10, 1, 1, 16),
    Phase('recalibrate', 0, 1, 1, 16),
    Phase('distill', 5, 1, 1, 16),
]


def test_the_best_candidate_is_kept_with_its_statistics():
    carry, records = _run(_ctx([80.0, 74.0, 71.0]), PHASES)
    # the reconstruction of a rounded run is measured before rounding: scored, not kept
    assert [r['heldout'] for r in records] == [80.0, 74.0, 71.0]
    kept = keeping.choice('best', carry, records)
    assert kept['index'] == 2 and kept['phase'] == 'recalibrate c1 after round 1'
    assert '74.00 %' in kept['reason']
    assert kept['scores'] == {r['label']: r['heldout'] for r in records}
    pparams, stats = keeping.kept_arrays(kept, carry, records)
    assert pparams['w'][0] == 1 and stats['mean'][0] == 1  # the recalibrated net
    last = keeping.choice('last', carry, records)
    assert last['index'] == 3 and last['phase'] == 'distill c1'
    assert keeping.kept_arrays(last, carry, records)[0]['w'][0] == 2


def test_ties_go_to_the_later_phase_and_float_runs_keep_a_reconstruction():
    carry, records = _run(_ctx([80.0, 74.0, 80.0], mode='none'), PHASES)
    assert keeping.choice('best', carry, records)['index'] == 3  # 80 = 80: the later
    carry, records = _run(_ctx([80.0, 74.0, 71.0], mode='none'), PHASES)
    assert keeping.choice('best', carry, records)['phase'] == 'reconstruct c1 round 1'


def test_without_held_out_images_the_last_phase_is_kept():
    ctx = _ctx([])
    ctx.score = None
    carry, records = _run(ctx, PHASES)
    kept = keeping.choice('best', carry, records)
    assert kept['index'] == 3 and 'no held-out' in kept['reason']
    assert all(r['heldout'] is None for r in records)


@pytest.mark.slow
def test_kept_phase_is_chosen_without_the_test_images():
    """Two runs differing only in their test images (the second's are noise) score, keep
    and store the same phase's net: the choice never reads the test images."""
    model = VGG()
    variables = random_variables(model, (1, 16, 16, 3))
    rng = np.random.default_rng(0)
    train = (rng.standard_normal((96, 16, 16, 3)).astype(np.float32), np.zeros(96, np.int32))
    labels = rng.integers(0, 10, 40)
    test = rng.standard_normal((40, 16, 16, 3)).astype(np.float32)
    settings = dict(FAST, distill__steps=2, distill__batch_size=8, log=None)
    settings.update(recalibrate__images=16, recalibrate__batch_size=16)
    runs = [
        nrnp.compress(variables, model, data=train, test_data=(images, labels), **settings)
        for images in (test, rng.uniform(-5, 5, test.shape).astype(np.float32))
    ]
    history = [[(r.get('label'), r.get('heldout')) for r in c.history[1:]] for c in runs]
    assert history[0] == history[1] and all(score is not None for _, score in history[0])
    assert runs[0].metrics['kept_phase'] == runs[1].metrics['kept_phase']
    for a, b in zip(*(jax.tree.leaves(c.predictor_params) for c in runs), strict=True):
        np.testing.assert_array_equal(a, b)

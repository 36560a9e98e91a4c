"""Which phase's net a run keeps: after every phase the rebuilt net is scored on held-out
training images, never the test set (`phases.Context.score`: by default its top-1
agreement with the original network's predictions on them, label-free), the best
candidate so far rides in the carry (`phases.Carry.best`, checkpointed), and the run's
artefact holds it unless `keep='last'`.

  carry = after_phase(ctx, phase, index, carry, record, records)   # record['heldout']
  kept = choice('best', carry, records)    # {'index', 'phase', 'reason', 'scores'}

A candidate is a phase whose net the artefact can store exactly as it was measured: one of
the run's final predictor width, measured as stored (a reconstruction phase of a run with a
rounded predictor is measured before the rounding: it is scored, never kept). Ties go to
the later phase.
"""

from __future__ import annotations

import dataclasses

import jax

from nrnp.training.phases import Carry, Context
from nrnp.training.schedule import Phase


def candidate(ctx: Context, phase: Phase) -> bool:
    """Whether the artefact can store `phase`'s net as the run measured it."""
    as_stored = phase.kind != 'reconstruct' or ctx.scheme.mode == 'none'
    return as_stored and phase.hidden == ctx.pmodel.hidden


def after_phase(ctx: Context, phase: Phase, index: int, carry: Carry, record, records) -> Carry:
    """Scores phase `index`'s net (`record['heldout']`, None without held-out images) and
    returns `carry` holding it as the best when it is a candidate that scores at least
    the best so far (`records`: the earlier phases' records)."""
    record['heldout'] = None
    if ctx.score is None:
        return carry
    score = ctx.score(ctx.seen(phase.kind, carry.state.pparams), carry.batch_stats)
    record['heldout'], record['heldout_images'] = score, getattr(ctx.score, 'images', None)
    best = None if carry.kept is None else records[carry.kept]['heldout']
    better = candidate(ctx, phase) and (best is None or score >= best)
    if not candidate(ctx, phase):
        verdict = 'not a candidate (not measured as the artefact would store it)'
    else:
        verdict = 'the best so far' if better else f'the best so far stays {best:.2f} %'
    ctx.log(
        f'{phase.label}: held-out agreement with the original {score:.2f} % '
        f'({record["heldout_images"]} training images), {verdict}'
    )
    if not better:
        return carry
    copy = lambda tree: jax.tree.map(lambda a: a.copy(), tree)  # the steps donate the state
    best_arrays = {'pparams': copy(carry.state.pparams)}
    if carry.batch_stats is not None:
        best_arrays['batch_stats'] = copy(carry.batch_stats)
    return dataclasses.replace(carry, best=best_arrays, kept=index)


def choice(keep: str, carry: Carry, records: list) -> dict:
    """The phase the artefact holds: `index` into `[init, *records]`, its `phase` label,
    the `reason` in words and every phase's held-out `scores`."""
    scores = {r.get('label', r['kind']): r.get('heldout') for r in records}
    if not records:
        return {'index': 0, 'phase': 'init', 'reason': 'no phase ran', 'scores': scores}
    if keep == 'best' and carry.kept is not None:
        index, record = carry.kept + 1, records[carry.kept]
        reason = (
            f'the best agreement with the original network on {record.get("heldout_images")} '
            f'held-out training images: {record["heldout"]:.2f} %'
        )
    else:
        index = len(records)
        reason = (
            "keep='last'"
            if keep == 'last'
            else 'no held-out training images to choose on: the last phase'
        )
    label = records[index - 1].get('label')
    return {'index': index, 'phase': label, 'reason': reason, 'scores': scores}


def kept_arrays(kept: dict, carry: Carry, records: list) -> tuple:
    """(pparams, batch_stats) of the phase `choice` names."""
    if kept['index'] == len(records) or carry.best is None:
        return carry.state.pparams, carry.batch_stats
    return carry.best['pparams'], carry.best.get('batch_stats')

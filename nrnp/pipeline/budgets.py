"""`budget`: a run's steps chosen to fit minutes of wall time, from a measured probe.

  description = budgets.resolve(description)   # both doors, before `compression.prepare`

With `config.budget` > 0 (minutes), the run first times a few steps of each phase it
will train (`probe`: a throwaway run of `PROBE_STEPS` per phase in a temporary
directory, no evaluation) and one pass over the test images (timed also when the
original's top-1 is known, as in a branch: the run evaluates as often), then `plan` sets
`reconstruct.steps` and `distill.steps` (the config's values are the caps: a budget
never lengthens a recipe) so that compilations, steps, evaluations and re-estimations fit:

  time left = budget - probe - compilations - evaluations - re-estimations
  split in the recipe's own proportions (its steps x their measured costs); when the
  distillation's share buys fewer than `MIN_DISTILL` steps it is dropped and
  reconstruction gets its time (measured with the default warm-up, docs/results.md "Any
  budget": 10 steps raised top-1 by 1.35 points; fewer were not measured).

The choice is written to `workdir/budget.json` and a resumed run reuses it (the steps are
part of the run it resumes); the report's 'budget' entry holds it, with the probe's figures.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time

import jax
import numpy as np

from nrnp import errors, files
from nrnp.errors import ConfigError
from nrnp.pipeline import compression
from nrnp.pipeline.description import RunDescription
from nrnp.training import schedule

FILE = 'budget.json'
PROBE_STEPS = {'reconstruct': 30, 'distill': 4}  # timed steps per phase kind (after compiling)
MIN_DISTILL = 10  # fewer distillation steps than this are dropped (see the docstring)
MIN_RECONSTRUCT = 100  # a budget that cannot buy these is refused
QUANTIZE_COST = 2.0  # a quantize step in reconstruction steps (1.5 measured, with margin)
STORE_SECONDS = 5.0  # writing the artefact and the report


def resolve(d: RunDescription) -> RunDescription:
    """`d` with its steps set by `d.config.budget` (unchanged without a budget): reused
    from `workdir/budget.json` when this run wrote it, else probed and planned."""
    config = d.config
    if not config.get('budget'):
        return d
    caps = (int(config.reconstruct.steps), int(config.distill.steps))
    chosen = None if d.temporary else _stored(d.workdir, config.budget, caps)
    if chosen is None:
        start = time.time()
        d.log(
            f'budget {config.budget:g} min: timing {PROBE_STEPS["reconstruct"]} reconstruction'
            + (f' and {PROBE_STEPS["distill"]} distillation' if caps[1] else '')
            + ' steps first (a throwaway probe)'
        )
        figures = probe(d)
        figures['probe_seconds'] = time.time() - start
        chosen = plan(config, figures, caps)
        chosen = {**chosen, 'steps': _agreed(chosen['steps'])}
        if not d.temporary and jax.process_index() == 0:
            with errors.writing(d.workdir, 'the budget choice in'):
                files.atomic_write(os.path.join(d.workdir, FILE), json.dumps(chosen, indent=1))
    else:
        d.log(f'budget {config.budget:g} min: the steps chosen when this run started (resumed)')
    config = config.copy_and_resolve_references()
    config.reconstruct.steps, config.distill.steps = chosen['steps']
    if config.reconstruct.round_steps:
        scale = chosen['steps'][0] / max(caps[0], 1)
        config.reconstruct.round_steps = tuple(
            max(int(s * scale), 1) for s in config.reconstruct.round_steps
        )
    d.log(describe(chosen))
    top1 = d.top1_original if d.top1_original is not None else chosen.get('top1_original')
    return dataclasses.replace(d, config=config, budget=chosen, top1_original=top1)


def describe(chosen: dict) -> str:
    """One log line: the measured costs and the steps chosen."""
    f, (r, dist) = chosen['figures'], chosen['steps']
    costs = [f'reconstruction {1000 * f["reconstruct"]:.3g} ms/step']
    if 'distill' in f:
        costs.append(f'distillation {f["distill"]:.3g} s/step')
    costs.append(f'evaluation {f["evaluation"]:.3g} s')
    caps, note = chosen['caps'], f' ({chosen["note"]})' if chosen['note'] else ''
    return (
        f'budget {chosen["minutes"]:g} min: measured {", ".join(costs)} -> reconstruct.steps '
        f'{caps[0]} -> {r}, distill.steps {caps[1]} -> {dist}; planned '
        f'{chosen["planned_seconds"] / 60:.1f} min{note}'
    )


def probe(d: RunDescription) -> dict:
    """Seconds per step and compilation per trained phase kind, of one test-set
    evaluation (the original's top-1, which the run then reuses) and of a re-estimation.

    A throwaway run of `PROBE_STEPS` steps per phase, in a temporary workdir, evaluating
    nothing: costs do not depend on the weights or on the step counts.
    """
    figures = {'evaluation': 0.0}
    if d.data.top1 is not None:  # timed even when known (a branch): the run evaluates too
        start = time.time()
        top1 = d.data.top1(d.variables)
        figures['evaluation'] = time.time() - start
        if d.top1_original is None:
            figures['top1_original'] = top1
    config = d.config.copy_and_resolve_references()
    config.budget = 0
    config.cycles = 1
    rounds = len(schedule.rounds_of(config))  # round_hidden/round_steps may set them
    config.reconstruct.steps = PROBE_STEPS['reconstruct'] * rounds
    config.reconstruct.round_steps = ()
    config.distill.steps = PROBE_STEPS['distill'] if d.config.distill.steps else 0
    config.checkpoint_every = 10**9
    config.keep = 'last'
    quiet = dataclasses.replace(
        d,
        config=config,
        data=dataclasses.replace(d.data, top1=None, heldout_images=None),
        workdir=tempfile.mkdtemp(prefix='nrnp-probe-'),
        log=lambda message: _probe_line(d.log, message),
        temporary=True,
        top1_original=None,
    )
    try:
        outcome = compression.run(compression.prepare(quiet))
    finally:
        shutil.rmtree(quiet.workdir, ignore_errors=True)
    seconds: dict[str, list[float]] = {}
    for record in outcome.records:
        kind = record['kind']
        if kind in ('reconstruct', 'quantize', 'distill') and record.get('steps_per_second'):
            seconds.setdefault(kind, []).append(1.0 / record['steps_per_second'])
            compile_seconds = float(record.get('compile_seconds') or 0.0)  # one per round
            figures[f'{kind}_compile'] = figures.get(f'{kind}_compile', 0.0) + compile_seconds
        elif kind == 'recalibrate':
            figures['recalibrate'] = float(record.get('seconds') or 0.0)
    figures.update({kind: float(np.mean(s)) for kind, s in seconds.items()})  # rounds' mean
    return figures


def plan(config, figures: dict, caps: tuple[int, int]) -> dict:
    """Steps (reconstruction, distillation) <= `caps` whose cost fits `config.budget`.

    Raises:
      ConfigError: the budget cannot buy `MIN_RECONSTRUCT` reconstruction steps.
    """
    total, cycles = 60.0 * config.budget, max(int(config.cycles), 1)
    t_r, t_d = figures['reconstruct'], figures.get('distill', 0.0)
    quantizes = config.predictor.quantize not in ('none', 'bf16')
    fraction = config.predictor.quantize_fraction if quantizes else 0.0
    t_q = t_r + fraction * figures.get('quantize', QUANTIZE_COST * t_r)  # + its quantize steps

    def outside(distills: bool) -> float:  # probe, compilations, evaluations, re-estimations
        compiles = figures['reconstruct_compile'] + (
            figures.get('distill_compile', 0.0)
            if distills
            else figures.get('quantize_compile', figures['reconstruct_compile'] if fraction else 0)
        )
        per_phase = 1.1 * figures['evaluation'] + figures.get('recalibrate', 0.0)  # + held-out
        return figures['probe_seconds'] + STORE_SECONDS + compiles + 3 * cycles * per_phase

    r, dist, note = 0, 0, ''
    if caps[1] and t_d:
        left = (total - outside(True)) / cycles
        share = caps[1] * t_d / (caps[0] * t_r + caps[1] * t_d)  # the recipe's proportions
        dist = min(caps[1], max(int(left * share / t_d), 0))
        r = min(caps[0], max(int((left - dist * t_d) / t_r), 0))
        dist = min(caps[1], max(int((left - r * t_r) / t_d), 0))  # what reconstruction left
        if dist < MIN_DISTILL:
            note = f'{dist} distillation steps would lower top-1: none, reconstruction instead'
            dist = 0
    if not dist:
        r = min(caps[0], max(int((total - outside(False)) / cycles / t_q), 0))
    if r < MIN_RECONSTRUCT:
        need = outside(False) + cycles * MIN_RECONSTRUCT * t_q
        raise ConfigError(
            f'budget={config.budget:g} min is too short for this run: the probe measured '
            f'{1000 * t_r:.3g} ms per reconstruction step and {outside(False):.0f} s outside '
            f'the steps; give at least budget={math.ceil(need / 60):g} (or 0: the steps as set)'
        )
    planned = outside(bool(dist)) + cycles * (r * (t_r if dist else t_q) + dist * t_d)
    if (r, dist) == caps:
        note = 'the steps as set fit'
    return {
        'minutes': float(config.budget),
        'caps': list(caps),
        'steps': [int(r), int(dist)],
        'planned_seconds': float(planned),
        'note': note,
        'figures': {k: v for k, v in figures.items() if k != 'top1_original'},
        **({'top1_original': figures['top1_original']} if 'top1_original' in figures else {}),
    }


def _probe_line(log, message: str) -> None:
    """The probe's progress and phase-end lines, marked as the probe's (the rest unsaid)."""
    if 'step/s' in message or ' done: ' in message:
        log(f'budget probe: {message}')


def _stored(workdir: str, minutes: float, caps: tuple[int, int]) -> dict | None:
    """The choice `workdir/budget.json` holds for this budget and these caps, or None."""
    try:
        with open(os.path.join(workdir, FILE), **files.ENCODING) as f:
            chosen = json.load(f)
    except (OSError, ValueError):
        return None
    if chosen.get('minutes') != float(minutes) or tuple(chosen.get('caps', ())) != caps:
        return None
    return chosen


def _agreed(steps: list[int]) -> list[int]:
    """Process 0's steps on every process (each measured its own probe)."""
    if jax.process_count() == 1:
        return steps
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return [int(s) for s in multihost_utils.broadcast_one_to_all(np.asarray(steps, np.int64))]

"""What a run trains, in order: reconstruction rounds, distillation, cycles; and their optimizer.

schedule = build_schedule(config)          # [Phase(kind, steps, round, cycle, hidden), ...]
tx = optimizer(config, schedule, index)    # optim.phase_switch: one optimizer per phase kind
                                           #   (reconstruct, quantize, distill)

Each reconstruction round has its own steps and predictor width
(`reconstruct.round_steps`, `reconstruct.round_hidden`); distillation trains the last
round's predictor. `rounds_of` is the one place a width is read from the config: every
`Phase` carries the width it trains (`hidden`), and the rest of the run takes it from
there (`first_hidden`, `final_hidden`, `rounds.held_width`).
"""

from __future__ import annotations

import dataclasses

from nrnp.training import optim

QUANTIZE_FINAL = 0.01  # the quantize phase's cosine ends at this fraction of its peak


@dataclasses.dataclass(frozen=True)
class Phase:
    # 'reconstruct' | 'quantize' (fine-tuning through the stored rounding) | 'distill' |
    # 'recalibrate' (BatchNorm re-estimation, 0 steps)
    kind: str
    steps: int
    round: int = 1  # reconstruction round within its cycle (1-based)
    cycle: int = 1
    hidden: int = 0  # width h of the predictor this phase trains

    @property
    def label(self) -> str:
        if self.kind == 'reconstruct':
            return f'reconstruct c{self.cycle} round {self.round}'
        if self.kind == 'recalibrate':
            return f'recalibrate c{self.cycle} after {self.after}'
        return f'{self.kind} c{self.cycle}'

    @property
    def after(self) -> str:
        """What a 'recalibrate' phase follows: 'round R', 'quantize' or 'distill'."""
        return {0: 'distill', -1: 'quantize'}.get(self.round, f'round {self.round}')


def split_steps(total_steps: int, rounds: int) -> list[int]:
    """Splits `total_steps` over `rounds` as evenly as possible (earlier rounds get the rest)."""
    if rounds < 1:
        raise ValueError(f'reconstruct.rounds must be >= 1, got {rounds}')
    base, rest = divmod(int(total_steps), rounds)
    return [base + (1 if r < rest else 0) for r in range(rounds)]


def rounds_of(config) -> list[tuple[int, int]]:
    """(steps, hidden width) of each reconstruction round of a cycle.

    The number of rounds is `len(round_hidden)`, else `len(round_steps)`, else
    `reconstruct.rounds`; `round_steps` (when given) replaces the even split of
    `reconstruct.steps`, `round_hidden` (when given) the width `predictor.hidden`.

    Raises:
      ValueError: for rounds < 1, tuples of different lengths, or a round of a changing
        width left without steps.
    """
    rc = config.reconstruct
    widths, steps = tuple(rc.round_hidden), tuple(rc.round_steps)
    if widths and steps and len(widths) != len(steps):
        raise ValueError(
            f'reconstruct.round_hidden {widths} and reconstruct.round_steps {steps} '
            'need one entry per round each'
        )
    rounds = len(widths) or len(steps) or rc.rounds
    steps = steps or tuple(split_steps(rc.steps, rounds))
    if widths and 0 in steps and any(steps):
        raise ValueError(
            f'reconstruct.steps={rc.steps} leaves a round of {widths} without steps: '
            'give at least one step per round'
        )
    return list(zip(steps, widths or (config.predictor.hidden,) * rounds))


def final_hidden(config) -> int:
    """Width of the predictor a run ends with (the last round's; distillation trains it)."""
    return int(rounds_of(config)[-1][1])


def quantize_steps(config) -> int:
    """Steps of a cycle's 'quantize' phase: `predictor.quantize_fraction` of the cycle's
    reconstruction steps, for an int mode with no distillation after it (distillation
    trains through the rounding itself; after a quantize phase it lost accuracy where
    measured, docs/results.md "Per byte")."""
    p = config.predictor
    if p.quantize in ('none', 'bf16') or config.distill.steps:
        return 0
    return int(round(p.quantize_fraction * sum(steps for steps, _ in rounds_of(config))))


def build_schedule(config, batch_norm: bool = True) -> list[Phase]:
    """`cycles` x (reconstruction rounds, the 'quantize' phase, distillation), skipping empty
    phases, with 'recalibrate' phases where `recalibrate.when` puts them
    (`recalibrate.images` > 0 and `batch_norm`: the target has BatchNorm statistics).

    A 'recalibrate' phase has 0 steps and the round it follows (0: after distillation,
    -1: after the quantize phase, which takes the last round's place).
    """
    if config.cycles < 1:
        raise ValueError(f'cycles must be >= 1, got {config.cycles}')
    rounds = rounds_of(config)
    if config.cycles > 1 and len({h for _, h in rounds}) > 1:
        raise ValueError(
            'cycles > 1 would return to round 1 of another width: '
            'give reconstruct.round_hidden one width, or cycles=1'
        )
    when = config.recalibrate.when if config.recalibrate.images and batch_norm else 'never'
    after_rounds = when in ('reconstruct', 'both')
    fine_tune, phases = quantize_steps(config), []
    for cycle in range(1, config.cycles + 1):
        for r, (steps, hidden) in enumerate(rounds):
            if steps:
                phases.append(Phase('reconstruct', steps, r + 1, cycle, hidden))
                if after_rounds and (r + 1 < len(rounds) or not fine_tune):
                    phases.append(Phase('recalibrate', 0, r + 1, cycle, hidden))
        hidden = final_hidden(config)
        if fine_tune:
            phases.append(Phase('quantize', fine_tune, 1, cycle, hidden))
            if after_rounds:
                phases.append(Phase('recalibrate', 0, -1, cycle, hidden))
        if config.distill.steps:
            phases.append(Phase('distill', config.distill.steps, 1, cycle, hidden))
        if when in ('distill', 'both') and phases and phases[-1].kind != 'recalibrate':
            after = 0 if config.distill.steps else (-1 if fine_tune else len(rounds))
            phases.append(Phase('recalibrate', 0, after, cycle, hidden))
    return phases


def first_hidden(config, schedule: list[Phase]) -> int:
    """Width of the predictor a run starts with (round 1's, or the final one)."""
    return schedule[0].hidden if schedule else final_hidden(config)


def _optimizer(section, steps: int):
    return optim.make_optimizer(
        section.optimizer,
        steps=steps,
        learning_rate=section.learning_rate,
        b1=section.b1,
        b2=section.b2,
        eps=section.eps,
        weight_decay=section.weight_decay,
        final_learning_rate=section.final_learning_rate,
        warmup=section.warmup,
    )


def _kind_steps(schedule: list[Phase], kind: str) -> int:
    return max(sum(p.steps for p in schedule if p.kind == kind), 1)


def restarts(config, phase: Phase) -> bool:
    """Whether `phase` starts its kind's optimizer (and learning-rate schedule) afresh.

    Rounds r > 1 always do (each trains a fresh predictor); round 1 of a cycle does
    with `reconstruct.restart_each_round`.
    """
    restart = phase.round > 1 or config.reconstruct.restart_each_round
    return phase.kind == 'reconstruct' and restart


def _span(config, schedule: list[Phase], index: int) -> int:
    """Length of the cosine that phase `index`'s optimizer follows.

    Distillation and quantize phases: all steps of their kind in the run. Reconstruction:
    the steps from the round's last restart (`restarts`) to the next one (one round,
    unless round 1 of a later cycle continues without restart_each_round).
    """
    phase = schedule[index]
    if phase.kind != 'reconstruct':
        return _kind_steps(schedule, phase.kind)
    recon = [i for i, p in enumerate(schedule) if p.kind == 'reconstruct']
    at = recon.index(index)
    start = at
    while start > 0 and not restarts(config, schedule[recon[start]]):
        start -= 1
    end = at + 1
    while end < len(recon) and not restarts(config, schedule[recon[end]]):
        end += 1
    return max(sum(schedule[i].steps for i in recon[start:end]), 1)


def learning_rate(config, schedule: list[Phase], index: int, step: int) -> float:
    """The learning rate step `step` (1-based) of phase `index` applies, for the logs."""
    phase = schedule[index]
    count = step - 1  # optimizer updates of this kind since its schedule (re)started
    if not restarts(config, phase):
        for earlier in reversed(schedule[:index]):
            if earlier.kind != phase.kind:
                continue
            count += earlier.steps
            if restarts(config, earlier):
                break
    if phase.kind == 'quantize':
        lr = config.predictor.quantize_learning_rate
        fn = optim.cosine_schedule(lr, _span(config, schedule, index), lr * QUANTIZE_FINAL)
        return float(fn(count))
    section = config.reconstruct if phase.kind == 'reconstruct' else config.distill
    fn = optim.cosine_schedule(
        section.learning_rate,
        _span(config, schedule, index),
        section.final_learning_rate,
        section.warmup,
    )
    return float(fn(count))


def optimizer(config, schedule: list[Phase], index: int | None) -> optim.PhaseSwitch:
    """The optimizer of phase `index`: `optim.phase_switch` over one optimizer per kind.

    The optimizers of a run's phases differ only in the length of the reconstruction
    cosine (`_span`; `index=None` gives any), so their states have one structure and a
    state carries over from one phase's optimizer to the next.
    """
    recon_span = 1
    if index is not None and schedule[index].kind == 'reconstruct':
        recon_span = _span(config, schedule, index)
    lr = config.predictor.quantize_learning_rate
    return optim.phase_switch(
        {
            'reconstruct': _optimizer(config.reconstruct, recon_span),
            # Adam from the float predictor; the cosine ends at QUANTIZE_FINAL of the peak.
            'quantize': optim.make_optimizer(
                'adam',
                steps=_kind_steps(schedule, 'quantize'),
                learning_rate=lr,
                b1=0.9,
                b2=0.999,
                eps=1e-8,
                final_learning_rate=lr * QUANTIZE_FINAL,
            ),
            'distill': _optimizer(config.distill, _kind_steps(schedule, 'distill')),
        }
    )

"""What a run trains, in order: reconstruction rounds, distillation, cycles; and their optimizer.

schedule = build_schedule(config)          # [Phase(kind, steps, round, cycle), ...]
tx = optimizer(config, schedule)           # optim.phase_switch: one optimizer per phase kind
"""

from __future__ import annotations

import dataclasses

from nrnp.training import optim


@dataclasses.dataclass(frozen=True)
class Phase:
    kind: str  # 'reconstruct' | 'distill'
    steps: int
    round: int = 1  # reconstruction round within its cycle (1-based)
    cycle: int = 1

    @property
    def label(self) -> str:
        if self.kind == 'reconstruct':
            return f'reconstruct c{self.cycle} round {self.round}'
        return f'distill c{self.cycle}'


def split_steps(total_steps: int, rounds: int) -> list[int]:
    """Splits `total_steps` over `rounds` as evenly as possible (earlier rounds get the rest)."""
    if rounds < 1:
        raise ValueError(f'reconstruct.rounds must be >= 1, got {rounds}')
    base, rest = divmod(int(total_steps), rounds)
    return [base + (1 if r < rest else 0) for r in range(rounds)]


def build_schedule(config) -> list[Phase]:
    """`cycles` x (reconstruction rounds, then distillation), skipping empty phases."""
    if config.cycles < 1:
        raise ValueError(f'cycles must be >= 1, got {config.cycles}')
    phases = []
    for cycle in range(1, config.cycles + 1):
        for r, steps in enumerate(split_steps(config.reconstruct.steps, config.reconstruct.rounds)):
            if steps:
                phases.append(Phase('reconstruct', steps, r + 1, cycle))
        if config.distill.steps:
            phases.append(Phase('distill', config.distill.steps, 1, cycle))
    return phases


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


def _spans(config, schedule: list[Phase]) -> dict[str, int]:
    recon = [p.steps for p in schedule if p.kind == 'reconstruct']
    distill_steps = sum(p.steps for p in schedule if p.kind == 'distill')
    recon_span = max(recon, default=1) if config.reconstruct.restart_each_round else sum(recon)
    return {'reconstruct': max(recon_span, 1), 'distill': max(distill_steps, 1)}


def restarts(config, phase: Phase) -> bool:
    """Whether `phase` starts its kind's optimizer (and learning-rate schedule) afresh."""
    rc = config.reconstruct
    fresh = phase.round > 1 and rc.fresh_predictor
    return phase.kind == 'reconstruct' and (rc.restart_each_round or fresh)


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
    section = config.reconstruct if phase.kind == 'reconstruct' else config.distill
    fn = optim.cosine_schedule(
        section.learning_rate,
        _spans(config, schedule)[phase.kind],
        section.final_learning_rate,
        section.warmup,
    )
    return float(fn(count))


def optimizer(config, schedule: list[Phase]) -> optim.PhaseSwitch:
    """The run's optimizer: `optim.phase_switch` over one optimizer per phase kind.

    Each kind's cosine spans all steps of that kind in the run, except with
    `reconstruct.restart_each_round`, where it spans one round.
    """
    spans = _spans(config, schedule)
    return optim.phase_switch(
        {
            'reconstruct': _optimizer(config.reconstruct, spans['reconstruct']),
            'distill': _optimizer(config.distill, spans['distill']),
        }
    )

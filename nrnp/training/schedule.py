"""What a run trains, in order: reconstruction rounds, distillation, cycles; and their optimizer.

schedule = build_schedule(config)          # [Phase(kind, steps, round, cycle, hidden), ...]
run = settings(config)                     # what the loop takes: phases, cadences, ...
tx = run.optimizer(index)                  # optim.phase_switch: one optimizer per phase kind
                                           #   (reconstruct, quantize, distill)

Each reconstruction round has its own steps and predictor width
(`reconstruct.round_steps`, `reconstruct.round_hidden`); distillation trains the last
round's predictor. `rounds_of` is the one place a width is read from the config: every
`Phase` carries the width it trains (`hidden`), and the rest of the run takes it from
there (`first_hidden`, `final_hidden`, `rounds.held_width`).
"""

from __future__ import annotations

import dataclasses

from nrnp import choices
from nrnp.training import optim


@dataclasses.dataclass(frozen=True)
class Phase:
    # 'reconstruct' | 'quantize' (fine-tuning through the stored rounding) | 'distill' |
    # 'recalibrate' (BatchNorm re-estimation, 0 steps)
    kind: str
    steps: int
    round: int = 1  # reconstruction round within its cycle (1-based)
    cycle: int = 1
    hidden: int = 0  # width h of the predictor this phase trains

    def __post_init__(self):
        if self.kind not in choices.PHASE_KINDS:
            raise ValueError(f'phase kind {self.kind!r}: one of {", ".join(choices.PHASE_KINDS)}')

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


def first_hidden(phases, final: int) -> int:
    """Width of the predictor a run starts with: its first phase's, else `final` (the width
    the run ends with, `final_hidden`)."""
    return phases[0].hidden if phases else final


# The optimizers' settings no recipe varies. Reconstruction: NeRN's (Ranger: RAdam b1 0.5,
# decoupled weight decay, Lookahead; the same moments for 'adam' and 'adamw'); each round
# starts its optimizer and cosine afresh. Distillation: Adam, not Ranger: RAdam's first
# un-rectified steps apply raw momentum, and KD gradients at weight ~1 (not NeRN's 1e-4)
# wreck the predictor (docs/results.md, "Distillation's optimizer"); its state and cosine
# span every distillation step of the run. The quantize phase: Adam from the float
# predictor, cosine to 1 % of its peak.
RECONSTRUCT_OPTIMIZER = dict(b1=0.5, b2=0.999, eps=1e-5, weight_decay=1e-3)
DISTILL_OPTIMIZER = dict(b1=0.9, b2=0.999, eps=1e-5, weight_decay=1e-3)
FINAL_LEARNING_RATE = 1e-6  # where the reconstruction and distillation cosines end
QUANTIZE_LEARNING_RATE = 1e-4
QUANTIZE_FINAL = 0.01  # the quantize phase's cosine ends at this fraction of its peak
TRAINED = ('reconstruct', 'quantize', 'distill')  # the kinds that train: one optimizer each
# The config sections (or fields) each phase kind reads that a workdir's later runs may
# change (`pipeline.workdirs.BRANCHABLE`): a run whose earlier phases read none of the
# changed fields reuses them (`loop`). Every other field is read by the first phase already.
READS = {
    'distill': ('distill', 'recalibrate'),
    'recalibrate': ('recalibrate',),
    'quantize': ('predictor.quantize_fraction',),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the loop takes from the config: the phases, their optimizers, and its cadences.

    Attributes:
      phases: the schedule (`build_schedule`).
      reconstruct_optimizer: 'ranger', 'adam' or 'adamw'.
      reconstruct_learning_rate, distill_learning_rate: the cosines' peaks.
      distill_warmup: linear warm-up steps of the distillation learning rate.
      reconstruct_batch_size: kernels per reconstruction step (capped at the table).
      reconstruct_magnitude_fraction: share of norm-weighted reconstruction batches.
      loss_weights: distillation's (kd, feature maps, reconstruction) weights.
      log_every, checkpoint_every, eval_every: cadences in steps (0: never).
      recalibrate_every: re-estimate BatchNorm every N distillation steps (0: never).
      step_costs: seconds per step of each kind, as this process measured them so far
        (the progress lines' whole-run ETA; filled as the run goes).
      reads: per phase, the `READS` fields it reads and their values (`phase_reads`).
    """

    phases: tuple[Phase, ...]
    reconstruct_optimizer: str = 'ranger'
    reconstruct_learning_rate: float = 5e-3
    distill_learning_rate: float = 1e-4
    distill_warmup: int = 0
    reconstruct_batch_size: int = 4096
    reconstruct_magnitude_fraction: float = 0.2
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 0.0)
    log_every: int = 200
    checkpoint_every: int = 1000
    eval_every: int = 0
    recalibrate_every: int = 0
    step_costs: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)
    reads: tuple[dict, ...] = ()

    def optimizer(self, index: int | None = None) -> optim.PhaseSwitch:
        """Phase `index`'s optimizer: `optim.phase_switch` over one optimizer per kind.

        They differ only in the length of the reconstruction cosine (the round's steps;
        `index=None` gives any), so their states have one structure and a state carries
        over from one phase's optimizer to the next.
        """
        steps = {
            kind: max(sum(p.steps for p in self.phases if p.kind == kind), 1) for kind in TRAINED
        }
        if index is not None and self.phases[index].kind == 'reconstruct':
            steps['reconstruct'] = self.phases[index].steps
        reconstruct = optim.make_optimizer(
            self.reconstruct_optimizer,
            steps=steps['reconstruct'],
            learning_rate=self.reconstruct_learning_rate,
            final_learning_rate=FINAL_LEARNING_RATE,
            **RECONSTRUCT_OPTIMIZER,
        )
        quantize = optim.make_optimizer(
            'adam',
            steps=steps['quantize'],
            learning_rate=QUANTIZE_LEARNING_RATE,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            final_learning_rate=QUANTIZE_LEARNING_RATE * QUANTIZE_FINAL,
        )
        distill = optim.make_optimizer(
            'adam',
            steps=steps['distill'],
            learning_rate=self.distill_learning_rate,
            final_learning_rate=FINAL_LEARNING_RATE,
            warmup=self.distill_warmup,
            **DISTILL_OPTIMIZER,
        )
        return optim.phase_switch(
            {'reconstruct': reconstruct, 'quantize': quantize, 'distill': distill}
        )


def settings(config, batch_norm: bool = True) -> Settings:
    """The loop's `Settings` from `config` (`build_schedule(config, batch_norm)`'s phases)."""
    d, phases = config.distill, tuple(build_schedule(config, batch_norm))
    return Settings(
        phases=phases,
        reconstruct_optimizer=config.reconstruct.optimizer,
        reconstruct_learning_rate=config.reconstruct.learning_rate,
        distill_learning_rate=d.learning_rate,
        distill_warmup=d.warmup_steps,
        reconstruct_batch_size=config.reconstruct.batch_size,
        reconstruct_magnitude_fraction=config.reconstruct.magnitude_fraction,
        loss_weights=(d.kd_weight, d.fm_weight, d.reconstruction_weight),
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        eval_every=config.eval_every,
        recalibrate_every=config.recalibrate.every,
        reads=tuple(phase_reads(config, p) for p in phases),
    )


def phase_reads(config, phase: Phase) -> dict:
    """The fields of the `READS` sections (or fields) `phase` reads, with their values."""
    out = {}
    for name in READS.get(phase.kind, ()):
        section, _, field = name.partition('.')
        fields = {field: config[section][field]} if field else dict(config[section].items())
        for key, value in fields.items():
            out[f'{section}.{key}'] = list(value) if isinstance(value, tuple) else value
    return out

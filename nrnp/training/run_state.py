"""What a run's loop works with: its fixed `Context` and the `Carry` it checkpoints.

  ctx = Context(pmodel=..., problem=..., evaluate=..., keys=..., log=print, workdir=W)
  carry = Carry(state, round_target, batch_stats)    # carry.arrays(): what a checkpoint holds

Built once by `pipeline.assemble`, used by `loop.run_schedule` and its phases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from nrnp.core import predictor, quantize
from nrnp.training import distillation, reconstruction, sharding


@dataclasses.dataclass
class Context:
    """What the phases need besides the config (built once by `pipeline.assemble`).

    Attributes:
      pmodel: predictor module (run_schedule gives each phase its width); input_dim: its
        input width; predictor_seed: init seed.
      problem: `ReconstructionProblem` with the original rows as target.
      setup: `DistillSetup` (None without distillation); frozen: its `Frozen` arrays.
      batches: `(start_step, cycle) -> iterator` of distillation image batches
        (`images` or `(images, labels)`, images `[B, H, W, C]` float32, this
        process's share); deterministic in its arguments for exact resume.
      evaluate: `(pparams, batch_stats) -> top1 percent` of the rebuilt network (with those
        BatchNorm statistics; None: the original's) on the test images, or None.
      keys: named PRNG keys ('reconstruct', 'distill', ...).
      log: progress sink; workdir: run directory.
      mesh: device mesh (None: default device); images and kernel rows are split over it.
      metrics: `reporting.metrics.MetricWriter` for TensorBoard and metrics.jsonl.
      device_batches: `device_data.DeviceBatches` when the distillation images are drawn
        on the device (then `batches` is unused).
      schedule: the run's phases (set by `run_schedule`).
      scheme: how the artefact stores the predictor (`core.quantize.Scheme`): the
        'quantize' and distillation phases train through it, and every phase but
        reconstruction evaluates and re-estimates the network it rebuilds (`stored_view`).
      batch_stats: the target's stored BatchNorm statistics (None: it has none).
      recalibrate: `pparams -> batch_stats` re-estimated for the rebuilt network
        ('recalibrate' phases, `recalibrate.every`), or None.
      recalibration: what the re-estimation uses ('images', 'mode', 'source'), for records.
      temporary: the workdir is deleted after the run (its checkpoints are not kept).
      saved: the newest checkpoint step of this run (set by `run_schedule`).
    """

    pmodel: predictor.Predictor
    input_dim: int
    predictor_seed: int
    problem: reconstruction.ReconstructionProblem
    setup: distillation.DistillSetup | None
    frozen: distillation.Frozen | None
    batches: Callable | None
    evaluate: Callable
    keys: dict
    log: Callable
    workdir: str
    mesh: object = None
    metrics: object = None
    device_batches: object = None
    schedule: list = dataclasses.field(default_factory=list)
    scheme: quantize.Scheme = quantize.NONE
    batch_stats: dict | None = None
    recalibrate: Callable | None = None
    recalibration: dict = dataclasses.field(default_factory=dict)
    temporary: bool = False
    saved: dict = dataclasses.field(default_factory=dict)

    def seen(self, kind: str, pparams):
        """The predictor a phase of `kind` is measured as: as trained for reconstruction,
        else as the artefact stores it (`scheme`; the same params for float storage)."""
        if kind == 'reconstruct' or self.scheme.mode == 'none':
            return pparams
        return _stored(pparams, self.scheme)


@dataclasses.dataclass
class Carry:
    """What a run carries from phase to phase and checkpoints.

    Attributes:
      state: the `PredictorState`.
      round_target: `[N, 9]` rows the current reconstruction round fits.
      batch_stats: the rebuilt network's BatchNorm statistics (the stored ones until a
        'recalibrate' phase re-estimates them; None without BatchNorm).
    """

    state: reconstruction.PredictorState
    round_target: object
    batch_stats: dict | None = None

    def arrays(self) -> dict:
        out = {'state': self.state, 'round_target': self.round_target}
        return out if self.batch_stats is None else {**out, 'batch_stats': self.batch_stats}

    @classmethod
    def of(cls, arrays: dict) -> Carry:
        return cls(arrays['state'], arrays['round_target'], arrays.get('batch_stats'))

    def placed(self, mesh) -> Carry:
        """On the mesh: the state as `sharding.place_state`, the rest replicated."""
        if mesh is None:
            return self
        stats = None if self.batch_stats is None else sharding.replicate(self.batch_stats, mesh)
        return Carry(
            sharding.place_state(self.state, mesh),
            sharding.replicate(self.round_target, mesh),
            stats,
        )


_stored = jax.jit(quantize.fake_quantize_tree, static_argnums=1)

"""One run, described: what to compress, the data it sees and its settings.

  description = RunDescription(config, model, variables, Data(top1=..., ...), workdir, mesh)
  outcome = compression.run(compression.prepare(description))
  artifact = compression.store(outcome)

Both front doors build one: the command line (`job.describe`: the target and the splits
from the config) and the library (`library.describe`: the caller's variables, model and
data). From here on they run the same code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import ml_collections


@dataclasses.dataclass
class Data:
    """The images of a run, in the form the run uses them (all optional).

    Attributes:
      input_shape: `(1, H, W, C)` of one image (None: unknown; no distillation then).
      top1: `variables -> top-1 percent` on the test images (None: no accuracy).
      test_images: how many test images `top1` measures.
      train_batches: `(start_step, cycle) -> iterator` of distillation image batches
        (this process's rows), for distillation on host batches.
      device_batches: `device_data.DeviceBatches`: the distillation images drawn and
        augmented on the device instead (`train_batches` is then None).
      calibration_images: `(batches, batch_size) -> [images]` of unlabeled training images
        for BatchNorm re-estimation (`calibration.split_images`, `array_images`), or None:
        noise or synthetic images.
      heldout_images: the same, from the other end of the training images: what the run
        scores each phase's net on to choose the one it keeps (`training.keeping`), or None.
    """

    input_shape: tuple[int, ...] | None = None
    top1: Callable | None = None
    test_images: int = 0
    train_batches: Callable | None = None
    device_batches: object = None
    calibration_images: Callable | None = None
    heldout_images: Callable | None = None


@dataclasses.dataclass
class RunDescription:
    """What `compression.prepare` takes: one run, whichever door it came in by.

    Attributes:
      config: the run's ConfigDict (validated; the run's copy).
      model: the target's Linen module (None: data-free without test images).
      variables: `{'params', 'batch_stats', ...}` of the target.
      data: its `Data`.
      workdir: where checkpoints (and metrics) go; a rerun with the same description
        resumes.
      mesh: the device mesh (`sharding.make_mesh`).
      log: progress sink.
      bare: the caller passed bare params (the artefact then rebuilds bare params).
      temporary: the workdir is deleted afterwards (no metrics, messages do not point at it).
      top1_original: the original's top-1 on these test images when an earlier run in the
        workdir measured it (a branch: same target, same test data), else None (measured).
      budget: what `budgets.resolve` chose for `config.budget` (None: no budget).
    """

    config: ml_collections.ConfigDict
    model: object
    variables: dict
    data: Data
    workdir: str
    mesh: object
    log: Callable[[str], None] = print
    bare: bool = False
    temporary: bool = False
    top1_original: float | None = None
    budget: dict | None = None

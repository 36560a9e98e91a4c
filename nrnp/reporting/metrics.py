"""Metrics for tools: TensorBoard event files and `metrics.jsonl` in the workdir.

  writer = MetricWriter(workdir)            # W/tensorboard/events.* and W/metrics.jsonl
  writer.write(step, {'recon/loss': 0.01, 'recon/lr': 5e-3, 'steps_per_second': 40.0})
  writer.close()
  # tensorboard --logdir runs

Events are written with tensorboardX, which needs no TensorFlow (without it, only
`metrics.jsonl` is written: accelerator images may lack it). Every line of
`metrics.jsonl` is `{"step": s, "name": value, ...}`, appended and flushed as written, so
a killed run keeps what it logged (a resumed run appends; steps may then repeat).
Only process 0 writes; `MetricWriter(None)` writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os

from nrnp import errors, files


class MetricWriter:
    """Scalar metrics to TensorBoard and JSON lines (see module docstring)."""

    def __init__(self, workdir: str | None, enabled: bool = True):
        self.enabled = workdir is not None and enabled
        self._events = self._lines = None
        if not self.enabled:
            return
        try:
            from tensorboardX import SummaryWriter  # noqa: PLC0415 (protobuf: only when used)
        except ImportError:  # a bare accelerator image: metrics.jsonl only
            SummaryWriter = None
        if SummaryWriter is not None:
            self._events = SummaryWriter(os.path.join(workdir, 'tensorboard'), flush_secs=10)
        self.path = os.path.join(workdir, 'metrics.jsonl')
        with errors.writing(self.path, 'the metrics'):
            self._lines = open(self.path, 'a', **files.ENCODING)  # noqa: SIM115

    def write(self, step: int, scalars: dict) -> None:
        """Writes each finite scalar at `step` (a global step of the run)."""
        if not self.enabled:
            return
        values = {}
        for name, value in scalars.items():
            if value is None:
                continue
            value = float(value)
            if math.isfinite(value):
                values[name] = value
                if self._events is not None:
                    self._events.add_scalar(name, value, global_step=int(step))
        with errors.writing(self.path, 'the metrics'):
            self._lines.write(json.dumps({'step': int(step), **values}) + '\n')
            self._lines.flush()

    def flush(self) -> None:
        if self.enabled:
            if self._events is not None:
                self._events.flush()
            self._lines.flush()

    def close(self) -> None:
        """Closes the files; quietly on a full disk (every line was flushed as written, and
        the error that stopped the run, if any, is the one to report)."""
        if self.enabled:
            self.enabled = False
            with contextlib.suppress(OSError):
                if self._events is not None:
                    self._events.close()
            with contextlib.suppress(OSError):
                self._lines.close()

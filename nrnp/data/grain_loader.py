"""Streamed batches through grain: worker processes decode and augment, prefetched ahead.

  batches = train_batches(source, start_step=step, workers=8, batch_size=256, seed=0, ...)
  images, labels = next(batches)             # exactly batching.train_batch(source, step, ...)
  for images, labels, mask in eval_batches(source, workers=8, batch_size=250, ...): ...

For streamed data (`data.streaming=True`, `data.loader='grain'`) grain does what the
thread pool and prefetch thread of `batching` do by hand: a `grain.MapDataset` over step
numbers maps each step to its whole (process-local) batch with `batching.train_batch`,
and `mp_prefetch` spreads the steps over worker processes (decoding and augmentation run
outside the training process's GIL) and keeps them ahead of the consumer. Every batch is
a pure function of (seed, step), so the batches equal the thread pipeline's exactly and
the iterator's whole state is the step, which the run's checkpoint already holds: a
resumed run starts the dataset at that step. Per-process sharding is `train_batch`'s
(each process reads only its rows of every global batch).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from nrnp.data import batching
from nrnp.errors import ConfigError

_ENDLESS = 2**62  # steps in the training dataset: as many as any run asks for


def available() -> bool:
    """Whether grain is installed."""
    try:
        import grain  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _grain():
    try:
        import grain  # noqa: PLC0415
    except ImportError:
        raise ConfigError(
            "data.loader='grain' needs grain (pip install grain); or set "
            '--config.data.loader=threads'
        ) from None
    from absl import flags  # noqa: PLC0415

    if not flags.FLAGS.is_parsed():  # grain reads absl flags; nrnp parses its own flag set
        flags.FLAGS.mark_as_parsed()
    return grain


def default_workers() -> int:
    """One decoding process per core, less one for the training process (at least 1)."""
    return max(1, min(16, (os.cpu_count() or 2) - 1))


class _TrainStep:
    """step -> batching.train_batch(source, step, **settings); picklable for the workers."""

    def __init__(self, source, settings: dict):
        self.source, self.settings = source, settings

    def __call__(self, step: int):
        return batching.train_batch(self.source, int(step), **self.settings)


class _EvalBatch:
    """index -> batching.eval_batch(source, index, **settings); picklable for the workers."""

    def __init__(self, source, settings: dict):
        self.source, self.settings = source, settings

    def __call__(self, index: int):
        return batching.eval_batch(self.source, int(index), **self.settings)


def _iterate(dataset, workers: int, buffer: int) -> Iterator:
    grain = _grain()
    stream = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=buffer))
    if workers > 0:
        options = grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=buffer)
        stream = stream.mp_prefetch(options)
    iterator = iter(stream)
    try:
        yield from iterator
    finally:
        close = getattr(iterator, 'close', None)
        if close is not None:
            close()  # stops the worker processes


def train_batches(
    source, *, start_step: int = 0, workers: int | None = None, buffer: int = 2, **settings
) -> Iterator:
    """Endless training batches from `start_step`: `batching.train_batch`'s, through grain.

    Args:
      source: a streamed source (`folders.FolderSource`, `tfds_reader.TfdsSource`) or any
        dataset with `len()` and `read(index)`; pickled to each worker.
      start_step: the first step (resume).
      workers: worker processes (None: `default_workers()`; 0: in this process).
      buffer: batches each worker keeps ready.
      **settings: `batching.train_batch`'s keyword arguments (batch_size, seed, augment,
        mean, std, pad, image_size, process_index, process_count).

    Yields:
      (images [B / P, S, S, C] float32, labels [B / P] int32), step after step.
    """
    grain = _grain()
    workers = default_workers() if workers is None else workers
    steps = grain.MapDataset.range(start_step, _ENDLESS).map(_TrainStep(source, settings))
    return _iterate(steps, workers, buffer)


def eval_batches(
    source, *, workers: int | None = None, buffer: int = 2, batch_size: int, **settings
) -> Iterator:
    """Every evaluation batch in order: `batching.eval_batch`'s, through grain.

    Yields:
      (images [B / P, S, S, C] float32, labels [B / P] int32, mask [B / P] bool).
    """
    grain = _grain()
    workers = default_workers() if workers is None else workers
    count = batching.num_eval_batches(len(source), batch_size)
    settings = {**settings, 'batch_size': batch_size}
    batches = grain.MapDataset.range(count).map(_EvalBatch(source, settings))
    return _iterate(batches, workers, buffer)

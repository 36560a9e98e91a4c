"""Which images a run re-estimates its BatchNorm statistics on (the `recalibrate` section).

  reestimate = reestimation(config, model, variables, input_shape=(1, 32, 32, 3),
                            train_images=split_images(config, train), mesh=mesh, log=print)
  reestimate.info                 # {'images': 256, 'mode': 'relative', 'source': 'train'}
  batch_stats = reestimate(params)   # `training.recalibration.Reestimation`
  batches = calibration_images('noise', 1, 256, (32, 32, 3), seed=0)   # what benchmarks use

The calibration images are chosen once per run and reused for every re-estimation (and
for the original network's moments in 'relative' mode): `source='train'` takes a seeded
subset of the training split (CLI) or the library's data, without labels or augmentation;
'noise' seeded standard-normal inputs; 'synthetic' noise optimised to match the stored
BatchNorm statistics; 'auto' is 'train' when there are training images, else 'noise'.
They are made on first use (`Reestimation` is lazy), so a resumed run past every
re-estimation never makes them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np

from nrnp.data import batching, dataset
from nrnp.errors import ConfigError
from nrnp.nets import batchnorm
from nrnp.training import evaluation, recalibration

HELDOUT = 1000  # training images each phase's net is scored on (the kept phase's choice)


def needs_train_split(config, variables: dict) -> bool:
    """Whether the CLI's re-estimation reads the training split."""
    r = config.recalibrate
    return bool(r.images) and r.source in ('auto', 'train') and batchnorm.has_batchnorm(variables)


def batch_plan(images: int, batch_size: int, available: int | None, mesh) -> tuple[int, int]:
    """(batches, batch size): at most `images` (and `available`) images in equal batches
    that divide over the mesh's 'data' axis and the processes (rounded down where the
    images allow, up to one multiple when there are fewer)."""
    images = min(images, available) if available is not None else images
    size = max(min(batch_size, images), 1)
    if mesh is not None:
        multiple = evaluation.round_batch(1, mesh)
        size = max(size // multiple, 1) * multiple
    return max(images // size, 1), size


def _local_rows(batch: np.ndarray) -> np.ndarray:
    """This process's rows of a global batch (every process holds the whole batch)."""
    local = batch.shape[0] // jax.process_count()
    return batch[jax.process_index() * local : (jax.process_index() + 1) * local]


def split_images(config, train, tail: bool = False) -> Callable[[int, int], list[np.ndarray]]:
    """`(batches, batch_size) -> this process's rows of each batch` from the training split:
    a seeded subset, normalised, centre-cropped where the split is not resized on reading.
    `tail`: from the other end of the same seeded order (the held-out images the kept
    phase is chosen on: disjoint from the calibration images while the split holds both)."""
    resized = config.data.augment == 'random_resized_crop'  # such splits keep their sizes
    crop = 'center' if resized or config.data.eval_crop == 'center' else 'none'

    def images(count: int, size: int) -> list[np.ndarray]:
        order = np.random.default_rng([config.seed, 0xCA1]).permutation(len(train))
        chosen = order[len(order) - count * size :] if tail else order[: count * size]
        subset = dataset.take(train, np.sort(chosen))
        settings = dict(
            batch_size=size,
            mean=tuple(config.data.mean),
            std=tuple(config.data.std),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            crop=crop,
            image_size=config.data.image_size,
            crop_fraction=config.data.crop_fraction,
        )
        return [batching.eval_batch(subset, i, **settings)[0] for i in range(count)]

    images.available = len(train)
    return images


def without_heldout(config, train, held: int = HELDOUT):
    """`train` less the last `held` images of `split_images`' seeded order (what its
    `tail=True` draws the held-out images from), so that distillation never trains on the
    images that choose the kept phase; all of `train` when it holds fewer than `4 * held`
    images (too few to spare: the held-out score then shares them)."""
    if len(train) < 4 * held:
        return train
    order = np.random.default_rng([config.seed, 0xCA1]).permutation(len(train))
    return dataset.take(train, np.sort(order[: len(train) - held]))


def array_images(batches: list, tail: bool = False) -> Callable[[int, int], list[np.ndarray]]:
    """The same from the library's data: its first images (`tail`: its last ones), re-cut
    into equal batches."""

    def images(count: int, size: int) -> list[np.ndarray]:
        held, total = [], 0
        for batch in reversed(list(batches)) if tail else batches:
            held.append(np.asarray(batch[0] if isinstance(batch, tuple) else batch, np.float32))
            total += len(held[-1])
            if total >= count * size:
                break
        whole = np.concatenate(held[::-1] if tail else held)
        whole = whole[len(whole) - count * size :] if tail else whole[: count * size]
        return [_local_rows(whole[i * size : (i + 1) * size]) for i in range(count)]

    images.available = sum(len(b[0] if isinstance(b, tuple) else b) for b in batches)
    return images


def resolve_source(config, has_train: bool) -> str:
    """The calibration source a run uses ('auto' resolved)."""
    source = config.recalibrate.source
    if source == 'auto':
        return 'train' if has_train else 'noise'
    if source == 'train' and not has_train:
        raise ConfigError(
            "recalibrate.source='train' needs training images (the library's data=); "
            "use 'noise' or 'synthetic' for data-free re-estimation"
        )
    return source


def calibration_images(
    source: str,
    batches: int,
    batch_size: int,
    image_shape: tuple[int, ...],
    seed: int,
    *,
    train_images: Callable | None = None,
    model=None,
    variables: dict | None = None,
    synthetic_steps: int = 300,
    log: Callable[[str], None] | None = None,
) -> list[np.ndarray]:
    """`batches` equal batches of `batch_size` calibration images (this process's rows of
    each) from `source`: 'train' (`train_images`, `split_images` or `array_images`),
    'noise', or 'synthetic' (matched to `model` with `variables`' BatchNorm statistics)."""
    if source == 'train':
        return train_images(batches, batch_size)
    shape = (batches * batch_size, *image_shape)
    if source == 'noise':
        images = recalibration.noise_images(shape, seed)
    else:
        images = recalibration.synthetic_images(
            model, variables, shape, seed, steps=synthetic_steps, log=log
        )
    return [_local_rows(images[i * batch_size : (i + 1) * batch_size]) for i in range(batches)]


def reestimation(
    config, model, variables, input_shape, train_images, mesh, log
) -> recalibration.Reestimation | None:
    """The run's BatchNorm re-estimation, or None when it is off or impossible (logged).

    Args:
      config: the run's config (`recalibrate`, `seed`).
      model: the target network (None: re-estimation is skipped).
      variables: the target's {'params', 'batch_stats', ...}.
      input_shape: `(1, H, W, C)` of the network's inputs (noise and synthetic images).
      train_images: `split_images(...)` or `array_images(...)`, or None (no training data).
      mesh: the run's mesh.
      log: progress sink.
    """
    r = config.recalibrate
    if not r.images:
        return None
    if not batchnorm.has_batchnorm(variables):
        log('note: the target has no BatchNorm running statistics: nothing to re-estimate')
        return None
    if model is None or input_shape is None:
        log('note: BatchNorm re-estimation needs the model and its input shape: skipped')
        return None
    source = resolve_source(config, train_images is not None)
    available = train_images.available if source == 'train' else None
    count, size = _plan(r, available, mesh, log)
    images = functools.partial(
        calibration_images,
        source,
        count,
        size,
        input_shape[1:],
        config.seed,
        train_images=train_images,
        model=model,
        variables=variables,
        synthetic_steps=r.synthetic_steps,
        log=log,
    )
    info = {'images': count * size, 'mode': r.mode, 'source': source}
    log(f'BatchNorm re-estimation: {info["images"]} {source} images ({r.mode}), when {r.when}')
    return recalibration.Reestimation(model, variables, images, r.mode, mesh, info)


def _plan(r, available: int | None, mesh, log) -> tuple[int, int]:
    """`batch_plan` of the `recalibrate` section `r` over `available` training images."""
    if available is not None and r.images > available:
        log(
            f'note: recalibrate.images={r.images} is more than the {available} training '
            f'images: re-estimating on (at most) all {available}'
        )
    count, size = batch_plan(r.images, r.batch_size, available, mesh)
    if available is not None and count * size > available:
        raise ConfigError(
            f'BatchNorm re-estimation needs batches of {size} images (a multiple of the '
            f'devices and processes) but the training images number {available}: give more '
            'images, or set recalibrate.source=noise (or recalibrate.images=0: off)'
        )
    return count, size

"""Batches for training and evaluation from any data source, normalisation, and prefetching.

  ds = sources.load_dataset(name='cifar10', split='train', data_dir='/data/tfds')
  batches = train_batches(ds, 128, seed=0, start_step=step, mean=MEAN, std=STD)
  images, labels = next(batches)  # [128, 32, 32, 3] float32, [128] int32
  # several JAX processes: process_index=jax.process_index(), process_count=jax.process_count()
  # yields this process's [128 / P] rows of the same global batch, reading only those rows

Everything here returns numpy, never JAX arrays, so the trainer decides placement and
sharding. Sources are in `nrnp.data.sources` (and `dataset`, `folders`, `tfds_reader`),
augmentations in `nrnp.data.augment`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence

import numpy as np

from nrnp import choices
from nrnp.data import threads
from nrnp.data.augment import (
    center_crop_resize,
    crop_flip,
    crop_flip_draws,
    crop_resize,
    image_sizes,
    resized_crop_boxes,
    resized_crop_uniforms,
)
from nrnp.data.dataset import _check_process
from nrnp.errors import DataError

_AUGMENT_SALT = 1_000_003  # separates the augmentation streams from the permutation streams


def normalise(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Maps uint8 images [..., C] to float32 (x / 255 - mean) / std, per channel.

    mean and std have length C or 1. Float images are taken as already normalised: they
    come back as float32, unchanged.
    """
    if np.issubdtype(images.dtype, np.floating):
        return np.asarray(images, np.float32)
    channels = images.shape[-1]
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    if mean.ndim != 1 or std.ndim != 1 or {len(mean), len(std)} - {1, channels}:
        raise DataError(
            f'mean {tuple(mean)} and std {tuple(std)} need length 1 or {channels} '
            f'(the channel count); fix data.mean / data.std'
        )
    out = np.empty(images.shape, np.float32)

    def rows(start: int, stop: int) -> None:  # in place: 3 fewer full-size temporaries
        part = out[start:stop]
        np.multiply(images[start:stop], np.float32(1 / 255), out=part, dtype=np.float32)
        part -= mean
        part /= std

    parts = min(os.cpu_count() or 1, 8)
    if images.ndim < 2 or parts < 2 or images.size < 1 << 22:  # threads pay from ~4M values
        rows(0, len(images))
        return out
    threads.for_ranges(rows, len(images), chunk=-(-len(images) // parts))  # numpy frees the GIL
    return out


def _local_rows(batch_size: int, process_index: int, process_count: int) -> slice:
    """Rows [p * B / P, (p + 1) * B / P) of a global batch of B that process p produces."""
    _check_process(process_index, process_count)
    if batch_size % process_count:
        raise DataError(
            f'global batch_size {batch_size} is not divisible by process_count {process_count}; '
            'every process must get the same number of rows'
        )
    local = batch_size // process_count
    return slice(process_index * local, (process_index + 1) * local)


def _stack(images, what: str) -> np.ndarray:
    """[n, H, W, C] uint8 from an array or a list of equally sized images."""
    if isinstance(images, np.ndarray):
        return images
    shapes = {x.shape for x in images}
    if len(shapes) > 1:
        raise DataError(
            f'{what} got images of several sizes {sorted(shapes)[:3]}...; resize them on '
            'reading (open the source with image_size=S; a run does so with data.image_size '
            "unless a crop resizes), or use augment='random_resized_crop' (training) and "
            "crop='center' (evaluation), which resize each image"
        )
    return np.stack(images)


def train_batches(
    dataset,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    augment: str = 'crop_flip',
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    pad: int = 4,
    image_size: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Infinite shuffled training batches, a pure function of (seed, step).

    Epoch e is `np.random.default_rng([seed, e]).permutation(N)` cut into N // batch_size
    batches (remainder dropped); step s is batch s % steps_per_epoch of epoch
    s // steps_per_epoch, augmented with `np.random.default_rng([seed, 1_000_003, s])`.
    Starting at start_step=k yields exactly what an uninterrupted iterator yields from k.

    With several JAX processes each yields only rows [p * B / P, (p + 1) * B / P) of the
    global batch and reads (`dataset.read`) only those examples: for a streamed source a
    process decodes B / P images a step, and within an epoch the processes' examples are
    disjoint and cover the split (less the remainder). The augmentation draws are made for
    all B rows and sliced, so the processes' batches concatenated in process order equal
    the 1-process batch exactly.

    Args:
      dataset: the training set: a `Dataset` (in memory) or a streamed source
        (`FolderSource`, `TfdsSource`); anything with `len()` and `read(index)`.
      batch_size: examples per global batch B (divisible by process_count).
      seed: data seed.
      start_step: first global step to yield (for resume).
      augment: 'crop_flip' (`augment.crop_flip`, the CIFAR default), 'random_resized_crop'
        (`augment.crop_resize` of Inception-style boxes, ImageNet; images may differ in
        size) or 'none'.
      mean, std: per-channel normalisation (see `normalise`).
      pad: crop padding for 'crop_flip'.
      image_size: output side S for 'random_resized_crop' (default: the first image's
        height); the other augmentations keep [H, W].
      process_index: this process, `jax.process_index()`.
      process_count: number of processes P, `jax.process_count()`.

    Yields:
      (images [B / P, S, S, C] float32, labels [B / P] int32).
    """
    settings = dict(
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        mean=mean,
        std=std,
        pad=pad,
        image_size=image_size,
        process_index=process_index,
        process_count=process_count,
    )
    step = start_step
    while True:
        yield train_batch(dataset, step, **settings)
        step += 1


@functools.lru_cache(maxsize=2)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_batch(
    dataset,
    step: int,
    *,
    batch_size: int,
    seed: int,
    augment: str = 'crop_flip',
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    pad: int = 4,
    image_size: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Batch `step` of `train_batches` (same arguments): a pure function of (seed, step), so
    any worker can produce any step (`grain_loader` does)."""
    if augment not in choices.AUGMENTATIONS:
        raise DataError(f'augment must be one of {choices.AUGMENTATIONS}, got {augment!r}')
    rows = _local_rows(batch_size, process_index, process_count)
    n = len(dataset)
    steps_per_epoch = n // batch_size
    if steps_per_epoch == 0:
        raise DataError(f'batch_size {batch_size} exceeds the {n} training examples')
    perm = _epoch_permutation(seed, step // steps_per_epoch, n)
    start = (step % steps_per_epoch) * batch_size
    index = perm[start + rows.start : start + rows.stop]  # [B / P]
    images, labels = dataset.read(index)  # [B / P, H, W, C] uint8 (or a list), [B / P]
    rng = np.random.default_rng([seed, _AUGMENT_SALT, step])
    if augment == 'random_resized_crop':
        fraction, aspect, where, flip = resized_crop_uniforms(
            rng, batch_size, (0.08, 1.0), (3 / 4, 4 / 3)
        )
        heights, widths = image_sizes(images)
        boxes = resized_crop_boxes(
            fraction[rows], aspect[rows], where[rows], heights, widths, (3 / 4, 4 / 3)
        )
        images = crop_resize(images, boxes, flip[rows], image_size or int(heights[0]))
    else:
        images = _stack(images, 'train_batches')
        height = images.shape[1]
        if image_size is not None and image_size != height:
            raise DataError(
                f'image_size {image_size} differs from the images ({height}x'
                f'{images.shape[2]}) but augment {augment!r} does not resize; resize the '
                'dataset or use random_resized_crop'
            )
        if augment == 'crop_flip':
            offsets, flip = crop_flip_draws(rng, batch_size, pad)
            images = crop_flip(images, offsets[rows], flip[rows], pad)
    return normalise(images, mean, std), np.asarray(labels, np.int32)


def eval_batches(
    dataset,
    batch_size: int,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    process_index: int = 0,
    process_count: int = 1,
    crop: str = 'none',
    image_size: int | None = None,
    crop_fraction: float = 0.875,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All examples in order, in fixed-shape batches (no recompilation for the last one).

    With several processes, each yields rows [p * B / P, (p + 1) * B / P) of every global
    batch and reads only those, so all processes run the same number of batches and their
    rows together are the 1-process batch.

    Args:
      dataset: a `Dataset` or a streamed source (anything with `len()` and `read(index)`).
      batch_size: examples per global batch B (divisible by process_count).
      mean, std: per-channel normalisation (see `normalise`).
      process_index, process_count: this process and the number of processes P.
      crop: 'none' (images as they are; all of one size) or 'center' (`center_crop_resize`:
        the central `crop_fraction` square resized to image_size, the ImageNet evaluation).
      image_size: output side S for crop='center' (required there).
      crop_fraction: crop side over the shorter image side for crop='center'.

    Yields:
      (images [B / P, S, S, C] float32, labels [B / P] int32, mask [B / P] bool); rows
      past the end are zero images with label 0 where mask is False.
    """
    if crop not in choices.EVAL_CROPS:
        raise DataError(f'crop must be one of {choices.EVAL_CROPS}, got {crop!r}')
    if crop == 'center' and not image_size:
        raise DataError("crop='center' needs image_size (data.image_size)")
    for index in range(num_eval_batches(len(dataset), batch_size)):
        yield eval_batch(
            dataset,
            index,
            batch_size=batch_size,
            mean=mean,
            std=std,
            process_index=process_index,
            process_count=process_count,
            crop=crop,
            image_size=image_size,
            crop_fraction=crop_fraction,
        )


def num_eval_batches(num_examples: int, batch_size: int) -> int:
    """How many batches `eval_batches` yields (the last one padded)."""
    return -(-num_examples // batch_size)


def eval_batch(
    dataset,
    index: int,
    *,
    batch_size: int,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    process_index: int = 0,
    process_count: int = 1,
    crop: str = 'none',
    image_size: int | None = None,
    crop_fraction: float = 0.875,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch `index` of `eval_batches` (same arguments)."""
    rows = _local_rows(batch_size, process_index, process_count)
    local = rows.stop - rows.start
    n = len(dataset)
    start = index * batch_size
    lo, hi = min(start + rows.start, n), min(start + rows.stop, n)
    valid = hi - lo
    if valid:
        images, labels = dataset.read(np.arange(lo, hi))
        if crop == 'center':
            images = center_crop_resize(images, image_size, crop_fraction)
        images, labels = _stack(images, 'eval_batches'), np.asarray(labels, np.int32)
        shape = images.shape[1:]
    else:  # this process's rows are all padding: one example gives the shape
        example = dataset.read(np.arange(1))[0]
        if crop == 'center':
            example = center_crop_resize(example, image_size, crop_fraction)
        shape = _stack(example, 'eval_batches').shape[1:]
        images, labels = np.zeros((0,) + shape, np.uint8), np.zeros(0, np.int32)
    mask = np.arange(local) < valid  # [B / P]
    if valid < local:
        images = np.concatenate([images, np.zeros((local - valid,) + shape, np.uint8)])
        labels = np.concatenate([labels, np.zeros(local - valid, np.int32)])
    return normalise(images, mean, std), labels, mask

"""CIFAR-sized data on the device: sampling, crop, flip and normalisation inside the jitted step.

  split = place(train_dataset, mesh)                       # uint8 [N, H, W, C] once, replicated
  images = train_images(split, key, step, batch_size=256, augment='crop_flip', pad=4,
                        mean=MEAN, std=STD)                # [256, H, W, C] float32, in jit
  hits, count = count_correct(model, variables, test_split, batch_size=500, mean=MEAN, std=STD)

Per step the host only dispatches: no numpy augmentation and no host-to-device copy. Every
draw is a function of (key, step): epoch e is `jax.random.permutation(fold_in(key, e), N)`
cut into N // B batches (remainder dropped), and the augmentation of step s uses
`fold_in(key, s)`, so a resumed run sees the same images. (The host pipeline,
`data.batching.train_batches`, draws with numpy: same distribution, other numbers.)

The split is replicated on every device of the mesh: drawing a random batch from an array
sharded over devices would all-gather it every step, while CIFAR's 150 MB fit any device.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nrnp.training import sharding

STREAM = 7919  # the distillation images' random stream, apart from the seed's other draws


@flax.struct.dataclass
class DeviceSplit:
    """A labelled image split held on the device(s).

    Attributes:
      images: `[N, H, W, C]` uint8 (or float32, already normalised).
      labels: `[N]` int32.
    """

    images: jax.Array
    labels: jax.Array

    @property
    def size(self) -> int:
        return int(self.images.shape[0])


def place(dataset, mesh=None, pad_to: int = 1) -> DeviceSplit:
    """Copies an in-memory `data.dataset.Dataset` to the device(s), replicated.

    Args:
      dataset: images `[N, H, W, C]` uint8 and labels `[N]`.
      mesh: the mesh to replicate over (None: the default device).
      pad_to: append zero images (label -1) up to a multiple of this (evaluation batches).
    """
    images = np.asarray(dataset.images)
    images = images if images.dtype in (np.uint8, np.float32) else images.astype(np.float32)
    labels = np.asarray(dataset.labels, np.int32)
    extra = -len(images) % pad_to
    if extra:
        images = np.concatenate([images, np.zeros((extra, *images.shape[1:]), images.dtype)])
        labels = np.concatenate([labels, np.full(extra, -1, np.int32)])
    split = DeviceSplit(images, labels)
    return sharding.replicate(split, mesh) if mesh is not None else jax.device_put(split)


def fits(dataset, fraction: float = 0.25, unknown_limit: int = 2 << 30) -> bool:
    """Whether a split should live on the device: its bytes under `fraction` of the
    device's free memory (or `unknown_limit` bytes when the backend does not say)."""
    need = int(np.asarray(dataset.images).nbytes)
    stats = jax.local_devices()[0].memory_stats() or {}
    if 'bytes_limit' in stats:
        free = stats['bytes_limit'] - stats.get('bytes_in_use', 0)
        return need <= fraction * free
    return need <= unknown_limit


def batch_indices(key, step, num_examples: int, batch_size: int):
    """Indices `[batch_size]` int32 of global step `step` (epochs of shuffled batches)."""
    steps_per_epoch = num_examples // batch_size
    epoch = step // steps_per_epoch
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
    start = (step % steps_per_epoch) * batch_size
    return lax.dynamic_slice_in_dim(perm, start, batch_size).astype(jnp.int32)


def crop_flip(key, images, pad: int):
    """Random crop of the zero-padded images plus random horizontal flip.

    Args:
      key: PRNG key.
      images: `[B, H, W, C]` (any dtype).
      pad: zero padding on every side before cropping back to `[H, W]`.

    Returns:
      `[B, H, W, C]`, same dtype.
    """
    b, h, w, c = images.shape
    k_offsets, k_flip = jax.random.split(key)
    offsets = jax.random.randint(k_offsets, (b, 2), 0, 2 * pad + 1)  # [B, 2] (row, column)
    flip = jax.random.bernoulli(k_flip, 0.5, (b,))  # [B]
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # [B, H+2p, W+2p, C]

    def one(image, offset, mirrored):
        crop = lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))  # [H, W, C]
        return jnp.where(mirrored, crop[:, ::-1], crop)

    return jax.vmap(one)(padded, offsets, flip)


def normalise(images, mean, std):
    """uint8 `[..., C]` -> float32 `(x / 255 - mean) / std` per channel (float images are
    taken as already normalised)."""
    if images.dtype != jnp.uint8:
        return images.astype(jnp.float32)
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (images.astype(jnp.float32) * (1 / 255) - mean) / std


def train_images(
    split: DeviceSplit, key, step, *, batch_size: int, augment: str, pad: int, mean, std
):
    """The normalised, augmented training images of step `step` (jittable; step traced).

    Args:
      split: the training split on the device.
      key: the data key of this run (and cycle).
      step: int32 scalar, the step within the phase (0-based).
      batch_size: images per step (the global batch).
      augment: 'crop_flip' or 'none'.
      pad: crop padding.
      mean, std: per-channel normalisation (static tuples).

    Returns:
      `[batch_size, H, W, C]` float32.
    """
    if augment not in ('crop_flip', 'none'):
        raise ValueError(f"device augmentation is 'crop_flip' or 'none', not {augment!r}")
    idx = batch_indices(key, step, split.size, batch_size)
    images = split.images[idx]  # [B, H, W, C] uint8
    if augment == 'crop_flip':
        images = crop_flip(jax.random.fold_in(key, 1_000_003 + step), images, pad)
    return normalise(images, mean, std)


@functools.partial(jax.jit, static_argnames=('model', 'batch_size', 'mean', 'std', 'mesh'))
def count_correct(model, variables, split: DeviceSplit, *, batch_size: int, mean, std, mesh=None):
    """(correct, counted) over a split padded to a multiple of `batch_size` (labels -1 are
    padding), in one dispatch: a `lax.map` over the batches, each split over the mesh."""
    n = split.size
    starts = jnp.arange(0, n, batch_size)

    def batch(start):
        x = sharding.constrain_rows(lax.dynamic_slice_in_dim(split.images, start, batch_size), mesh)
        y = sharding.constrain_rows(lax.dynamic_slice_in_dim(split.labels, start, batch_size), mesh)
        logits = model.apply(variables, normalise(x, mean, std), train=False)
        valid = y >= 0
        hits = (jnp.argmax(logits, -1) == y) & valid
        return jnp.sum(hits.astype(jnp.int32)), jnp.sum(valid.astype(jnp.int32))

    hits, counts = lax.map(batch, starts)
    return jnp.sum(hits), jnp.sum(counts)


def top1(model, variables, split: DeviceSplit, *, batch_size: int, mean, std, mesh=None) -> float:
    """Top-1 in percent of `model` on a split placed with `place(..., pad_to=batch_size)`."""
    hits, count = count_correct(
        model, variables, split, batch_size=batch_size, mean=tuple(mean), std=tuple(std), mesh=mesh
    )
    return 100.0 * int(hits) / max(int(count), 1)


@dataclasses.dataclass(frozen=True)
class DeviceBatches:
    """The distillation images of a run, drawn on the device (`train_images`' settings).

    Attributes:
      split: the training split on the device(s).
      batch_size: images per step.
      augment: 'crop_flip' or 'none'.
      pad: crop padding.
      mean, std: per-channel normalisation.
      seed: the run's seed (the key of cycle c is `fold_in(fold_in(key(seed), STREAM), c)`).
    """

    split: DeviceSplit
    batch_size: int
    augment: str
    pad: int
    mean: tuple
    std: tuple
    seed: int

    def key(self, cycle: int):
        stream = jax.random.fold_in(jax.random.key(self.seed), STREAM)
        return jax.random.fold_in(stream, cycle)

    @property
    def settings(self) -> dict:
        """The static keyword arguments of `train_images`."""
        return {
            'batch_size': self.batch_size,
            'augment': self.augment,
            'pad': self.pad,
            'mean': tuple(self.mean),
            'std': tuple(self.std),
        }

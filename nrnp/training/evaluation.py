"""Top-1 accuracy of a target network, original or rebuilt, on a fixed set of images.

images, labels = batching.normalise(test.images, mean, std), test.labels
acc = top1(model, variables, images, labels, batch_size=500)   # percent
acc = top1_batches(model, variables, batching.eval_batches(test, 500, mean, std))  # streamed
same = agreement(model, rebuilt, batches, predictions(model, original, batches))  # label-free
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from nrnp import signals
from nrnp.training import sharding


@functools.partial(jax.jit, static_argnums=0)
def _correct(model, variables, images, labels, mask):
    logits = model.apply(variables, images, train=False)
    hits = (jnp.argmax(logits, axis=-1) == labels) & mask
    return jnp.sum(hits.astype(jnp.int32)), jnp.sum(mask.astype(jnp.int32))


def top1_batches(model, variables, batches: Iterable, mesh=None) -> float:
    """Top-1 accuracy in percent over `(images, labels, mask)` batches (`batching.eval_batches`).

    Args:
      model: a Linen classifier applied as `model.apply(variables, x, train=False)`.
      variables: {'params': ..., 'batch_stats': ...}.
      batches: this process's rows of each global batch: images [b, H, W, C] float32
        (normalised), labels [b] int, mask [b] bool (False on padding rows). Every batch
        has the same shape (one compilation).
      mesh: optional mesh: each global batch is assembled from all processes' rows and
        split over its 'data' axis (the global batch must divide by that axis).

    Returns:
      Percent of correctly classified unmasked images, over all processes.
    """
    correct = jnp.zeros([], jnp.int32)  # summed on device: one host read at the end
    total = jnp.zeros([], jnp.int32)
    for x, y, mask in batches:
        y = np.asarray(y, np.int32)
        if mesh is not None:
            x, y, mask = (sharding.global_batch(a, mesh) for a in (x, y, mask))
        hits, count = _correct(model, variables, x, y, mask)
        # One batch ahead at most, so a stop request is seen between batches (`signals`).
        total.block_until_ready()
        signals.check()
        correct, total = correct + hits, total + count
    total = int(total)
    if total == 0:
        raise ValueError('top1 needs at least one image')
    return 100.0 * int(correct) / total


def array_batches(images: np.ndarray, labels: np.ndarray, batch_size: int = 500, mesh=None):
    """In-memory images as `top1_batches`' fixed-shape `(images, labels, mask)` batches.

    Every process holds all images and yields its rows of each global batch.

    Args:
      images: `[N, H, W, C]` float32, already normalised.
      labels: `[N]` int.
      batch_size: images per forward pass; the last batch is padded (one compilation).
        With a mesh it is rounded up to a multiple of the device count.
      mesh: optional mesh (the batch is rounded to divide over its 'data' axis).

    Yields:
      (images [b, H, W, C], labels [b], mask [b] bool), b = batch_size / processes.
    """
    n = int(images.shape[0])
    if n == 0:
        raise ValueError('top1 needs at least one image')
    batch_size = min(batch_size, n)
    if mesh is not None:
        batch_size = round_batch(batch_size, mesh)
    rows = slice(None)
    if mesh is not None and jax.process_count() > 1:  # each process feeds its rows
        local = batch_size // jax.process_count()
        rows = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
    for start in range(0, n, batch_size):
        x = images[start : start + batch_size]
        y = labels[start : start + batch_size]
        valid = x.shape[0]
        if valid < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - valid,) + x.shape[1:], x.dtype)])
            y = np.concatenate([y, np.zeros(batch_size - valid, y.dtype)])
        mask = np.arange(batch_size) < valid
        yield x[rows], y[rows], mask[rows]


def top1(
    model, variables, images: np.ndarray, labels: np.ndarray, batch_size: int = 500, mesh=None
) -> float:
    """Top-1 accuracy in percent of in-memory images (every process holding all of them).

    Args:
      model: a Linen classifier applied as `model.apply(variables, x, train=False)`.
      variables: {'params': ..., 'batch_stats': ...}.
      images: `[N, H, W, C]` float32, already normalised.
      labels: `[N]` int.
      batch_size: images per forward pass (see `array_batches`).
      mesh: optional mesh: batches are split over its 'data' axis.

    Returns:
      Percent of correctly classified images.
    """
    batches = array_batches(images, labels, batch_size, mesh)
    return top1_batches(model, variables, batches, mesh)


@functools.partial(jax.jit, static_argnums=0)
def _predict(model, variables, images):
    return jnp.argmax(model.apply(variables, images, train=False), axis=-1).astype(jnp.int32)


def predictions(model, variables, batches: list) -> list[np.ndarray]:
    """The top-1 class of every image of `batches` (`[b, H, W, C]` float32, normalised)."""
    return [np.asarray(_predict(model, variables, x)) for x in batches]


def agreement(model, variables, batches: list, classes: list, mesh=None) -> float:
    """Percent of the images of `batches` whose top-1 class is `classes`' (`predictions`
    of another network on the same batches): a label-free score."""
    rows = ((x, y, np.ones(len(x), bool)) for x, y in zip(batches, classes, strict=True))
    return top1_batches(model, variables, rows, mesh)


def round_batch(batch_size: int, mesh) -> int:
    """batch_size rounded up to a multiple of the mesh's 'data' axis and the process count."""
    m = math.lcm(mesh.shape[sharding.DATA], jax.process_count())
    return -(-batch_size // m) * m

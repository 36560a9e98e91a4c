"""Top-1 accuracy of a target network, original or rebuilt, on a fixed set of images.

images, labels = data.normalise(test.images, mean, std), test.labels
acc = top1(model, variables, images, labels, batch_size=500)   # percent
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nrnp import sharding


@functools.partial(jax.jit, static_argnums=0)
def _correct(model, variables, images, labels, mask):
    logits = model.apply(variables, images, train=False)
    hits = (jnp.argmax(logits, axis=-1) == labels) & mask
    return jnp.sum(hits.astype(jnp.int32))


def top1(
    model, variables, images: np.ndarray, labels: np.ndarray, batch_size: int = 500, mesh=None
) -> float:
    """Top-1 accuracy in percent.

    Args:
      model: a Linen classifier applied as `model.apply(variables, x, train=False)`.
      variables: {'params': ..., 'batch_stats': ...}.
      images: `[N, H, W, C]` float32, already normalised.
      labels: `[N]` int.
      batch_size: images per forward pass; the last batch is padded (one compilation).
        With a mesh it is rounded up to a multiple of the device count.
      mesh: optional mesh: batches are split over its 'data' axis.

    Returns:
      Percent of correctly classified images.
    """
    n = int(images.shape[0])
    if n == 0:
        raise ValueError('top1 needs at least one image')
    batch_size = min(batch_size, n)
    if mesh is not None:
        d = mesh.shape[sharding.DATA]
        batch_size = -(-batch_size // d) * d
    correct = jnp.zeros([], jnp.int32)  # summed on device: one host read at the end
    for start in range(0, n, batch_size):
        x = images[start : start + batch_size]
        y = labels[start : start + batch_size]
        valid = x.shape[0]
        if valid < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - valid,) + x.shape[1:], x.dtype)])
            y = np.concatenate([y, np.zeros(batch_size - valid, y.dtype)])
        mask = np.arange(batch_size) < valid
        y = y.astype(np.int32)
        if mesh is not None and jax.process_count() == 1:
            x, y, mask = (sharding.global_batch(a, mesh) for a in (x, y, mask))
        correct = correct + _correct(model, variables, x, y, mask)
    return 100.0 * int(correct) / n

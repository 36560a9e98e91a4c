"""Top-1 accuracy of an artefact's rebuilt network on labelled images: `Compressed.evaluate`.

  compressed = nrnp.load('r20.nrnp')
  top1 = compressed.evaluate(model, test.images, test.labels)   # percent, the run's mean/std
  top1 = evaluate(compressed, model, images, labels, mean=(0.5,), std=(0.25,))

One forward pass per batch in eval mode (`model.apply(variables, x, train=False)`), the last
batch padded and masked so a single program is compiled; uint8 images are normalised per
batch (`data.batching.normalise`), so no float copy of the whole set is made.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nrnp.data import batching


@functools.partial(jax.jit, static_argnums=0)
def _hits(model, variables, images, labels, mask):
    logits = model.apply(variables, images, train=False)
    return jnp.sum((jnp.argmax(logits, axis=-1) == labels) & mask)


def top1(model, variables, images, labels, mean, std, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent of `model` with `variables` on in-memory images.

    Args:
      model: a Linen classifier applied as `model.apply(variables, x, train=False)`.
      variables: `{'params', 'batch_stats', ...}`.
      images: `[N, H, W, C]` uint8 (normalised as (x / 255 - mean) / std) or float
        (taken as already normalised).
      labels: `[N]` int.
      mean, std: per-channel normalisation (length C or 1).
      batch_size: images per forward pass.

    Raises:
      ValueError: no images, or images and labels of different lengths.
    """
    images, labels = np.asarray(images), np.asarray(labels, np.int32)
    n = images.shape[0]
    if images.ndim != 4 or n == 0 or labels.shape != (n,):
        raise ValueError(
            f'evaluate needs images [N, H, W, C] and labels [N], N > 0; got images '
            f'{images.shape} and labels {labels.shape}'
        )
    batch_size = min(batch_size, n)
    correct = jnp.zeros([], jnp.int32)  # summed on the device: one read at the end
    for start in range(0, n, batch_size):
        x = batching.normalise(images[start : start + batch_size], mean, std)  # [b, H, W, C]
        y = labels[start : start + batch_size]
        valid = x.shape[0]
        if valid < batch_size:  # the last batch, padded: one compiled program
            x = np.concatenate([x, np.zeros((batch_size - valid, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros(batch_size - valid, y.dtype)])
        correct += _hits(model, variables, x, y, np.arange(batch_size) < valid)
    return 100.0 * int(correct) / n


def evaluate(compressed, model, images, labels, batch_size=500, mean=None, std=None) -> float:
    """Top-1 accuracy in percent of the network `compressed` rebuilds (`Compressed.evaluate`).

    Args:
      compressed: an `artifact.compressed.Compressed` (made by `nrnp.compress` or read by
        `nrnp.load`).
      model: the network's Linen module (the one compressed), applied as
        `model.apply(variables, x, train=False)`.
      images: `[N, H, W, C]` uint8, or float taken as already normalised.
      labels: `[N]` int.
      batch_size: images per forward pass.
      mean, std: the normalisation of uint8 images; None takes the run's (`data.mean`,
        `data.std` of the artefact's config), as the run measured its top-1.

    Raises:
      ValueError: no mean/std given and none in the artefact's config; bad shapes.
    """
    data = compressed.config.get('data', {})
    mean = data.get('mean') if mean is None else mean
    std = data.get('std') if std is None else std
    if mean is None or std is None:
        raise ValueError(
            "the artefact's config holds no data.mean/data.std: pass mean= and std=, or "
            'float images already normalised'
        )
    variables = compressed.reconstruct()
    variables = {'params': variables} if compressed.bare else variables
    return top1(model, variables, images, labels, tuple(mean), tuple(std), batch_size)

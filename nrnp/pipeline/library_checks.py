"""The library's checks: what a caller passes to `nrnp.compress`, checked and adapted before
any training.

  variables, bare, frozen = split_variables(variables)      # {'params', ...}; input kind
  check_leaves(variables)                                   # every leaf a numeric array
  first, batches = batch_source(data)                       # every batch [B, H, W, C] alike
  check_model(model, variables, first)                      # applies as documented, logits
  identity = inputs_identity(variables, data, test_data)    # for the workdir fingerprint

Every refusal is an `errors.BadInput` in library terms (keyword names), raised before
the kernel table is built, so a wrong argument never costs a training run.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from nrnp import errors
from nrnp.nets import trees
from nrnp.pipeline import pixels


def split_variables(variables) -> tuple[dict, bool, bool]:
    """({'params', ...} as nested plain dicts, bare params given?, a FrozenDict given?)."""
    if not isinstance(variables, Mapping):
        what = f'{type(variables).__name__} {variables!r}'[:80]
        hint = ''
        if isinstance(variables, str):
            hint = (
                '; to compress a checkpoint file, load it first: '
                'variables = nrnp.nets.loading.load_target(path, model, input_shape)'
            )
        raise errors.BadInput(
            f"variables must be a dict of arrays ({{'params': ..., 'batch_stats': ...}} or a "
            f'bare params tree), got {what}{hint}'
        )
    frozen = type(variables).__name__ == 'FrozenDict'

    def plain(tree):
        return {k: plain(v) if isinstance(v, Mapping) else v for k, v in tree.items()}

    tree = plain(variables)
    if 'params' in tree:
        return tree, False, frozen
    return {'params': tree}, True, frozen


def check_leaves(variables: dict) -> None:
    """Raises errors.BadInput naming the first leaf that is not a numeric array."""

    def walk(tree, path):
        for key, value in tree.items():
            here = f'{path}/{key}' if path else str(key)
            if isinstance(value, Mapping):
                walk(value, here)
                continue
            dtype = getattr(value, 'dtype', None)
            numeric = dtype is not None and hasattr(value, 'shape')
            numeric = numeric and any(jnp.issubdtype(dtype, t) for t in (jnp.number, jnp.bool_))
            if not numeric:  # (jnp.number covers bfloat16, which numpy calls kind 'V')
                what = f'{type(value).__name__}' + (
                    f' of dtype {dtype}' if dtype is not None else ''
                )
                raise errors.BadInput(
                    f'variables leaf {here} is a {what}, not a numeric array: variables must be '
                    'nested dicts of numpy or JAX arrays (convert it, or leave it out)'
                )

    walk(variables, '')


def _images_of(item):
    return item[0] if isinstance(item, tuple | list) else item


def _as_batch(item):
    images = item[0] if isinstance(item, tuple | list) else item
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise errors.BadInput(
            f'data batches must be images [B, H, W, C] (or (images, labels) tuples), got an '
            f'array of shape {images.shape}'
        )
    return (images, np.asarray(item[1])) if isinstance(item, tuple | list) else images


def _cycle(source: Iterable) -> Iterator:
    while True:
        empty = True
        for item in source:
            empty = False
            yield _as_batch(item)
        if empty:
            raise errors.BadInput('data yielded no batches on a second pass: pass a list')


def batch_source(data: Iterable):
    """(first images batch [B, H, W, C], `(start_step, cycle) -> iterator` of batches).

    Batches are used as given: already normalised and augmented by the caller, not
    re-batched (`distill.batch_size` does not apply), cycled in order (batch `s` of a
    phase is `data[s % len(data)]`), so a resumed run replays the same batches.

    Raises:
      errors.BadInput: `data` is a one-pass iterator (a generator), empty, not images, or
        holds batches of different shapes (naming the first such batch).
    """
    try:
        is_iterator = iter(data) is data
    except TypeError:
        raise errors.BadInput(
            f'data must be a list (or another re-iterable) of image batches, got '
            f'{type(data).__name__}'
        ) from None
    if is_iterator:
        raise errors.BadInput(
            'data is a one-pass iterator (a generator?): distillation cycles through the '
            'batches and a resumed run replays them, so pass a list or another re-iterable '
            '(e.g. list(batches))'
        )
    first = next(iter(data), None)
    if first is None:
        raise errors.BadInput('data is empty: give at least one batch, or data=None')
    first = _as_batch(first)
    first = first[0] if isinstance(first, tuple) else first
    for index, item in enumerate(data):  # shapes only: a bad batch fails now, not mid-run
        shape = tuple(np.shape(_images_of(item)))
        if shape != first.shape:
            raise errors.BadInput(
                f'data batch {index} has shape {shape} but batch 0 has {first.shape}: every '
                'batch must be images [B, H, W, C] of one shape (drop or pad a short last batch)'
            )

    def batches(start_step: int, cycle: int):
        del cycle  # every distillation phase starts at the first batch
        return itertools.islice(_cycle(data), start_step, None)

    return first, batches


def check_model(model, variables: dict, images: np.ndarray, what: str = 'data batch 0') -> None:
    """Applies `model` to a few images as nrnp will; refuses what cannot be distilled.

    Raises:
      errors.BadInput: the model cannot be called as `model.apply(variables, x,
        train=False)`, not on images of this shape (naming `what` and the shape), or it
        returns probabilities (rows >= 0 summing to 1), not logits.
    """
    x = jnp.asarray(images[:8], jnp.float32)
    try:
        out = model.apply(variables, x, train=False)
    except TypeError as e:
        raise errors.BadInput(
            f'model.apply(variables, x, train=False) failed ({e}); nrnp applies the model '
            'that way: give the module a `train` argument (BatchNorm uses its running '
            'statistics when train=False)'
        ) from None
    except Exception as e:  # noqa: BLE001 (flax's ScopeParamShapeError, XLA shape errors)
        raise errors.BadInput(
            f'the model cannot be applied to {what} of shape {tuple(images.shape)} '
            f'({type(e).__name__}: {pixels.first_line(e, 300)}); give images [B, H, W, C] '
            'of the size and channels the model was built for'
        ) from None
    out = np.asarray(out, np.float32)
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise errors.BadInput(
            f'the model maps {x.shape[0]} images to an output of shape {out.shape}; '
            'nrnp needs logits [batch, classes]'
        )
    if (out >= 0).all() and np.allclose(out.sum(-1), 1.0, atol=1e-3):
        raise errors.BadInput(
            'the model returns probabilities (every row is >= 0 and sums to 1), but '
            'distillation compares logits: return the output before the softmax'
        )


def inputs_identity(variables: dict, data, test_data) -> dict:
    """Hashes of the caller's arrays, for the workdir fingerprint."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    out = {'variables': digest.hexdigest()}
    if hasattr(data, 'images') and hasattr(data, 'labels'):  # an nrnp Dataset
        data = (data.images, data.labels)
    if isinstance(data, tuple) and len(data) == 2 and np.ndim(data[1]) == 1:  # arrays
        arrays = [np.ascontiguousarray(data[0]), np.ascontiguousarray(data[1])]
        out['data'] = hashlib.sha256(b''.join(a.tobytes() for a in arrays)).hexdigest()
    elif data is not None:
        first = _as_batch(next(iter(data)))
        first = first[0] if isinstance(first, tuple) else first
        count = len(data) if hasattr(data, '__len__') else '?'
        out['data'] = f'{count} batches, first {hashlib.sha256(first.tobytes()).hexdigest()}'
    if test_data is not None:
        arrays = [np.ascontiguousarray(test_data[0]), np.ascontiguousarray(test_data[1])]
        out['test_data'] = hashlib.sha256(b''.join(a.tobytes() for a in arrays)).hexdigest()
    return out


def guess_input_shape(model, variables: dict, log, size: int = 32) -> tuple[int, ...] | None:
    """`(1, size, size, C)` with C the first conv kernel's input channels, when the model
    accepts it (logged); None (logged) when there is no conv or the model refuses it."""
    kernels = [v for v in trees.flatten_variables(variables['params']).values() if v.ndim == 4]
    if not kernels:
        return None
    shape = (1, size, size, int(kernels[0].shape[2]))
    try:
        jax.eval_shape(lambda x: model.apply(variables, x, train=False), jnp.zeros(shape))
    except Exception as e:  # noqa: BLE001  (any refusal: the guess was wrong)
        log(
            f'note: no input shape for data-free BatchNorm re-estimation ({shape}: {e}); '
            'pass input_shape=(H, W, C)'
        )
        return None
    log(
        f'data-free BatchNorm re-estimation on {shape[1:]} inputs (input_shape=(H, W, C) '
        'chooses another)'
    )
    return shape

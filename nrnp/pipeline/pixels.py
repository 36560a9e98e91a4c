"""The library's images checked as the command line's are, before any work: finite, not
blank, normalised, and of one size that the model takes.

  check_images(images, 'data')                # [N, H, W, C] arrays (uint8 or normalised floats)
  check_batches(batches, 'data')              # a list of [B, H, W, C] batches (or tuples)
  check_sizes({'data': (32, 32, 3), 'test_data': (32, 32, 3), 'input_shape': (32, 32, 3)})
  check_input_shape(model, variables, (1, 32, 32, 3))

The command line reads images as uint8 and normalises them itself; the library takes
floats as already normalised, so floats that are not (pixels of 0-255, whole numbers, or
far outside [-10, 10]) are refused, as are images that are all zeros and non-finite
pixels (naming the batch and image). Every refusal is an `errors.BadInput`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from nrnp import errors

LIMIT = 10.0  # normalised pixels lie well within [-LIMIT, LIMIT]
_CHUNK = 4096  # images scanned at a time (bounds the temporary arrays)
_FIX = (
    'pass uint8 images (nrnp normalises them with data__mean and data__std) or floats '
    'normalised as the model was trained'
)


@dataclasses.dataclass
class _Seen:
    """What the scan found over every image of one argument."""

    low: float = np.inf
    high: float = -np.inf
    floats: bool = False
    whole: bool = True  # every float pixel a whole number
    blank: bool = True  # every pixel zero
    count: int = 0


def _scan(images, seen: _Seen, where: str) -> None:
    """Adds `images` [n, ...] to `seen`; `where(i)` names image i in a refusal."""
    x = np.asarray(images)
    if x.size == 0:
        return
    if x.dtype.kind == 'f':
        finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)  # [n]
        if not finite.all():
            raise errors.BadInput(
                f'{where(int(np.argmin(finite)))} holds NaN or infinite pixels: fix or drop it'
            )
        seen.floats = True
        seen.whole = seen.whole and bool(np.all(x == np.round(x)))
    seen.low, seen.high = min(seen.low, float(x.min())), max(seen.high, float(x.max()))
    seen.blank = seen.blank and not x.any()
    seen.count += len(x)


def _judge(seen: _Seen, name: str) -> None:
    if seen.count and seen.blank:
        raise errors.BadInput(
            f'{name} is blank: all its {seen.count} images are zeros; pass the real images'
        )
    if not seen.floats:
        return
    if seen.whole and seen.high > 1:
        raise errors.BadInput(
            f'{name} holds float images of whole numbers from {seen.low:g} to {seen.high:g}: '
            f'un-normalised pixels, taken as normalised; {_FIX}'
        )
    if seen.low < -LIMIT or seen.high > LIMIT:
        raise errors.BadInput(
            f'{name} holds float images from {seen.low:.4g} to {seen.high:.4g}: not normalised '
            f'(normalised pixels lie within about [-{LIMIT:g}, {LIMIT:g}]); {_FIX}'
        )


def check_images(images: np.ndarray, name: str) -> None:
    """Refuses un-normalised, blank or non-finite `images` [N, H, W, C] (argument `name`).

    Raises:
      errors.BadInput: naming the problem (and the first non-finite image's index).
    """
    seen = _Seen()
    for start in range(0, len(images), _CHUNK):
        _scan(images[start : start + _CHUNK], seen, lambda i, s=start: f'{name} image {s + i}')
    _judge(seen, name)


def check_batches(batches, name: str = 'data') -> None:
    """The same over a list of batches `[B, H, W, C]` or `(images, labels)` tuples."""
    seen = _Seen()
    for b, item in enumerate(batches):
        images = item[0] if isinstance(item, tuple | list) else item
        _scan(images, seen, lambda i, b=b: f'{name} batch {b} image {i}')
    _judge(seen, name)


def check_sizes(shapes: dict) -> None:
    """Refuses image shapes `(H, W, C)` that differ between the arguments that give them.

    Args:
      shapes: {argument name: (H, W, C) or None (not given)}.
    """
    given = {name: tuple(shape) for name, shape in shapes.items() if shape is not None}
    if len(set(given.values())) > 1:
        listed = ', '.join(f'{name} {shape}' for name, shape in given.items())
        raise errors.BadInput(
            f'the images differ in size (H, W, C): {listed}; give images of one size, the '
            "model's input"
        )


def first_line(e: BaseException, limit: int) -> str:
    """The first line of an exception's message (at most `limit` characters), or its type."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


def check_input_shape(model, variables: dict, input_shape: tuple[int, ...]) -> None:
    """Refuses an `input_shape` `(1, H, W, C)` the model cannot be applied to (traced only)."""
    try:
        x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
        jax.eval_shape(lambda x: model.apply(variables, x, train=False), x)
    except Exception as e:  # noqa: BLE001 (flax's ScopeParamShapeError, XLA shape errors)
        raise errors.BadInput(
            f'input_shape={tuple(input_shape[1:])} does not fit the model '
            f'({type(e).__name__}: {first_line(e, 200)}); give (H, W, C) of the images the '
            'model was built for'
        ) from None

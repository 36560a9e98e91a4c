"""The library's data as users hold it (image arrays, nrnp Datasets, or ready batches), as
the run's `description.Data`.

  data = library_data.data(config, data, test_data, model, variables, mesh, input_shape, log)
  data.train_batches, data.device_batches, data.calibration_images, data.top1, data.input_shape

`data=(images, labels)` (arrays) or a `data.dataset.Dataset` is used exactly as the CLI uses
its training split: seeded, shuffled batches of `distill.batch_size`, augmented with
`data.augment` and normalised with `data.mean`/`data.std`, drawn on the device when the
images fit (`data.on_device`), and a seeded subset of them for BatchNorm re-estimation.
uint8 images are normalised as the CLI does; float images are taken as already normalised
(crops pad them with zeros). A list of batches is used as given (`library_checks.batch_source`);
when its first images hold few of the model's classes (batches cut from a class-sorted
array), a warning says so.
"""

from __future__ import annotations

import jax
import numpy as np

from nrnp import errors
from nrnp.data import batching
from nrnp.data.dataset import Dataset
from nrnp.pipeline import calibration, cli_data, library_checks, pixels
from nrnp.pipeline.description import Data
from nrnp.training import evaluation


def held_data(data, name: str = 'data') -> Dataset | None:
    """`data` as an in-memory `Dataset` when it is one or `(images [N, H, W, C], labels [N])`
    arrays; None for any other form (a list of batches). `name` is the argument's name."""
    if isinstance(data, Dataset):
        return data
    if not (isinstance(data, tuple) and len(data) == 2):
        return None
    images, labels = data
    if not (hasattr(images, 'shape') and hasattr(labels, 'shape')) or np.ndim(labels) != 1:
        return None  # e.g. a tuple of two image batches
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or len(images) != len(labels):
        raise errors.BadInput(
            f'{name} must be (images [N, H, W, C], labels [N]), got shapes '
            f'{images.shape} and {labels.shape}'
        )
    if images.dtype != np.uint8:
        images = images.astype(np.float32)  # already normalised
    whole = np.issubdtype(labels.dtype, np.integer) or (
        np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels))
    )
    if not whole or (len(labels) and labels.min() < 0):
        raise errors.BadInput(f'{name} labels must be whole numbers >= 0, got {labels[:5]}')
    classes = int(labels.max()) + 1 if len(labels) else 1
    return Dataset(images, labels.astype(np.int32), classes, tuple(map(str, range(classes))))


def normalised(config, images: np.ndarray) -> np.ndarray:
    """uint8 images normalised with the config's mean/std; float images as they are."""
    return batching.normalise(images, tuple(config.data.mean), tuple(config.data.std))


def data(config, data, test_data, model, variables: dict, mesh, input_shape, log) -> Data:
    """`nrnp.compress`'s `data`, `test_data` and `input_shape` as the run's `Data`.

    Raises:
      errors.BadInput: data or test data that nrnp cannot use (see the module docstring),
        or image sizes that disagree.
    """
    given = given_shape(input_shape)
    out = Data() if data is None else _training_data(config, data, model, variables, mesh, log)
    test_shape = None
    if test_data is not None:
        out.top1, test_shape, out.test_images = _test_data(
            config, test_data, model, variables, mesh, log
        )
    out.input_shape = _input_shape(
        model, variables, given, out.input_shape, test_shape, log, config
    )
    return out


def _training_data(config, data, model, variables: dict, mesh, log) -> Data:
    """The library's `data` as distillation batches and calibration images."""
    held = held_data(data)
    if held is None:
        first, batches = library_checks.batch_source(data)
        pixels.check_batches(data, 'data')
        library_checks.check_model(model, variables, first)
        warn_few_classes(data, model, variables, log)
        images = calibration.array_images(data)
        return Data(
            (1, *first.shape[1:]),
            train_batches=batches,
            calibration_images=images,
            heldout_images=calibration.array_images(data, tail=True),
        )
    if held.images.dtype != np.uint8 and config.data.augment == 'random_resized_crop':
        raise errors.BadInput(
            "float images cannot go through data__augment='random_resized_crop': pass uint8 "
            "images, or use 'crop_flip' or 'none'"
        )
    pixels.check_images(held.images, 'data')
    library_checks.check_model(model, variables, normalised(config, held.images[:8]))
    pool = calibration.without_heldout(config, held)
    batches, device = cli_data.distillation_images(config, pool, mesh)
    where = 'drawn on the device' if device else 'host pipeline'
    log(
        f'data: {len(held)} images, shuffled batches of {config.distill.batch_size} '
        f'(data__augment={config.data.augment!r}, {where})'
    )
    images = calibration.split_images(config, held)
    heldout = calibration.split_images(config, held, tail=True)
    return Data((1, *held.images.shape[1:]), None, 0, batches, device, images, heldout)


def warn_few_classes(data, model, variables: dict, log, limit: int = 2048) -> None:
    """Warns when the first `limit` images of a list of batches hold under half the model's
    classes, by their labels or else by the model's predictions (a class counts when it
    has at least a quarter of an even share, so stray mispredictions do not)."""
    found, seen, classes = [], 0, None
    for item in data:
        images = np.asarray(item[0] if isinstance(item, tuple | list) else item, np.float32)
        if isinstance(item, tuple | list) and len(item) > 1:
            found.append(np.asarray(item[1]).reshape(-1))
        else:
            found.append(np.argmax(np.asarray(model.apply(variables, images, train=False)), -1))
        if classes is None:
            out = jax.eval_shape(lambda x: model.apply(variables, x, train=False), images)
            classes = out.shape[-1]
        seen += len(images)
        if seen >= limit:
            break
    if not classes or not seen:
        return
    counts = np.bincount(np.concatenate(found).astype(np.int64), minlength=classes)
    held = int(np.sum(counts >= 0.25 * seen / classes))
    if held < classes / 2:
        log(
            f"warning: the first {seen} images of data hold {held} of the model's {classes} "
            'classes (batches cut from a class-sorted array?); pass data=(images, labels) and '
            'nrnp draws shuffled batches as the CLI does'
        )


def _test_data(config, test_data, model, variables: dict, mesh, log):
    """(`variables -> top-1 percent` on `test_data`, `(1, H, W, C)`, its image count)."""
    held = held_data(test_data, 'test_data')
    if held is None:
        raise errors.BadInput(
            'test_data must be (images [N, H, W, C], labels [N]) arrays or an nrnp Dataset'
        )
    pixels.check_images(held.images, 'test_data')
    images, labels = normalised(config, held.images), held.labels
    library_checks.check_model(model, variables, images, what='the test_data images')
    log(f'test data: {len(labels)} images')

    def top1(v):
        batches = evaluation.array_batches(images, labels, config.data.eval_batch_size, mesh)
        return evaluation.top1_batches(model, v, batches, mesh)

    return top1, (1, *images.shape[1:]), len(labels)


def given_shape(input_shape) -> tuple[int, ...] | None:
    """The caller's `input_shape` as `(1, H, W, C)` (None when not given).

    Raises:
      errors.BadInput: not 3 (or 4, with a batch of 1) positive integers.
    """
    if input_shape is None:
        return None
    shape = tuple(input_shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or not all(isinstance(n, int | np.integer) and n > 0 for n in shape):
        raise errors.BadInput(f'input_shape must be (H, W, C) of one image, got {input_shape!r}')
    return (1, *shape)


def _input_shape(model, variables: dict, given, train_shape, test_shape, log, config):
    """The run's `(1, H, W, C)`: from `data`, `test_data` and `input_shape`, which must
    agree; checked against the model when only `input_shape` gives it; guessed (logged)
    when none does and data-free re-estimation needs it; else None.

    Raises:
      errors.BadInput: the sizes differ, or the model cannot take `input_shape`.
    """
    shapes = {'data': train_shape, 'test_data': test_shape, 'input_shape': given}
    pixels.check_sizes({k: v[1:] for k, v in shapes.items() if v is not None})
    shape = train_shape or test_shape
    if shape is None and given is not None and model is not None:
        pixels.check_input_shape(model, variables, given)
    shape = shape or given
    if shape is None and model is not None and config.recalibrate.images:
        shape = library_checks.guess_input_shape(model, variables, log)
    return shape

"""The settings `nrnp.compress` runs with: `config=`, a recipe by name (`recipe=`), or,
without either, the recipe that matches the images; then checked against the images.

  config = settings(config, recipe, data, test_data, input_shape, log)   # before overrides
  check_images(config, data, test_data)                                  # after them

Without `config=` or `recipe=`, the images' `(H, W, C)` (from `data`, `test_data` or
`input_shape`) choose the data section: 8x8x1 the digits default's, 32x32x3 the CIFAR
normalisation of `c10_r20` (the rest stays the default's: its steps, predictor and
distillation settings); uint8 images of another shape are refused, since nrnp cannot know
their normalisation. Whatever the source, uint8 images (the ones nrnp normalises) must have
as many channels as `data.mean`/`data.std` and `data.channels` say, and the size of
`data.image_size`: a mismatch is refused before any work, naming the fields.
"""

from __future__ import annotations

import copy

import numpy as np

from nrnp import errors
from nrnp.configs import catalog
from nrnp.configs import default as defaults
from nrnp.data.dataset import Dataset

# The recipe whose data section images of a shape (H, W, C) take without config=/recipe=.
MATCHING = {(8, 8, 1): 'default', (32, 32, 3): 'c10_r20'}


def settings(config, recipe: str | None, data, test_data, input_shape, log):
    """A copy of the config the call names (`config=`, `recipe=`), or the one its images
    match (logged).

    Raises:
      errors.BadInput: both `config=` and `recipe=`; uint8 images of a shape no recipe
        matches, without either.
      errors.ConfigError: a recipe of no such name, a config that lacks fields.
    """
    if config is not None and recipe is not None:
        raise errors.BadInput('give config= or recipe=, not both')
    if recipe is not None:
        return catalog.recipe(recipe)
    if config is not None:
        catalog.check_complete(config, 'config=')
        return copy.deepcopy(config)
    config = defaults.get_config()
    normalised = normalised_images(data, test_data)
    shapes = [shape for _, shape in normalised] + _float_shapes(data, test_data)
    if not shapes and input_shape is not None:
        shapes = [tuple(input_shape)[-3:]]
    if not shapes:
        return config
    shape = tuple(int(n) for n in shapes[0])
    name = MATCHING.get(shape)
    if name is None:
        if normalised:
            what = 'x'.join(map(str, shape))
            raise errors.BadInput(
                f'no shipped recipe matches {what} uint8 images (the digits default takes '
                f'8x8x1, c10_r20 32x32x3), so nrnp cannot know their normalisation: pass '
                "recipe='NAME' or config= with data.mean/data.std for them (or pass images "
                'already normalised, as float32)'
            )
        return config
    if name != 'default':
        config.data = catalog.recipe(name).data
        log(
            f'settings: the data section of {name} for {shape[0]}x{shape[1]}x{shape[2]} images '
            f'(mean {tuple(config.data.mean)}, std {tuple(config.data.std)}, pad '
            f'{config.data.pad}); recipe= or config= chooses others'
        )
    return config


def check_images(config, data, test_data) -> None:
    """Refuses uint8 images that the config's normalisation does not fit.

    Raises:
      errors.BadInput: `data.mean`/`data.std` of another channel count than the images,
        `data.channels` or (unless `data.augment` is 'random_resized_crop', which crops to
        it) `data.image_size` other than theirs; the message names the fields.
    """
    for name, (height, width, channels) in normalised_images(data, test_data):
        mean, std = tuple(config.data.mean), tuple(config.data.std)
        fix = "pass recipe='NAME' or config= that matches the images, or set"
        if len(mean) != channels or len(std) != channels:
            raise errors.BadInput(
                f'{name} images have {channels} channels but data.mean {mean} and data.std '
                f'{std} normalise {len(mean)} and {len(std)}: {fix} data__mean and '
                f'data__std ({channels} values each)'
            )
        if config.data.channels != channels:
            raise errors.BadInput(
                f'{name} images have {channels} channels but data.channels is '
                f'{config.data.channels}: {fix} data__channels={channels}'
            )
        size = config.data.image_size
        if config.data.augment != 'random_resized_crop' and (height, width) != (size, size):
            raise errors.BadInput(
                f'{name} images are {height}x{width} but data.image_size is {size}: {fix} '
                f'data__image_size={height}'
            )


def normalised_images(data, test_data) -> list[tuple[str, tuple[int, int, int]]]:
    """(argument name, (H, W, C)) of the uint8 image arrays that nrnp normalises."""
    out = []
    for name, given in (('data', data), ('test_data', test_data)):
        images = _held_images(given)
        if images is not None and images.dtype == np.uint8 and np.ndim(images) == 4:
            out.append((name, tuple(int(n) for n in np.shape(images)[1:])))
    return out


def _float_shapes(data, test_data) -> list[tuple[int, ...]]:
    """(H, W, C) of images nrnp takes as normalised (float arrays, a list of batches)."""
    out = []
    for given in (data, test_data):
        images = _held_images(given)
        if images is None and given is not None and isinstance(given, list | tuple) and given:
            first = given[0]
            images = first[0] if isinstance(first, tuple | list) else first
        if images is not None and np.ndim(images) == 4 and images.dtype != np.uint8:
            out.append(tuple(np.shape(images)[1:]))
    return out


def _held_images(given):
    """The images of a `Dataset` or of `(images, labels)` arrays; None for other forms."""
    if isinstance(given, Dataset):
        return given.images
    if isinstance(given, tuple) and len(given) == 2 and np.ndim(given[1]) == 1:
        if hasattr(given[0], 'shape') and hasattr(given[0], 'dtype'):
            return given[0]
    return None

"""nrnp.compress's settings: recipe= by name, the recipe the images match without config=
or recipe=, and normalisations that do not fit the images refused before any work."""

import numpy as np
import pytest

import nrnp
from nrnp import errors
from nrnp.configs import c10_r20, default
from nrnp.nets import models
from nrnp.pipeline import library


def _model_and_variables(channels):
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    return model, models.init_variables(model, (1, 8, 8, channels))


def _pixels(n, size, channels, seed=0):
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), np.uint8)
    return images, np.arange(n) % 10


def _config(model, variables, log=None, overrides=None, **kwargs):
    """The config `nrnp.compress(variables, model, **kwargs)` would run with (no training)."""
    args = dict(data=None, test_data=None, config=None, input_shape=None)
    args.update(kwargs)
    recipe = args.pop('recipe', None)
    description, _ = library.describe(
        variables,
        model,
        args['data'],
        args['test_data'],
        args['config'],
        args['input_shape'],
        log or (lambda message: None),
        dict(overrides or {}),
        recipe,
    )
    return description.config


def test_cifar_shaped_uint8_images_get_the_cifar_normalisation_not_the_digits_one():
    model, variables = _model_and_variables(3)
    logs = []
    config = _config(model, variables, logs.append, data=_pixels(16, 32, 3))
    cifar = c10_r20.get_config().data
    assert tuple(config.data.mean) == (0.485, 0.456, 0.406) == tuple(cifar.mean)
    assert tuple(config.data.std) == tuple(cifar.std) and config.data.pad == 4
    assert config.data.image_size == 32 and config.data.channels == 3
    assert config.reconstruct.steps == default.get_config().reconstruct.steps  # the default's
    assert any('the data section of c10_r20 for 32x32x3 images' in line for line in logs)
    # test_data alone tells the shape too
    config = _config(model, variables, test_data=_pixels(8, 32, 3))
    assert tuple(config.data.mean) == tuple(cifar.mean)


def test_digits_shaped_images_keep_the_digits_default():
    model, variables = _model_and_variables(1)
    config = _config(model, variables, data=_pixels(16, 8, 1))
    assert tuple(config.data.mean) == (0.5,) and config.data.pad == 1


def test_recipe_by_name_is_applied_under_the_overrides():
    model, variables = _model_and_variables(3)
    config = _config(
        model,
        variables,
        recipe='c10_r20:tiny',
        data=_pixels(16, 32, 3),
        overrides={'predictor__hidden': 12},
    )
    assert config.teacher.model == 'resnet20' and config.distill.steps == 4  # c10_r20:tiny
    assert config.predictor.hidden == 12 and tuple(config.data.mean) == (0.485, 0.456, 0.406)


def test_settings_that_do_not_fit_the_images_are_refused_naming_recipe_and_config():
    model3, variables3 = _model_and_variables(3)
    model1, variables1 = _model_and_variables(1)
    digits = default.get_config()
    cases = [  # (model, variables, arguments, message)
        (model3, variables3, dict(data=_pixels(8, 16, 3)), r'no shipped recipe matches 16x16x3'),
        (
            model3,
            variables3,
            dict(data=_pixels(8, 32, 3), config=digits),
            r'data images have 3 channels but data.mean \(0.5,\) .*recipe=.*config=',
        ),
        (
            model3,
            variables3,
            dict(test_data=_pixels(8, 32, 3), config=digits),
            r'test_data images have 3 channels',
        ),
        (
            model1,
            variables1,
            dict(data=_pixels(8, 16, 1), config=digits),
            r'data images are 16x16 but data.image_size is 8: .*data__image_size=16',
        ),
        (model1, variables1, dict(data=_pixels(8, 8, 1), recipe='c10_r20'), r'have 1 channels'),
        (model1, variables1, dict(config=digits, recipe='c10_r20'), 'config= or recipe=, not both'),
    ]
    for model, variables, kwargs, message in cases:
        with pytest.raises(errors.BadInput, match=message):
            nrnp.compress(variables, model, log=None, **kwargs)
    with pytest.raises(errors.ConfigError, match=r"recipe='c10_r21': .*recipes: default, c100"):
        nrnp.compress(variables1, model1, recipe='c10_r21', log=None)


def test_float_images_of_any_shape_are_taken_as_normalised():
    model, variables = _model_and_variables(3)
    images = np.random.default_rng(0).standard_normal((8, 16, 16, 3)).astype(np.float32)
    config = _config(model, variables, data=(images, np.arange(8) % 10))
    assert tuple(config.data.mean) == (0.5,)  # unused: the images are normalised already

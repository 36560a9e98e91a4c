"""The library's data as users hold it: arrays are drawn exactly as the CLI draws its split;
batches cut from a class-sorted array are warned about."""

import os

import jax
import numpy as np
import pytest

import nrnp
from nrnp import errors
from nrnp.configs import default
from nrnp.data import dataset
from nrnp.nets import loading
from nrnp.pipeline import job, library_data

pytestmark = pytest.mark.slow  # runs the CLI job and nrnp.compress end to end


@pytest.fixture(scope='module')
def cli_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('cli'))
    config = default.get_config('tiny')
    report = job.run(config, workdir, echo=lambda s: None)
    return config, workdir, report


def test_arrays_give_the_cli_run_bit_for_bit(cli_run):
    config, workdir, report = cli_run
    model = job.build_target(config)
    teacher = loading.load_variables(os.path.join(workdir, 'teacher'))
    train, test = dataset.load_digits('train'), dataset.load_digits('test')
    lines = []
    comp = nrnp.compress(
        teacher,
        model,
        data=(train.images, train.labels),  # uint8, class-sorted or not: nrnp shuffles
        test_data=(test.images, test.labels),
        config=config,
        log=lines.append,
    )
    cli = nrnp.load(os.path.join(workdir, 'compressed.nrnp'))
    jax.tree.map(np.testing.assert_array_equal, comp.predictor_params, cli.predictor_params)
    jax.tree.map(np.testing.assert_array_equal, comp.batch_stats, cli.batch_stats)
    assert comp.metrics['top1_reconstructed'] == report['top1_reconstructed']
    assert any('shuffled batches of 32' in line for line in lines)


def test_evaluate_gives_the_top1_the_run_measured(cli_run):
    config, workdir, report = cli_run
    model = job.build_target(config)
    test = dataset.load_digits('test')
    compressed = nrnp.load(os.path.join(workdir, 'compressed.nrnp'))
    assert compressed.evaluate(model, test.images, test.labels) == report['top1_reconstructed']


def test_a_class_sorted_list_of_batches_is_warned_about(cli_run):
    config, workdir, _ = cli_run
    model = job.build_target(config)
    teacher = loading.load_variables(os.path.join(workdir, 'teacher'))
    train = dataset.load_digits('train')
    order = np.argsort(train.labels, kind='stable')
    images, labels = library_data.normalised(config, train.images[order]), train.labels[order]
    cut = lambda x: [x[i : i + 64] for i in range(0, 512, 64)]  # the first 512: 4 classes
    for batches in (list(zip(cut(images), cut(labels))), cut(images)):  # labels or none
        lines = []
        library_data.warn_few_classes(batches, model, teacher, lines.append)
        assert len(lines) == 1 and "hold 4 of the model's 10 classes" in lines[0], lines
    mixed = np.random.default_rng(0).permutation(len(images))
    lines = []
    library_data.warn_few_classes(cut(images[mixed]), model, teacher, lines.append)
    assert lines == []  # the teacher sees every class in shuffled images


def test_held_data_forms_and_their_errors():
    images = np.zeros((6, 8, 8, 1), np.uint8)
    held = library_data.held_data((images, np.arange(6) % 3))
    assert isinstance(held, dataset.Dataset) and held.num_classes == 3
    assert held.images.dtype == np.uint8
    floats = library_data.held_data((images.astype(np.float64), np.zeros(6, np.int64)))
    assert floats.images.dtype == np.float32  # taken as normalised
    assert library_data.held_data([images, images]) is None  # a list of batches
    assert library_data.held_data((images, images)) is None  # a tuple of two batches
    with pytest.raises(errors.BadInput, match=r'data must be \(images'):
        library_data.held_data((images, np.zeros(5, np.int32)))
    assert library_data.held_data((images, np.ones(6, np.float32))).labels.dtype == np.int32
    with pytest.raises(errors.BadInput, match='labels must be whole numbers'):
        library_data.held_data((images, np.full(6, 0.5)))

"""BatchNorm re-estimation: exact pooling, the relative estimate, calibration inputs, the
artefact's statistics and the schedule's 'recalibrate' phases."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nrnp
from nrnp.configs import default
from nrnp.data import dataset
from nrnp.nets import batchnorm
from nrnp.pipeline import calibration
from nrnp.training import recalibration, schedule


class Net(nn.Module):
    """Conv-BN-ReLU twice (the second BN's input depends on the first's normalisation)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, features in enumerate((6, 8)):
            x = nn.Conv(features, (3, 3), name=f'conv{i}')(x)
            x = nn.BatchNorm(use_running_average=not train, name=f'bn{i}')(x)
            x = nn.relu(x)
        return nn.Dense(10, name='fc')(jnp.mean(x, (1, 2)))


class NoBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(8, (3, 3), name='conv')(x))
        return nn.Dense(10, name='fc')(jnp.mean(x, (1, 2)))


def _variables(model, seed=0):
    variables = model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 3)))
    rng = np.random.default_rng(seed)
    stats = jax.tree.map(lambda x: rng.uniform(0.5, 1.5, x.shape).astype(x.dtype), variables)
    return {'params': variables['params'], 'batch_stats': stats['batch_stats']}


def _images(n, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 8, 8, 3)).astype(np.float32)


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_pooling_over_batches_equals_one_pass_over_the_subset():
    model, variables, images = Net(), _variables(Net()), _images(32)
    batches = [images[i : i + 8] for i in range(0, 32, 8)]
    # eval-mode passes: every BatchNorm's input is independent of the batch split
    pooled = recalibration.pooled_moments(model, variables, batches, normalise=False)
    whole = batchnorm.batch_moments(model, variables, images, normalise=False)
    got, want = pooled.as_stats(), whole
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6)
    # train-mode passes: the first BatchNorm still pools exactly; later ones see inputs
    # normalised with each batch's own statistics, so they agree only closely
    pooled = recalibration.pooled_moments(model, variables, batches).as_stats()
    whole = batchnorm.batch_moments(model, variables, images)
    for key in ('mean', 'var'):
        np.testing.assert_allclose(pooled['bn0'][key], whole['bn0'][key], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(pooled['bn1']['var'], whole['bn1']['var'], rtol=0.2)
    assert not np.allclose(pooled['bn0']['var'], variables['batch_stats']['bn0']['var'])


def test_moments_are_the_population_statistics_of_each_batchnorm_input():
    model, variables, images = Net(), _variables(Net()), _images(4)
    moments = batchnorm.batch_moments(model, variables, images)
    kernel, bias = variables['params']['conv0']['kernel'], variables['params']['conv0']['bias']
    x = (
        jax.lax.conv_general_dilated(
            images, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
        )
        + bias
    )
    np.testing.assert_allclose(moments['bn0']['mean'], x.mean((0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(moments['bn0']['var'], x.var((0, 1, 2)), rtol=1e-5, atol=1e-6)


def test_relative_estimate_of_the_original_returns_its_stored_statistics():
    model, variables = Net(), _variables(Net())
    batches = [_images(8, seed) for seed in (1, 2)]
    reestimate = recalibration.Reestimation(model, variables, lambda: batches, 'relative')
    stats = reestimate(variables['params'])
    assert _leaves_equal(stats, variables['batch_stats'])
    # a changed network moves them; 'plain' returns its own pooled moments
    moved = jax.tree.map(lambda x: x * 1.1, variables['params'])
    assert not _leaves_equal(reestimate(moved), variables['batch_stats'])  # the original's kept
    plain = recalibration.Reestimation(model, variables, batches, 'plain')
    pooled = recalibration.pooled_moments(model, {**variables, 'params': moved}, batches)
    assert _leaves_equal(plain(moved), pooled.as_stats())


def test_relative_estimate_is_the_shift_between_rebuilt_and_original():
    stored = {
        'bn': {'mean': np.array([1.0, -2.0], np.float32), 'var': np.array([4.0, 0.5], np.float32)}
    }
    original = {
        'bn': {'mean': np.array([0.5, 0.0], np.float32), 'var': np.array([2.0, 1.0], np.float32)}
    }
    rebuilt = {
        'bn': {'mean': np.array([0.7, 0.1], np.float32), 'var': np.array([3.0, 0.25], np.float32)}
    }
    out = batchnorm.estimated_stats(stored, rebuilt, original, 'relative')
    np.testing.assert_allclose(out['bn']['mean'], [1.2, -1.9])
    np.testing.assert_allclose(out['bn']['var'], [4.0 * 1.5, 0.5 * 0.25], rtol=1e-4)


def test_relative_estimate_falls_back_to_plain_where_the_variance_moves_far():
    stored = {'bn': {'mean': np.full(3, 1.0, np.float32), 'var': np.full(3, 2.0, np.float32)}}
    original = {'bn': {'mean': np.zeros(3, np.float32), 'var': np.full(3, 1.0, np.float32)}}
    # variance ratios 3.9 (relative), 4.1 and 0.2 (beyond RELATIVE_RANGE 4: plain)
    rebuilt = {
        'bn': {'mean': np.full(3, 0.5, np.float32), 'var': np.array([3.9, 4.1, 0.2], np.float32)}
    }
    out = batchnorm.estimated_stats(stored, rebuilt, original, 'relative')
    np.testing.assert_allclose(out['bn']['mean'], [1.5, 0.5, 0.5])
    np.testing.assert_allclose(out['bn']['var'], [2.0 * 3.9, 4.1, 0.2], rtol=1e-4)


def test_noise_and_synthetic_images_are_seeded():
    a = recalibration.noise_images((4, 8, 8, 3), seed=3)
    assert np.array_equal(a, recalibration.noise_images((4, 8, 8, 3), seed=3))
    assert not np.array_equal(a, recalibration.noise_images((4, 8, 8, 3), seed=4))
    model, variables = Net(), _variables(Net())
    one = recalibration.synthetic_images(model, variables, (4, 8, 8, 3), seed=3, steps=20)
    two = recalibration.synthetic_images(model, variables, (4, 8, 8, 3), seed=3, steps=20)
    assert np.array_equal(one, two)
    loss = lambda x: float(recalibration._match_loss(model, variables, jnp.asarray(x)))
    assert loss(one) < 0.8 * loss(a)  # optimised towards the stored statistics


def test_schedule_places_recalibration_phases():
    c = default.get_config()
    c.reconstruct.round_hidden = (16, 8)
    c.reconstruct.steps, c.distill.steps = 10, 5
    kinds = lambda: [(p.kind, p.round) for p in schedule.build_schedule(c)]
    assert kinds()[-2:] == [('recalibrate', 2), ('distill', 1)]  # default: after the rounds
    c.recalibrate.when = 'both'
    assert kinds() == [
        ('reconstruct', 1),
        ('recalibrate', 1),
        ('reconstruct', 2),
        ('recalibrate', 2),
        ('distill', 1),
        ('recalibrate', 0),
    ]
    c.recalibrate.when = 'distill'
    assert [k for k, _ in kinds()] == ['reconstruct', 'reconstruct', 'distill', 'recalibrate']
    c.distill.steps = 0  # an int predictor is then fine-tuned through its rounding
    assert kinds()[-2:] == [('quantize', 1), ('recalibrate', -1)]
    c.predictor.quantize = 'none'
    assert kinds()[-1] == ('recalibrate', 2)  # after the last round when nothing is distilled
    c.recalibrate.images = 0
    assert [k for k, _ in kinds()] == ['reconstruct', 'reconstruct']
    c.recalibrate.images = 64
    assert 'recalibrate' not in [p.kind for p in schedule.build_schedule(c, batch_norm=False)]


def test_the_quantize_phase_runs_without_distillation_only():
    c = default.get_config()
    c.reconstruct.steps, c.distill.steps = 1000, 5
    c.recalibrate.when = 'both'
    phases = lambda: [(p.kind, p.steps, p.round) for p in schedule.build_schedule(c)]
    assert [k for k, _, _ in phases()] == ['reconstruct', 'recalibrate', 'distill', 'recalibrate']
    c.distill.steps = 0
    assert phases() == [
        ('reconstruct', 1000, 1),
        ('quantize', 100, 1),  # predictor.quantize_fraction 0.1 of the reconstruction steps
        ('recalibrate', 0, -1),
    ]
    assert schedule.build_schedule(c)[-1].label == 'recalibrate c1 after quantize'
    c.predictor.quantize_fraction = 0
    assert [k for k, _, _ in phases()] == ['reconstruct', 'recalibrate']
    c.predictor.quantize_fraction, c.predictor.quantize = 0.1, 'bf16'  # nothing to fine-tune
    assert [k for k, _, _ in phases()] == ['reconstruct', 'recalibrate']


def test_batch_plan_rounds_to_whole_batches():
    assert calibration.batch_plan(256, 256, None, None) == (1, 256)
    assert calibration.batch_plan(300, 128, None, None) == (2, 128)
    assert calibration.batch_plan(256, 100, 150, None) == (1, 100)  # only 150 available
    assert calibration.batch_plan(10, 256, None, None) == (1, 10)

    class Mesh:  # 'data' axis of 8 devices
        shape = {'data': 8}

    assert calibration.batch_plan(256, 100, None, Mesh()) == (2, 96)  # rounded down to 8s
    assert calibration.batch_plan(5, 256, None, Mesh()) == (1, 8)  # one multiple at least


FAST = dict(
    reconstruct__steps=5,
    reconstruct__batch_size=64,
    predictor__hidden=16,
    predictor__layers=3,
    encoding__levels=4,
    recalibrate__images=32,
    recalibrate__batch_size=16,
    distill__steps=0,
)


@pytest.mark.slow
def test_artefact_stores_the_reestimated_statistics_at_the_same_bytes():
    model, variables = Net(), _variables(Net())
    data = [_images(16, seed) for seed in range(3)]
    test = (_images(40, 9), np.arange(40) % 10)
    art = nrnp.compress(variables, model, data=data, test_data=test, log=None, **FAST)
    records = art.history
    kinds = [r['kind'] for r in records]
    assert kinds == ['init', 'reconstruct', 'recalibrate']
    recal = records[-1]
    assert recal['source'] == 'train' and recal['images'] == 32 and recal['mode'] == 'relative'
    assert recal['top1_before'] == records[1]['top1']
    # the statistics stored are the relative estimate for the stored predictor's rebuild
    rebuilt = art.reconstruct()
    want = recalibration.Reestimation(model, variables, data[:2])(rebuilt['params'])
    for x, y in zip(jax.tree.leaves(art.batch_stats), jax.tree.leaves(want)):
        np.testing.assert_allclose(x, y, rtol=2.0**-11, atol=1e-7)  # stored as float16
    half = jax.tree.map(lambda v: np.asarray(v).astype(np.float16), variables['batch_stats'])
    assert not _leaves_equal(art.batch_stats, half)
    off = nrnp.compress(variables, model, data=data, log=None, **{**FAST, 'recalibrate__images': 0})
    assert _leaves_equal(off.batch_stats, half)
    on, off = art.size_report(), off.size_report()
    for key in ('predictor_bytes', 'ordering_bytes', 'copied_bytes', 'framing_bytes'):
        assert on[key] == off[key], key
    assert abs(on['header_bytes'] - off['header_bytes']) < 200  # one more phase record


@pytest.mark.slow
def test_more_images_than_the_split_holds_are_capped_with_a_note():
    config = default.get_config()
    config.recalibrate.images, config.recalibrate.batch_size = 256, 16
    model, variables = Net(), _variables(Net())
    lines = []
    images = calibration.array_images([_images(40)])
    recal = calibration.reestimation(
        config, model, variables, (1, 8, 8, 3), images, None, lines.append
    )
    assert recal.info['images'] == 32  # two whole batches of 16 of the 40
    assert any('recalibrate.images=256 is more than the 40 training images' in x for x in lines)


@pytest.mark.slow
def test_data_free_compression_recalibrates_on_noise_and_no_batchnorm_is_a_note():
    model, variables = Net(), _variables(Net())
    lines = []
    records = nrnp.compress(
        variables, model, input_shape=(8, 8, 3), log=lines.append, **FAST
    ).history
    assert records[-1]['kind'] == 'recalibrate' and records[-1]['source'] == 'noise'
    lines = []
    plain = NoBN().init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    nrnp.compress(plain, NoBN(), log=lines.append, **FAST)
    assert any('no BatchNorm running statistics' in line for line in lines)


def test_distillation_never_draws_the_held_out_images():
    config = default.get_config()
    rng = np.random.default_rng(0)
    n = 4 * calibration.HELDOUT
    images = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)  # distinct images
    train = dataset.Dataset(images, np.zeros(n, np.int32), 10, [str(i) for i in range(10)])
    pool = calibration.without_heldout(config, train)
    assert len(pool) == n - calibration.HELDOUT
    held = calibration.split_images(config, train, tail=True)(4, calibration.HELDOUT // 4)
    std, mean = np.asarray(config.data.std), np.asarray(config.data.mean)
    held = np.rint((np.concatenate(held) * std + mean) * 255).astype(np.uint8)  # unnormalised
    seen = {image.tobytes() for image in pool.images}
    assert len(held) == calibration.HELDOUT
    assert not any(image.tobytes() in seen for image in held)
    assert len(seen | {image.tobytes() for image in held}) == n  # together: all of train
    few = dataset.take(train, np.arange(n - 1))  # fewer than 4 x HELDOUT: shared
    assert calibration.without_heldout(config, few) is few

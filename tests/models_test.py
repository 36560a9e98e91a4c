"""Tests for nrnp.models: parameter counts, names, shapes and feature-map order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nrnp.nets import models


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_variables(model, input_shape):
    return jax.eval_shape(lambda: models.init_variables(model, input_shape))


def _random_variables(model, input_shape, seed=0):
    """Variables filled from U(0.5, 1.5) without compiling init (BN variances stay positive)."""
    rng = np.random.default_rng(seed)
    fill = lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape).astype(np.float32))
    return jax.tree.map(fill, _abstract_variables(model, input_shape))


@pytest.fixture(scope='module')
def resnet20():
    model = models.build_model('resnet20', 10)
    return model, models.init_variables(model, (1, 32, 32, 3))


def test_resnet20_counts_match_akamaster(resnet20):
    _, variables = resnet20
    assert set(variables) == {'params', 'batch_stats'}
    assert _count(variables['params']) == 269_722
    # The README's 271,098 counts the whole state dict (running stats included).
    assert _count(variables) == 271_098
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))


def test_resnet56_counts_match_akamaster():
    variables = _abstract_variables(models.build_model('resnet56', 10), (1, 32, 32, 3))
    assert _count(variables['params']) == 853_018
    assert _count(variables) == 857_082


@pytest.mark.parametrize(
    'name, params',
    [('resnet18', 11_689_512), ('resnet34', 21_797_672)],  # torchvision's counts
)
def test_imagenet_resnet_counts_match_torchvision(name, params):
    variables = _abstract_variables(models.build_model(name, 1000), (1, 64, 64, 3))
    assert _count(variables['params']) == params
    p = variables['params']
    assert 'downsample_conv' not in p['layer1_0']
    assert p['layer2_0']['downsample_conv']['kernel'].shape == (1, 1, 64, 128)
    assert p['conv1']['kernel'].shape == (7, 7, 3, 64)
    assert p['fc']['kernel'].shape == (512, 1000)


def test_resnet20_names_and_shapes(resnet20):
    _, variables = resnet20
    p = variables['params']
    expected = {'conv1', 'bn1', 'linear'} | {f'layer{s}_{b}' for s in (1, 2, 3) for b in range(3)}
    assert set(p) == expected
    assert set(p['layer2_0']) == {'conv1', 'bn1', 'conv2', 'bn2'}  # option A: no params
    assert p['conv1']['kernel'].shape == (3, 3, 3, 16)
    assert p['layer3_0']['conv1']['kernel'].shape == (3, 3, 32, 64)
    assert 'bias' not in p['conv1']
    assert p['linear']['kernel'].shape == (64, 10)
    assert p['linear']['bias'].shape == (10,)
    assert variables['batch_stats']['layer1_0']['bn2']['var'].shape == (16,)


def test_option_b_has_projection_only_where_shape_changes():
    model = models.build_model('resnet20', 10, shortcut='B', width=8)
    p = _abstract_variables(model, (1, 32, 32, 3))['params']
    for block in ('layer2_0', 'layer3_0'):
        assert {'shortcut_conv', 'shortcut_bn'} <= set(p[block])
    for block in ('layer1_0', 'layer2_1', 'layer3_2'):
        assert 'shortcut_conv' not in p[block]
    assert p['layer2_0']['shortcut_conv']['kernel'].shape == (1, 1, 8, 16)
    assert 'bias' not in p['layer2_0']['shortcut_conv']


def test_output_shapes(resnet20):
    model, variables = resnet20
    x = jnp.ones((2, 32, 32, 3))
    logits = model.apply(variables, x, train=False)
    assert logits.shape == (2, 10)
    assert np.isfinite(np.asarray(logits)).all()
    small = models.build_model('smallcnn', 10)
    small_vars = models.init_variables(small, (1, 8, 8, 1))
    assert small.apply(small_vars, jnp.ones((3, 8, 8, 1))).shape == (3, 10)
    r18 = models.build_model('resnet18', 7)
    abstract = _abstract_variables(r18, (1, 64, 64, 3))
    out = jax.eval_shape(lambda v, x: r18.apply(v, x), abstract, jnp.ones((2, 64, 64, 3)))
    assert out.shape == (2, 7)


def test_train_mode_updates_batch_stats(resnet20):
    model, variables = resnet20
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    _, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
    old = variables['batch_stats']['bn1']['mean']
    new = updates['batch_stats']['bn1']['mean']
    assert not np.allclose(old, new)


def test_features_resnet20(resnet20):
    model, variables = resnet20
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    logits, features = models.apply_with_features(model, variables, x)
    assert logits.shape == (2, 10)
    assert len(features) == 1 + 2 * 9
    shapes = [f.shape for f in features]
    assert shapes[0] == (2, 32, 32, 16)
    assert shapes[1:7] == [(2, 32, 32, 16)] * 6
    assert shapes[7:13] == [(2, 16, 16, 32)] * 6
    assert shapes[13:] == [(2, 8, 8, 64)] * 6
    np.testing.assert_array_equal(logits, model.apply(variables, x, train=False))


def test_features_follow_network_order_past_ten_blocks():
    model = models.CifarResNet(depth=68, width=4)  # 11 blocks per stage: layer1_10 exists
    variables = _random_variables(model, (1, 8, 8, 3))
    x = jax.random.normal(jax.random.key(2), (1, 8, 8, 3))
    _, features = models.apply_with_features(model, variables, x)
    _, state = model.apply(variables, x, mutable=['intermediates'])
    sown = state['intermediates']
    expected = [sown['stem'][0]]
    for s in (1, 2, 3):
        for b in range(11):
            expected += [sown[f'layer{s}_{b}']['bn1_out'][0], sown[f'layer{s}_{b}']['sum'][0]]
    assert len(features) == len(expected) == 67
    for got, want in zip(features, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_features_smallcnn_are_bn_outputs():
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    variables = _random_variables(model, (1, 8, 8, 1))
    _, features = models.apply_with_features(model, variables, jnp.ones((2, 8, 8, 1)))
    assert [f.shape for f in features] == [(2, 8, 8, 4), (2, 8, 8, 8), (2, 4, 4, 8)]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='6n\\+2'):
        models.CifarResNet(depth=21)
    with pytest.raises(ValueError, match='shortcut'):
        models.CifarResNet(depth=20, shortcut='C')
    with pytest.raises(ValueError, match='resnet20.*smallcnn'):
        models.build_model('resnet21', 10)

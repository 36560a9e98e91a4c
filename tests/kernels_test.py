"""Kernel table: selection, order, exact round trips of every kind, masks, grouped 1x1 rows,
tiling, kinds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nrnp.core import kernels


def _params(rng):
    return {
        'conv1': {'kernel': rng.normal(size=(3, 3, 3, 4)).astype(np.float32)},
        'bn1': {'scale': np.ones(4, np.float32), 'bias': np.zeros(4, np.float32)},
        'layer1_10': {'conv1': {'kernel': rng.normal(size=(3, 3, 4, 4)).astype(np.float32)}},
        'layer1_9': {
            'conv1': {'kernel': rng.normal(size=(3, 3, 4, 4)).astype(np.float32)},
            'shortcut_conv': {'kernel': rng.normal(size=(1, 1, 4, 2)).astype(np.float32)},
        },
        'stem7': {'kernel': rng.normal(size=(7, 7, 2, 3)).astype(np.float32)},
        'linear': {
            'kernel': rng.normal(size=(4, 10)).astype(np.float32),
            'bias': np.zeros(10, np.float32),
        },
    }


def test_selection_and_natural_order():
    params = _params(np.random.default_rng(0))
    layout = kernels.kernel_layout(params, kernels.select_kernels())
    names = [layer.name for layer in layout.layers]
    assert names == [
        'conv1/kernel',
        'layer1_9/conv1/kernel',
        'layer1_9/shortcut_conv/kernel',
        'layer1_10/conv1/kernel',
    ]
    # The 1x1 shortcut [1, 1, 4, 2] is one grouped row per filter (4 channels <= 9).
    assert layout.num_kernels == 12 + 16 + 2 + 16
    assert layout.num_params == 108 + 144 + 8 + 144
    assert [layer.offset for layer in layout.layers] == [0, 12, 28, 30]
    centre = kernels.kernel_layout(params, kernels.select_kernels(), pointwise='centre')
    assert centre.num_kernels == 12 + 16 + 8 + 16  # NeRN's layout: one row per 1x1 weight
    assert [layer.offset for layer in centre.layers] == [0, 12, 28, 36]


def test_round_trip_is_exact_and_copies_the_rest():
    params = _params(np.random.default_rng(1))
    layout = kernels.kernel_layout(params, kernels.select_kernels(large='tile'))
    table = kernels.gather(layout, params)
    assert table.shape == (layout.num_kernels, 9) and table.dtype == jnp.float32
    back = kernels.scatter(layout, table, params)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.asarray(a).dtype == np.asarray(b).dtype
    # Non-represented leaves are the very same objects.
    assert back['linear']['kernel'] is params['linear']['kernel']


def test_row_layout_filter_major_and_row_major_taps():
    w = np.arange(3 * 3 * 2 * 2, dtype=np.float32).reshape(3, 3, 2, 2)  # HWIO
    params = {'c': {'kernel': w}}
    layout = kernels.kernel_layout(params, kernels.select_kernels())
    table = np.asarray(kernels.gather(layout, params))
    # Row f * I + c holds W[:, :, c, f] flattened row-major.
    for f in range(2):
        for c in range(2):
            np.testing.assert_array_equal(table[f * 2 + c], w[:, :, c, f].reshape(9))


def test_one_by_one_centre_layout_uses_the_centre():
    w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32)  # [1, 1, I=2, O=2]
    params = {'s': {'kernel': w}}
    layout = kernels.kernel_layout(params, kernels.select_kernels(), pointwise='centre')
    table = np.asarray(kernels.gather(layout, params))
    expected = np.zeros((4, 9), np.float32)
    expected[:, 4] = [1.0, 3.0, 2.0, 4.0]  # rows (f, c): (0,0)=w[c0,f0], (0,1)=w[c1,f0], ...
    np.testing.assert_array_equal(table, expected)
    np.testing.assert_array_equal(layout.mask(), (expected != 0).astype(np.float32))
    # Off-centre predictions are ignored when writing back.
    noisy = table + np.where(layout.mask() > 0, 0.0, 7.0)
    np.testing.assert_array_equal(
        kernels.scatter(layout, jnp.asarray(noisy), params)['s']['kernel'], w
    )


def test_tiling_large_kernels():
    w = np.random.default_rng(2).normal(size=(7, 7, 1, 1)).astype(np.float32)
    params = {'stem': {'kernel': w}}
    assert kernels.kernel_layout.__name__  # smoke: copied by default
    with pytest.raises(ValueError, match='No conv kernel'):
        kernels.kernel_layout(params, kernels.select_kernels())
    layout = kernels.kernel_layout(params, kernels.select_kernels(large='tile'))
    assert layout.layers[0].tiles == 9 and layout.num_kernels == 9
    mask = layout.mask()
    assert mask.sum() == 49  # 7x7 real entries in a 9x9 zero-padded grid
    table = np.asarray(kernels.gather(layout, params))
    np.testing.assert_array_equal(table[0], w[0:3, 0:3, 0, 0].reshape(9))  # top-left tile
    np.testing.assert_array_equal(table[1], w[0:3, 3:6, 0, 0].reshape(9))  # next to the right
    back = kernels.scatter(layout, jnp.asarray(table), params)
    np.testing.assert_array_equal(back['stem']['kernel'], w)


def test_exclude_and_shape_errors():
    params = _params(np.random.default_rng(3))
    layout = kernels.kernel_layout(params, kernels.select_kernels(sizes=(3,), exclude='layer1_10'))
    assert [layer.name for layer in layout.layers] == ['conv1/kernel', 'layer1_9/conv1/kernel']
    with pytest.raises(ValueError, match='layout expects'):
        kernels.scatter(layout, jnp.zeros((3, 9)), params)


def test_gather_scatter_under_jit():
    params = _params(np.random.default_rng(4))
    layout = kernels.kernel_layout(params, kernels.select_kernels())
    fn = jax.jit(lambda p: kernels.scatter(layout, kernels.gather(layout, p) * 2.0, p))
    out = fn(params)
    np.testing.assert_allclose(out['conv1']['kernel'], 2 * params['conv1']['kernel'])


def test_dense_and_depthwise_kernels():
    rng = np.random.default_rng(5)
    params = {
        'dw': {'kernel': rng.normal(size=(3, 3, 1, 6)).astype(np.float32)},  # depthwise
        'fc': {'kernel': rng.normal(size=(6, 4)).astype(np.float32)},
    }
    plain = kernels.kernel_layout(params, kernels.select_kernels())
    assert [layer.name for layer in plain.layers] == ['dw/kernel']
    layout = kernels.kernel_layout(params, kernels.select_kernels(dense=True), 'centre')
    assert [layer.name for layer in layout.layers] == ['dw/kernel', 'fc/kernel']
    assert layout.num_kernels == 6 + 24 and layout.num_params == 54 + 24
    table = np.asarray(kernels.gather(layout, params))
    np.testing.assert_array_equal(table[6 + 1 * 6 + 2, 4], params['fc']['kernel'][2, 1])
    back = kernels.scatter(layout, jnp.asarray(table), params)
    for name in ('dw', 'fc'):
        np.testing.assert_array_equal(back[name]['kernel'], params[name]['kernel'])


def test_grouped_one_by_one_rows_and_partial_last_group():
    rng = np.random.default_rng(6)
    w = rng.normal(size=(1, 1, 20, 3)).astype(np.float32)  # I = 20: groups of 9, 9 and 2
    layout = kernels.kernel_layout({'p': {'kernel': w}}, kernels.select_kernels())
    (layer,) = layout.layers
    assert (layer.group, layer.channel_slots, layer.num_rows, layer.kind) == (9, 3, 9, 'pointwise')
    table = np.asarray(kernels.gather(layout, {'p': {'kernel': w}}))
    for f in range(3):
        np.testing.assert_array_equal(table[f * 3 + 0], w[0, 0, 0:9, f])
        np.testing.assert_array_equal(table[f * 3 + 1], w[0, 0, 9:18, f])
        np.testing.assert_array_equal(table[f * 3 + 2, :2], w[0, 0, 18:20, f])
        np.testing.assert_array_equal(table[f * 3 + 2, 2:], 0.0)
    mask = layout.mask()
    assert mask.shape == (9, 9) and mask.sum() == 60  # exactly the 20 * 3 weights
    np.testing.assert_array_equal(mask[2], [1, 1, 0, 0, 0, 0, 0, 0, 0])
    # Predictions in the masked entries of the last group are dropped when writing back.
    noisy = table + np.where(mask > 0, 0.0, 5.0)
    back = kernels.scatter(layout, jnp.asarray(noisy), {'p': {'kernel': w}})
    np.testing.assert_array_equal(back['p']['kernel'], w)


@pytest.mark.parametrize('pointwise', ['grouped', 'centre'])
def test_every_kind_round_trips_exactly(pointwise):
    rng = np.random.default_rng(7)
    shapes = {
        'stem7': (7, 7, 3, 4),  # tiled into 9 rows per kernel
        'c5': (5, 5, 2, 3),  # tiled into 4 rows per kernel
        'c3': (3, 3, 4, 5),
        'dw': (3, 3, 1, 13),  # depthwise
        'pw_a': (1, 1, 13, 7),  # 13 channels: groups of 9 and 4
        'pw_b': (1, 1, 18, 2),  # exactly two groups
        'pw_c': (1, 1, 5, 3),  # one partial group
        'fc': (11, 4),  # Dense [in, out]: 11 channels, groups of 9 and 2
    }
    params = {
        name: {'kernel': rng.normal(size=shape).astype(np.float32)}
        for name, shape in shapes.items()
    }
    params['fc']['bias'] = rng.normal(size=4).astype(np.float32)
    select = kernels.select_kernels(large='tile', dense=True)
    layout = kernels.kernel_layout(params, select, pointwise, depthwise=[('dw', 'kernel')])
    kinds = {layer.path[0]: layer.kind for layer in layout.layers}
    assert kinds == {
        'stem7': 'large',
        'c5': 'large',
        'c3': '3x3',
        'dw': 'depthwise',
        'pw_a': 'pointwise',
        'pw_b': 'pointwise',
        'pw_c': 'pointwise',
        'fc': 'dense',
    }
    grouped = pointwise == 'grouped'
    rows = {layer.path[0]: layer.num_rows for layer in layout.layers}
    assert rows['pw_a'] == (7 * 2 if grouped else 7 * 13)
    assert rows['fc'] == (4 * 2 if grouped else 4 * 11)
    assert (rows['stem7'], rows['c5'], rows['dw']) == (4 * 3 * 9, 3 * 2 * 4, 13)
    table = kernels.gather(layout, params)
    assert table.shape == (layout.num_kernels, 9)
    assert layout.mask().sum() == layout.num_params  # one mask entry per real weight
    back = kernels.scatter(layout, table, params)
    for name in shapes:
        np.testing.assert_array_equal(back[name]['kernel'], params[name]['kernel'])
        assert back[name]['kernel'].dtype == np.float32
    assert back['fc']['bias'] is params['fc']['bias']
    by_kind = kernels.params_by_kind(layout, params)
    assert by_kind == {
        '3x3': 180,
        'depthwise': 117,
        'pointwise': 91 + 36 + 15,
        'large': 588 + 150,
        'dense': 44,
        'copied': 4,
    }


def test_kinds_default_and_bad_layout():
    params = {'dw': {'kernel': np.zeros((3, 3, 1, 8), np.float32)}}
    layout = kernels.kernel_layout(params, kernels.select_kernels())
    assert layout.layers[0].kind == '3x3'  # a 1-channel 3x3 is depthwise only when told
    with pytest.raises(ValueError, match="pointwise must be one of .*'grouped'"):
        kernels.kernel_layout(params, kernels.select_kernels(), pointwise='packed')

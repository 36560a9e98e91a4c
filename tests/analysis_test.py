"""Analysis helpers: per-layer error, kernel pairs and ordering smoothness, hand-computed."""

import math

import numpy as np
import pytest

from nrnp.core import kernels
from nrnp.reporting import analysis


def _layout():
    """A 3x3 layer with 2 filters x 1 channel, then a 1x1 layer with 1 filter x 2 channels
    (NeRN's centre layout: one 1x1 weight per row)."""
    params = {
        'a': {'kernel': np.zeros((3, 3, 1, 2), np.float32)},
        'b': {'kernel': np.zeros((1, 1, 2, 1), np.float32)},
    }
    return kernels.kernel_layout(params, kernels.select_kernels(), pointwise='centre')


def test_per_layer_rmse_hand_computed():
    layout = _layout()
    original = np.zeros((4, 9))
    original[:2] = 2.0  # layer a: every weight 2, rms 2
    original[2, 4], original[3, 4] = 3.0, 4.0  # layer b: centres 3 and 4
    rebuilt = original + 1.0  # layer a: off by 1 everywhere
    rebuilt[2:] = 100.0  # layer b: masked entries are wild, ignored
    rebuilt[2, 4], rebuilt[3, 4] = 4.0, 2.0  # centre errors +1 and -2
    rows = analysis.per_layer_rmse(layout, original, rebuilt, layout.mask())
    assert [r['name'] for r in rows] == ['a/kernel', 'b/kernel']
    assert [r['shape'] for r in rows] == [(3, 3, 1, 2), (1, 1, 2, 1)]
    assert [r['params'] for r in rows] == [18, 2]
    assert rows[0]['rmse'] == pytest.approx(1.0)
    assert rows[0]['relative_rmse'] == pytest.approx(0.5)
    assert rows[1]['rmse'] == pytest.approx(math.sqrt((1 + 4) / 2))
    assert rows[1]['relative_rmse'] == pytest.approx(math.sqrt(5 / 2) / math.sqrt(25 / 2))


def test_per_layer_rmse_rejects_wrong_shapes():
    layout = _layout()
    with pytest.raises(ValueError, match='expected'):
        analysis.per_layer_rmse(layout, np.zeros((3, 9)), np.zeros((4, 9)), layout.mask())


def test_kernel_pairs_orientation_and_mask():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)  # HWIO, I=2, O=4
    params = {'c': {'kernel': kernel}, 'd': {'kernel': np.ones((1, 1, 1, 1), np.float32)}}
    layout = kernels.kernel_layout(params, kernels.select_kernels(), pointwise='centre')
    table = np.asarray(kernels.gather(layout, params))
    rebuilt = table + 1.0
    original, after = analysis.kernel_pairs(layout, table, rebuilt, 0, 5)
    assert original.shape == after.shape == (5, 3, 3)
    for j in range(5):
        np.testing.assert_array_equal(original[j], kernel[:, :, j % 2, j // 2])
        np.testing.assert_allclose(after[j], kernel[:, :, j % 2, j // 2] + 1.0)
    # 1x1 layer: only the centre is a weight; count is capped at the layer's rows.
    original, after = analysis.kernel_pairs(layout, table, rebuilt, 1, 10)
    assert original.shape == (1, 3, 3)
    np.testing.assert_array_equal(original[0], [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(after[0], [[0, 0, 0], [0, 2, 0], [0, 0, 0]])


def _two_by_two():
    """One 3x3 layer with 2 filters x 2 channels; rows in storage order (f, c)."""
    params = {'a': {'kernel': np.zeros((3, 3, 2, 2), np.float32)}}
    layout = kernels.kernel_layout(params, kernels.select_kernels())
    e0, e1 = np.eye(9)[0], np.eye(9)[1]
    rows = np.stack([2 * e0, 5 * e0, e1, -3 * e1])  # (0,0) (0,1) (1,0) (1,1)
    return layout, rows


def test_ordering_smoothness_hand_computed():
    layout, rows = _two_by_two()
    storage = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]])
    result = analysis.ordering_smoothness(layout, rows, storage)
    # Pairs along channels: filter 0 cos(2e0, 5e0) = 1, filter 1 cos(e1, -3e1) = -1.
    assert result['pairs'] == 2
    assert result['mean_cosine'] == pytest.approx(0.0)
    assert result['per_layer'] == [{'name': 'a/kernel', 'mean_cosine': 0.0, 'pairs': 2}]
    # Rows 1 and 2 swap coordinates: pairs (2e0, e1) and (5e0, -3e1), both cosine 0.
    swapped = storage[[0, 2, 1, 3]]
    assert analysis.ordering_smoothness(layout, rows, swapped)['mean_cosine'] == 0.0
    # Flip the sign of row 3: both channel pairs now have cosine 1.
    aligned = np.stack([rows[0], rows[1], rows[2], -rows[3]])
    assert analysis.ordering_smoothness(layout, aligned, storage)['mean_cosine'] == 1.0


def test_ordering_smoothness_zero_rows_and_single_channel():
    params = {
        'a': {'kernel': np.zeros((3, 3, 2, 1), np.float32)},
        'b': {'kernel': np.zeros((3, 3, 1, 2), np.float32)},
    }
    layout = kernels.kernel_layout(params, kernels.select_kernels())
    rows = np.zeros((4, 9))
    rows[0, 0] = 1.0  # its neighbour is all zero: cosine 0
    coords = np.array([[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 1, 0]])
    result = analysis.ordering_smoothness(layout, rows, coords)
    assert result['pairs'] == 1 and result['mean_cosine'] == 0.0
    assert result['per_layer'][1]['pairs'] == 0
    assert math.isnan(result['per_layer'][1]['mean_cosine'])


def test_compare_orderings_crossfilter_is_smoothest():
    rng = np.random.default_rng(0)
    params = {'a': {'kernel': rng.normal(size=(3, 3, 16, 8)).astype(np.float32)}}
    layout = kernels.kernel_layout(params, kernels.select_kernels())
    table = np.asarray(kernels.gather(layout, params))
    result = analysis.compare_orderings(layout, table)
    assert set(result) == {'none', 'infilter', 'crossfilter', 'separable'}  # choices.ORDERINGS
    assert all(r['pairs'] == 8 * 15 for r in result.values())
    # One filter chain and one channel chain cannot follow every kernel's neighbour.
    assert result['crossfilter']['mean_cosine'] > result['separable']['mean_cosine']
    # Greedy chains pick each step's most similar kernel: far above storage order.
    assert result['crossfilter']['mean_cosine'] > result['none']['mean_cosine'] + 0.2
    assert result['infilter']['mean_cosine'] > result['none']['mean_cosine'] + 0.2

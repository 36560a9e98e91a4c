"""Tests for nrnp.orderings: hand-worked chains, ties, 1x1 and zero kernels, permutations."""

import numpy as np
import pytest

from nrnp.core import orderings


def reference_chain(features, start=0):
    """Slow pure-Python greedy chain (float64), ties to the smallest index."""
    features = np.asarray(features, np.float64)
    visited = np.zeros(len(features), bool)
    current, order = start, [start]
    visited[start] = True
    for _ in range(len(features) - 1):
        sims = features @ features[current]
        sims[~np.isfinite(sims)] = 0.0
        sims[visited] = -np.inf
        current = int(np.argmax(sims))  # first maximum = smallest index
        visited[current] = True
        order.append(current)
    return np.array(order)


def assert_permutation(filter_pos, channel_pos, num_filters, num_channels):
    assert filter_pos.shape == channel_pos.shape == (num_filters, num_channels)
    assert filter_pos.dtype == channel_pos.dtype == np.int32
    slots = np.sort((filter_pos * num_channels + channel_pos).ravel())
    np.testing.assert_array_equal(slots, np.arange(num_filters * num_channels))


def test_crossfilter_hand_computed():
    # Items f*I + c: 0=[1,0], 1=[0,1], 2=[-1,0], 3=[1,1] (cosine .707 to both axes).
    # From 0: sims 1:0, 2:-1, 3:.707 -> 3; from 3: 1:.707, 2:-.707 -> 1; then 2.
    # Chain [0, 3, 1, 2]: item 0 -> q0 (0,0), 3 -> q1 (0,1), 1 -> q2 (1,0), 2 -> q3 (1,1).
    kernels = np.array([[[1, 0], [0, 1]], [[-1, 0], [1, 1]]], np.float32)  # [2, 2, 2]
    np.testing.assert_array_equal(
        orderings.greedy_chain(orderings.cosine_normalise(kernels.reshape(4, 2))), [0, 3, 1, 2]
    )
    filter_pos, channel_pos = orderings.layer_positions(kernels, 'crossfilter')
    np.testing.assert_array_equal(filter_pos, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(channel_pos, [[0, 0], [1, 1]])


def test_ties_go_to_smallest_index():
    # From 0 every other item has similarity 0: the smallest index (1) wins.
    # From 1: 2 has -1, 3 (a scaled copy of 1) has 1 -> 3, then 2.
    features = orderings.cosine_normalise(np.array([[1, 0], [0, 1], [0, -1], [0, 2]]))
    np.testing.assert_array_equal(orderings.greedy_chain(features), [0, 1, 3, 2])
    # From 0 the best (2) comes before another tie pair 1, 3 (both 0): 1 then 3.
    features = np.array([[0, 1], [1, 0], [0, 1], [1, 0]], np.float32)
    np.testing.assert_array_equal(orderings.greedy_chain(features), [0, 2, 1, 3])
    np.testing.assert_array_equal(orderings.greedy_chain(np.ones((5, 3))), [0, 1, 2, 3, 4])


def test_one_by_one_layer_and_zero_kernels():
    # D = 1: the cosine of scalars is their sign (0 for zero kernels).
    # Items: 0:+, 1:-, 2:0, 3:+, 4:0, 5:-.  From 0: 3 (sim 1); from 3: best 0 at 2 and 4
    # -> 2; from 2 (zero, all sims 0) -> 1; from 1: 5 (sim 1); then 4.
    # Chain [0, 3, 2, 1, 5, 4] -> item i gets q = [0, 3, 2, 1, 5, 4] (I = 3).
    kernels = np.array([[[2], [-1], [0]], [[3], [0], [-5]]], np.float32)  # [2, 3, 1]
    filter_pos, channel_pos = orderings.layer_positions(kernels, 'crossfilter')
    np.testing.assert_array_equal(filter_pos, [[0, 1, 0], [0, 1, 1]])
    np.testing.assert_array_equal(channel_pos, [[0, 0, 2], [1, 2, 1]])
    assert_permutation(filter_pos, channel_pos, 2, 3)
    for mode in orderings.MODES:
        assert_permutation(*orderings.layer_positions(np.zeros((3, 4, 9)), mode), 3, 4)


def test_non_finite_similarities_count_as_zero():
    features = np.array([[np.nan, 0], [1, 0], [0, 1]], np.float32)
    np.testing.assert_array_equal(orderings.greedy_chain(features), [0, 1, 2])
    features = np.array([[1, 0], [np.inf, 0], [1, 1]], np.float32)
    np.testing.assert_array_equal(orderings.greedy_chain(features), [0, 2, 1])
    kernels = np.array([[[np.inf, 1], [0, 1]], [[np.nan, 0], [1, 0]]], np.float32)
    for mode in orderings.MODES:
        assert_permutation(*orderings.layer_positions(kernels, mode), 2, 2)


def test_infilter_hand_computed():
    # Filter 0: c0=[1,0], c1=[-1,0], c2=[1,1]: from c0, c2 (.707) beats c1 (-1): sigma [0,2,1].
    # Filter 1: c0=[0,1], c1=[1,1], c2=[0,-1]: sigma [0,1,2].
    # Filter 2: c0=[1,0], c1=[0,1], c2=[-1,0]: c1 (0) beats c2 (-1): sigma [0,1,2].
    # Reordered normalised filters: G0 = [1,0 | .707,.707 | -1,0], G1 = [0,1 | .707,.707 | 0,-1],
    # G2 = [1,0 | 0,1 | -1,0].  s(0,1) = 1, s(0,2) = 2.707, s(1,2) = .707.
    # tau from 0: 2 (2.707), then 1 -> tau [0,2,1], tau^-1: f0->0, f1->2, f2->1.
    kernels = np.array(
        [
            [[1, 0], [-1, 0], [1, 1]],
            [[0, 1], [1, 1], [0, -1]],
            [[1, 0], [0, 1], [-1, 0]],
        ],
        np.float32,
    )  # [3, 3, 2]
    sigma, tau = orderings.infilter_chains(kernels)
    np.testing.assert_array_equal(sigma, [[0, 2, 1], [0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(tau, [0, 2, 1])
    filter_pos, channel_pos = orderings.layer_positions(kernels, 'infilter')
    np.testing.assert_array_equal(filter_pos, [[0, 0, 0], [2, 2, 2], [1, 1, 1]])
    np.testing.assert_array_equal(channel_pos, [[0, 2, 1], [0, 1, 2], [0, 1, 2]])


def test_infilter_three_by_two():
    # I = 2: every sigma is [0, 1]. Filters [1,0 | 0,1], [0,1 | 1,0], [1,0 | 0,2]:
    # s(0,1) = 0, s(0,2) = 2, s(1,2) = 0 -> tau [0, 2, 1].
    kernels = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[1, 0], [0, 2]]], np.float32)
    sigma, tau = orderings.infilter_chains(kernels)
    np.testing.assert_array_equal(sigma, [[0, 1]] * 3)
    np.testing.assert_array_equal(tau, [0, 2, 1])
    filter_pos, channel_pos = orderings.layer_positions(kernels, 'infilter')
    np.testing.assert_array_equal(filter_pos, [[0, 0], [2, 2], [1, 1]])
    np.testing.assert_array_equal(channel_pos, [[0, 1]] * 3)


def test_none_and_unknown_mode():
    filter_pos, channel_pos = orderings.layer_positions(np.ones((2, 3, 9)), 'none')
    np.testing.assert_array_equal(filter_pos, [[0, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(channel_pos, [[0, 1, 2], [0, 1, 2]])
    with pytest.raises(ValueError, match='none, infilter, crossfilter, separable'):
        orderings.layer_positions(np.ones((2, 3, 9)), 'zigzag')


@pytest.mark.parametrize('compact', [True, False])
def test_greedy_chain_matches_reference(compact):
    rng = np.random.default_rng(0)
    # 300 items: with compaction the chain runs in buckets 512 -> 256 -> 128.
    features = orderings.cosine_normalise(rng.standard_normal((300, 9)))
    np.testing.assert_array_equal(
        orderings.greedy_chain(features, compact=compact), reference_chain(features)
    )
    np.testing.assert_array_equal(
        orderings.greedy_chain(features, start=17, compact=compact),
        reference_chain(features, start=17),
    )
    # Small integer features: exact similarities and very many ties.
    features = rng.integers(-1, 2, size=(300, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        orderings.greedy_chain(features, compact=compact), reference_chain(features)
    )


@pytest.mark.parametrize('mode', orderings.MODES)
@pytest.mark.parametrize('shape', [(8, 5, 9), (6, 7, 1), (1, 1, 9), (4, 1, 9), (1, 6, 9)])
def test_layer_positions_are_permutations(mode, shape):
    kernels = np.random.default_rng(1).standard_normal(shape)
    assert_permutation(*orderings.layer_positions(kernels, mode), *shape[:2])


def test_crossfilter_matches_reference_on_random_layer():
    kernels = np.random.default_rng(2).standard_normal((12, 10, 9)).astype(np.float32)
    order = reference_chain(orderings.cosine_normalise(kernels.reshape(-1, 9)))
    filter_pos, channel_pos = orderings.layer_positions(kernels, 'crossfilter')
    for q, item in enumerate(order):
        assert (filter_pos.flat[item], channel_pos.flat[item]) == (q // 10, q % 10)


def test_greedy_chain_blocked_search_matches_reference():
    # 2100 items run through buckets 4096 and 2048, which use the two-level block search.
    rng = np.random.default_rng(3)
    features = orderings.cosine_normalise(rng.standard_normal((2100, 9)))
    np.testing.assert_array_equal(orderings.greedy_chain(features), reference_chain(features))
    features = rng.integers(-1, 2, size=(2100, 2)).astype(np.float32)
    np.testing.assert_array_equal(orderings.greedy_chain(features), reference_chain(features))

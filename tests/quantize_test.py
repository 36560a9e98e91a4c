"""core.quantize: group scales chosen by least squares, bit packing, float16/bf16 exactness,
the straight-through gradient, and nrnp 0.2's per-column leaves."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from nrnp.core import quantize


def kernel(shape=(37, 11), seed=0):
    w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    w[..., 3] *= 100  # columns of very different ranges: per-channel scales matter
    w[..., 4] = 0  # an all-zero column
    return w


INT_MODES = [m for m in quantize.MODES if m.startswith('int')]


@pytest.mark.parametrize('mode', INT_MODES)
@pytest.mark.parametrize('group', [0, 1, 5, 16, 37, 64])
def test_int_leaves_hold_codes_scales_and_the_least_squares_multiplier(mode, group):
    w = kernel()
    scheme = quantize.Scheme(mode, group)
    leaf = quantize.quantize_leaf(w, scheme)
    bits = int(mode[3:])
    qmax = 2 ** (bits - 1) - 1
    groups = quantize.num_groups(37, group)
    assert leaf.storage == 'int' and leaf.bits == bits and leaf.group == group
    assert leaf.values.dtype == np.int8 and leaf.values.shape == (37, 11)
    assert leaf.scale.dtype == np.float16 and leaf.scale.shape == (11,)
    assert leaf.multipliers.dtype == np.uint8 and leaf.multipliers.shape == (groups, 11)
    assert np.abs(leaf.values).max() <= qmax
    assert 1 <= leaf.multipliers.min() and leaf.multipliers.max() <= 2**quantize.SCALE_BITS - 1
    column = np.abs(w).max(axis=0) / qmax
    np.testing.assert_array_equal(leaf.scale, column.astype(np.float16))
    deq = quantize.dequantize_leaf(leaf)
    assert (deq[:, 4] == 0).all() and (leaf.values[:, 4] == 0).all()  # a zero column stays zero
    # No multiplier the file could hold gives a group a smaller squared error.
    g = quantize.group_size(37, group)
    step = np.float32(leaf.scale[0]) * quantize.MULTIPLIERS  # column 0's possible steps
    for j in range(groups):
        rows = slice(j * g, min((j + 1) * g, 37))
        chosen = np.sum(np.square(deq[rows, 0] - w[rows, 0]))
        for s in step[1:]:
            q = np.clip(np.round(w[rows, 0] / s), -qmax, qmax)
            assert chosen <= np.sum(np.square(q * s - w[rows, 0])) * (1 + 1e-5)


@pytest.mark.slow
def test_smaller_groups_and_more_bits_fit_better():
    w = kernel((64, 32), seed=3)
    error = {}
    for mode in ('int8', 'int5', 'int4'):
        for group in (0, 16, 4):
            deq = quantize.dequantize_leaf(quantize.quantize_leaf(w, quantize.Scheme(mode, group)))
            error[mode, group] = float(np.sqrt(np.mean(np.square(deq - w))))
    assert error['int8', 16] < error['int5', 16] < error['int4', 16]
    for mode in ('int8', 'int5', 'int4'):
        assert error[mode, 4] < error[mode, 16] < error[mode, 0]
    assert error['int8', 16] < 0.01 * np.abs(w).max()


@pytest.mark.parametrize('bits', range(1, 9))
def test_bit_packing_round_trips_for_every_width_and_count(bits):
    rng = np.random.default_rng(bits)
    for size in (0, 1, 2, 3, 7, 8, 9, 63, 1001):
        values = rng.integers(0, 2**bits, size)
        packed = quantize.pack_bits(values, bits)
        assert packed.dtype == np.uint8 and packed.shape == (-(-size * bits // 8),)
        np.testing.assert_array_equal(quantize.unpack_bits(packed, bits, size), values)
    with pytest.raises(ValueError, match=f'below {2**bits}'):
        quantize.pack_bits(np.array([2**bits]), bits)
    with pytest.raises(ValueError, match='need'):
        quantize.unpack_bits(np.zeros(50, np.uint8), bits, 3)


def test_bit_packing_layout_is_lsb_first():
    np.testing.assert_array_equal(quantize.pack_bits(np.array([1, 2, 3]), 3), [0b11010001, 0])
    np.testing.assert_array_equal(quantize.pack_bits(np.array([1, 15]), 4), [0xF1])


def test_old_int4_leaves_still_read():
    """nrnp 0.2 stored int4 two per byte (low nibble first) with float32 column scales."""
    q = np.array([[1, -1], [-8, 7], [0, 3]], np.int8)  # [3, 2]
    nibbles = (q.reshape(-1).astype(np.uint8) & 0x0F).astype(np.uint8)
    packed = nibbles[0::2] | (nibbles[1::2] << 4)
    np.testing.assert_array_equal(quantize.unpack_int4(packed, 6), q.reshape(-1))
    scale = np.array([0.5, 2.0], np.float32)
    leaf = quantize.QuantizedLeaf('int4', packed, scale, (3, 2))
    np.testing.assert_array_equal(quantize.dequantize_leaf(leaf), q * scale)
    leaf8 = quantize.QuantizedLeaf('int8', q, scale, (3, 2))
    np.testing.assert_array_equal(quantize.dequantize_leaf(leaf8), q * scale)


def test_bf16_and_float16_are_exact_where_representable_and_round_to_nearest():
    exact = np.array([0.0, 1.0, -2.5, 0.15625, 3.0 * 2.0**-12, 60000.0], np.float32)
    leaf = quantize.quantize_leaf(exact, quantize.Scheme('bf16'))
    assert leaf.storage == 'bfloat16' and leaf.values.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(quantize.dequantize_leaf(leaf), exact.astype(ml_dtypes.bfloat16))
    bias = quantize.quantize_leaf(exact, quantize.Scheme('int5'))  # int modes: float16 biases
    assert bias.storage == 'float16' and bias.values.dtype == np.float16
    np.testing.assert_array_equal(quantize.dequantize_leaf(bias), exact)
    w = kernel()
    deq = quantize.dequantize_leaf(quantize.quantize_leaf(w, quantize.Scheme('bf16')))
    np.testing.assert_allclose(deq, w, rtol=2.0**-8)  # 8 significant bits, nearest


@pytest.mark.parametrize('mode', quantize.MODES)
def test_leaves_and_trees(mode):
    scheme = quantize.Scheme(mode)
    tree = {'dense0': {'kernel': kernel(), 'bias': kernel((11,), 2)}}
    stored = jax.tree.map(lambda w: quantize.quantize_leaf(w, scheme), tree)  # as the artefact
    k, b = stored['dense0']['kernel'], stored['dense0']['bias']
    want = {'none': ('float32', 'float32'), 'bf16': ('bfloat16', 'bfloat16')}
    assert (k.storage, b.storage) == want.get(mode, ('int', 'float16'))
    assert k.shape == (37, 11)
    back = jax.tree.map(
        quantize.dequantize_leaf, stored, is_leaf=lambda x: isinstance(x, quantize.QuantizedLeaf)
    )
    assert back['dense0']['kernel'].dtype == np.float32
    assert back['dense0']['kernel'].shape == (37, 11)
    if mode == 'none':
        jax.tree.map(np.testing.assert_array_equal, back, tree)


def test_lowbit_and_bad_settings():
    assert quantize.Scheme('lowbit').mode == quantize.LOWBIT
    assert quantize.Scheme('lowbit').bits == int(quantize.LOWBIT[3:])
    with pytest.raises(ValueError, match='quantize mode'):
        quantize.Scheme('int9')
    with pytest.raises(ValueError, match='group'):
        quantize.Scheme('int4', -1)


@pytest.mark.parametrize('mode', ['none', 'bf16', 'int8', 'int5', 'int3'])
@pytest.mark.parametrize('group', [0, 16])
def test_fake_quantize_forward_is_the_stored_value_and_gradient_is_identity(mode, group):
    scheme = quantize.Scheme(mode, group)
    tree = {'kernel': kernel(), 'bias': kernel((11,), 3)}
    stored = jax.tree.map(
        lambda w: quantize.dequantize_leaf(quantize.quantize_leaf(w, scheme)), tree
    )
    fake = jax.jit(lambda t: quantize.fake_quantize_tree(t, scheme))(tree)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, fake), stored)

    cotangent = {'kernel': kernel(seed=4), 'bias': kernel((11,), 5)}

    def loss(t):
        t = quantize.fake_quantize_tree(t, scheme)
        return sum(jnp.sum(t[k] * cotangent[k]) for k in t)

    grads = jax.jit(jax.grad(loss))(tree)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, grads), cotangent)


@pytest.mark.slow
def test_edge_bits_give_the_first_and_last_layers_their_own_width():
    rng = np.random.default_rng(7)
    tree = {
        f'dense{i}': {'kernel': rng.standard_normal((12, 12)).astype(np.float32)} for i in range(4)
    }
    scheme = quantize.Scheme('int4', 4, edge_bits=8)
    schemes = scheme.layers(tree)
    assert [schemes[f'dense{i}'].bits for i in range(4)] == [8, 4, 4, 8]
    stored = quantize.quantize_tree(tree, scheme)
    assert [stored[f'dense{i}']['kernel'].bits for i in range(4)] == [8, 4, 4, 8]
    fake = jax.jit(lambda t: quantize.fake_quantize_tree(t, scheme))(tree)
    jax.tree.map(
        np.testing.assert_array_equal,
        jax.tree.map(np.asarray, fake),
        jax.tree.map(
            quantize.dequantize_leaf,
            stored,
            is_leaf=lambda x: isinstance(x, quantize.QuantizedLeaf),
        ),
    )
    assert quantize.Scheme('int4', 4).layers(tree)['dense0'].bits == 4
    with pytest.raises(ValueError, match='edge bits'):
        quantize.Scheme('int4', edge_bits=9)

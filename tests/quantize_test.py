"""core.quantize: error bounds, int4 packing, bf16 exactness, and the straight-through gradient."""

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


@pytest.mark.parametrize('bits', [8, 4])
def test_per_channel_error_is_at_most_half_a_step(bits):
    w = kernel()
    q, scale = quantize.quantize_kernel(w, bits)
    qmax = 2 ** (bits - 1) - 1
    assert q.dtype == np.int8 and q.shape == w.shape and scale.shape == (w.shape[1],)
    assert scale.dtype == np.float32
    assert q.min() >= -qmax and q.max() <= qmax
    np.testing.assert_array_equal(np.abs(q).max(axis=0)[scale > 0], qmax)  # the max hits qmax
    np.testing.assert_allclose(scale, np.abs(w).max(axis=0) / qmax, rtol=2e-7)
    error = np.abs(w - quantize.dequantize_kernel(q, scale))  # [in, out]
    assert (error <= scale / 2 * (1 + 1e-6) + 1e-30).all()
    assert scale[4] == 0 and (q[:, 4] == 0).all()  # the zero column stays exactly zero


def test_int4_packing_round_trips_two_per_byte():
    rng = np.random.default_rng(1)
    for size in (0, 1, 2, 7, 64):
        q = rng.integers(-8, 8, size).astype(np.int8)
        packed = quantize.pack_int4(q)
        assert packed.dtype == np.uint8 and packed.shape == ((size + 1) // 2,)
        np.testing.assert_array_equal(quantize.unpack_int4(packed, size), q)
    np.testing.assert_array_equal(quantize.pack_int4(np.array([1, -1], np.int8)), [0xF1])
    with pytest.raises(ValueError, match=r'\[-8, 7\]'):
        quantize.pack_int4(np.array([9], np.int8))
    with pytest.raises(ValueError, match='need 2 bytes'):
        quantize.unpack_int4(np.zeros(3, np.uint8), 4)


def test_bf16_is_exact_where_representable_and_rounds_to_nearest():
    exact = np.array([0.0, 1.0, -2.5, 0.15625, 3.0 * 2.0**-20, 65280.0], np.float32)
    leaf = quantize.quantize_leaf(exact, 'bf16')
    assert leaf.storage == 'bfloat16' and leaf.values.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(quantize.dequantize_leaf(leaf), exact)
    w = kernel()
    deq = quantize.dequantize_leaf(quantize.quantize_leaf(w, 'bf16'))
    np.testing.assert_allclose(deq, w, rtol=2.0**-8)  # 8 significant bits, nearest


@pytest.mark.parametrize('mode', quantize.MODES)
def test_leaves_and_trees(mode):
    tree = {'dense0': {'kernel': kernel(), 'bias': kernel((11,), 2)}}
    stored = quantize.quantize_tree(tree, mode)
    k, b = stored['dense0']['kernel'], stored['dense0']['bias']
    want = {'none': 'float32', 'bf16': 'bfloat16', 'int8': 'int8', 'int4': 'int4'}[mode]
    assert k.storage == want and k.shape == (37, 11)
    assert b.storage == ('bfloat16' if mode == 'bf16' else 'float32')  # int modes: f32 biases
    if mode == 'int4':
        assert k.values.shape == ((37 * 11 + 1) // 2,) and k.values.dtype == np.uint8
    back = quantize.dequantize_tree(stored)
    assert back['dense0']['kernel'].dtype == np.float32 and back['dense0']['kernel'].shape == (
        37,
        11,
    )
    np.testing.assert_array_equal(back['dense0']['bias'], quantize.dequantize_leaf(b))
    if mode == 'none':
        jax.tree.map(np.testing.assert_array_equal, back, tree)
    with pytest.raises(ValueError, match='quantize mode'):
        quantize.quantize_leaf(kernel(), 'int2')


@pytest.mark.parametrize('mode', quantize.MODES)
def test_fake_quantize_forward_is_the_stored_value_and_gradient_is_identity(mode):
    tree = {'kernel': kernel(), 'bias': kernel((11,), 3)}
    stored = quantize.dequantize_tree(quantize.quantize_tree(tree, mode))
    fake = jax.jit(lambda t: quantize.fake_quantize_tree(t, mode))(tree)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, fake), stored)

    cotangent = {'kernel': kernel(seed=4), 'bias': kernel((11,), 5)}

    def loss(t):
        t = quantize.fake_quantize_tree(t, mode)
        return sum(jnp.sum(t[k] * cotangent[k]) for k in t)

    grads = jax.jit(jax.grad(loss))(tree)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, grads), cotangent)

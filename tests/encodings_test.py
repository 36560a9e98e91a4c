"""Tests for nrnp.encodings: hand-computed values, shapes, dtypes and dispatch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nrnp.core import encodings


def test_nern_hand_computed():
    # coords (1, 2, 0), L = 2, base 0.5: angles pi*p*(1, 0.5).
    #   p=1: pi, pi/2   -> sin pi, cos pi, sin pi/2, cos pi/2 = 0, -1, 1, 0
    #   p=2: 2pi, pi    -> 0, 1, 0, -1
    #   p=0: 0, 0       -> 0, 1, 0, 1
    expected = [0, -1, 1, 0, 0, 1, 0, -1, 0, 1, 0, 1]
    out = encodings.nern_encoding(np.array([[1, 2, 0]]), levels=2, base=0.5)
    assert out.shape == (1, 12)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out)[0], expected, atol=1e-6)


def test_nern_layout_and_float32_angles():
    coords = np.array([[0, 5, 7], [3, 100, 511]], np.int32)
    levels, base = 40, 0.76
    out = np.asarray(jax.jit(encodings.nern_encoding, static_argnums=(1, 2))(coords, levels, base))
    assert out.shape == (2, 240)
    # NeRN's float32 angle: (p * float32(base)**l) * float32(pi), each product rounded.
    scales = np.float32(base) ** np.arange(levels, dtype=np.float32)
    angles = (coords.astype(np.float32)[:, :, None] * scales) * np.float32(np.pi)  # [2, 3, L]
    expected = np.stack([np.sin(angles), np.cos(angles)], -1).reshape(2, -1)
    np.testing.assert_allclose(out, expected, atol=2e-5)
    # coordinate-major: features 80..159 only depend on the filter coordinate.
    np.testing.assert_allclose(out[1, 80:82], [np.sin(100 * np.pi), np.cos(100 * np.pi)], atol=1e-4)


def test_gaussian_hand_computed():
    matrix = np.array([[1.0, 0.0], [0.0, 0.5], [0.0, 0.0]], np.float32)  # [3, 2]
    coords = np.array([[1, 2, 3]])
    maxima = np.array([4, 4, 8])
    # x = (0.25, 0.5, 0.375); angles = 2 pi (x @ matrix) = (pi/2, pi/2).
    out = encodings.gaussian_encoding(coords, maxima, matrix)
    assert out.shape == (1, 4)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out)[0], [1, 1, 0, 0], atol=1e-6)


def test_gaussian_matrix():
    m = encodings.gaussian_matrix(0, 16, 2.0)
    assert m.shape == (3, 16) and m.dtype == jnp.float32
    np.testing.assert_array_equal(m, encodings.gaussian_matrix(0, 16, 2.0))
    np.testing.assert_allclose(m, 2.0 * encodings.gaussian_matrix(0, 16, 1.0), rtol=1e-6)


def test_make_encoder_dispatch_and_size():
    coords = np.array([[0, 1, 2], [3, 4, 5]])
    encode, width = encodings.make_encoder('nern', levels=3, base=0.5)
    out = encode(coords)
    assert out.shape == (2, width) == (2, 18)
    np.testing.assert_array_equal(out, encodings.nern_encoding(coords, 3, 0.5))
    encode, width = encodings.make_encoder('gaussian', features=5, scale=1.0, seed=1)
    out = encode(coords)
    assert out.shape == (2, width) == (2, 10)
    matrix = encodings.gaussian_matrix(1, 5, 1.0)  # coordinates over their maxima + 1
    np.testing.assert_array_equal(out, encodings.gaussian_encoding(coords, [4, 5, 6], matrix))
    assert np.all(np.isfinite(out))


def test_unknown_kind():
    with pytest.raises(ValueError, match='nern, gaussian'):
        encodings.make_encoder('fourier')

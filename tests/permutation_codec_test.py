"""core.permutation_codec: exact round trips, the Lehmer digits, sizes near log2(n!)."""

import math

import numpy as np
import pytest

from nrnp.core import permutation_codec as codec


def brute_force_digits(perm):
    remaining, out = list(range(len(perm))), []
    for value in perm:
        out.append(remaining.index(value))
        remaining.remove(value)
    return out


def cases():
    rng = np.random.default_rng(0)
    yield 'n=0', np.arange(0)
    yield 'n=1', np.arange(1)
    yield 'n=2 identity', np.arange(2)
    yield 'n=2 swapped', np.array([1, 0])
    for n in (3, 5, 8, 9, 100, 256, 257, 4096):
        yield f'identity {n}', np.arange(n)
        yield f'reversed {n}', np.arange(n)[::-1].copy()
        yield f'random {n}', rng.permutation(n)
    yield 'random 65537', rng.permutation(65537)


@pytest.mark.parametrize('name,perm', list(cases()), ids=[c[0] for c in cases()])
def test_exact_round_trip(name, perm):
    data = codec.encode(perm)
    n = perm.size
    assert data.dtype == np.uint8 and data.shape == (codec.encoded_nbytes(n),)
    back = codec.decode(data, n)
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, perm)
    digits = codec.lehmer_digits(perm)
    assert (digits >= 0).all() and (digits < n - np.arange(n)).all()
    np.testing.assert_array_equal(codec.permutation_from_digits(digits), perm)


def test_digits_are_the_lehmer_code():
    rng = np.random.default_rng(1)
    for n in range(1, 70):
        perm = rng.permutation(n)
        np.testing.assert_array_equal(codec.lehmer_digits(perm), brute_force_digits(perm))
    np.testing.assert_array_equal(codec.lehmer_digits(np.arange(6)[::-1]), [5, 4, 3, 2, 1, 0])


@pytest.mark.parametrize('n', [2, 48, 256, 1024, 4096, 262_144])
def test_size_is_within_a_fifth_of_a_bit_of_log2_factorial(n):
    bits = 8 * codec.encoded_nbytes(n)
    optimum = math.lgamma(n + 1) / math.log(2)
    assert optimum <= bits <= optimum + 0.2 * n + 8
    if n == 4096:
        assert bits / n < 10.7  # vs 16 for a uint16 index per kernel


def test_large_layer_round_trip():
    perm = np.random.default_rng(2).permutation(262_144)  # a ResNet18 512x512 layer
    np.testing.assert_array_equal(codec.decode(codec.encode(perm), perm.size), perm)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match='not a permutation'):
        codec.encode(np.array([0, 0, 1]))
    with pytest.raises(ValueError, match='need'):
        codec.decode(np.zeros(4, np.uint8), 10)  # 10! needs 22 bits
    n = 100
    data = np.full(codec.encoded_nbytes(n), 0xFF, np.uint8)  # chunks above their range
    with pytest.raises(ValueError, match='not a permutation code'):
        codec.decode(data, n)

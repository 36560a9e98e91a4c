"""artifact.coding: rANS streams decode exactly; a damaged stream is refused, never garbage."""

import numpy as np
import pytest

from nrnp.artifact import coding


def segments(seed=0):
    rng = np.random.default_rng(seed)
    peaked = np.clip(np.round(rng.normal(15, 3, 4000)), 0, 30).astype(np.int32)  # 5-bit codes
    return [
        (peaked, 31),
        (rng.integers(0, 15, 333), 15),  # uniform multipliers
        (np.zeros(0, np.int32), 3),  # an empty segment
        (np.full(10, 2), 5),  # one symbol only
        (rng.integers(0, 255, 77), 255),  # 8-bit codes
    ]


def test_round_trip_and_size_near_the_entropy():
    parts = segments()
    blob = coding.encode(parts)
    assert blob.dtype == np.uint8 and blob.ndim == 1
    out = coding.decode(blob, [(s.size, a) for s, a in parts])
    for got, (want, _) in zip(out, parts):
        np.testing.assert_array_equal(got, want)
    peaked = parts[0][0]
    p = np.bincount(peaked, minlength=31) / peaked.size
    entropy_bytes = -np.sum(peaked.size * p[p > 0] * np.log2(p[p > 0])) / 8
    alone = coding.encode([parts[0]]).size
    assert alone < 1.03 * entropy_bytes + 4 + 31 * 2 + 8  # words + crc + histogram + slack
    assert alone < 4000 * 5 / 8  # beats 5-bit packing


def test_every_flipped_bit_is_refused():
    parts = segments(1)[:2]
    shapes = [(s.size, a) for s, a in parts]
    blob = coding.encode(parts)
    for i in range(0, blob.size, max(blob.size // 97, 1)):
        for bit in range(8):
            damaged = blob.copy()
            damaged[i] ^= 1 << bit
            with pytest.raises(ValueError):
                coding.decode(damaged, shapes)


def test_truncated_extended_and_mismatched_streams_are_refused():
    parts = segments(2)[:2]
    shapes = [(s.size, a) for s, a in parts]
    blob = coding.encode(parts)
    for bad in (blob[:-4], blob[:-1], np.concatenate([blob, np.zeros(4, np.uint8)]), blob[:3]):
        with pytest.raises(ValueError):
            coding.decode(bad, shapes)
    with pytest.raises(ValueError, match='histogram'):
        coding.decode(blob, [(shapes[0][0] + 1, shapes[0][1]), shapes[1]])
    with pytest.raises(ValueError, match=r'\[0, 4\)'):
        coding.encode([(np.array([4]), 4)])

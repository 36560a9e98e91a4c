"""Permutations in about log2(n!) bits: a Lehmer code packed in mixed-radix 64-bit chunks.

  data = encode(perm)                 # [encoded_nbytes(n)] uint8
  perm = decode(data, n)              # the same [n] permutation, exactly

The Lehmer digit of position i is the rank of `perm[i]` among the values not taken by
positions < i, so digit i lies in [0, n - i). Digits are grouped `chunk_digits(n)` at a
time into one mixed-radix number below the product of their radices (< 2^63), written in
the fewest bits that hold that product: within about 0.1-0.2 bits per item of
log2(n!) / n (10.66 bits for n = 4096, against 16 for a uint16 index). Both directions
are vectorised numpy over the log2(n) levels of a bottom-up merge of sorted runs.
"""

from __future__ import annotations

import numpy as np


def lehmer_digits(perm: np.ndarray) -> np.ndarray:
    """`[n]` permutation of 0..n-1 -> `[n]` int64 digits, digit i in [0, n - i).

    Digit i is `perm[i]` less the number of smaller values before it, counted by a
    bottom-up merge of sorted runs: at each level a right run's values learn how many
    values of the left run beside them are smaller.
    """
    p = np.asarray(perm, np.int64)
    n = p.size
    owner = np.empty(n, np.int64)
    owner[p] = np.arange(n)  # the position holding each value
    below = np.zeros(n, np.int64)
    idx = np.arange(n)
    run = p.copy()  # values, sorted within each block of `block`
    block = 1
    while block < n:
        span = 2 * block
        node = idx // span
        right = idx % span >= block
        key = node * n + run
        merged = np.sort(key, kind='stable')  # merges the two sorted runs of each node
        at = np.searchsorted(merged, key[right]) - node[right] * span  # place in the merge
        below[owner[run[right]]] += at - (idx[right] % span - block)
        run = merged - node * n
        block = span
    return p - below


def permutation_from_digits(digits: np.ndarray) -> np.ndarray:
    """Inverse of `lehmer_digits`: `[n]` digits (digit i < n - i) -> `[n]` int64 permutation.

    Bottom-up: a right run's values are ranks among the values its left run leaves free;
    the r-th free value beside a sorted left run s is `r + #{t : s_t - t <= r}`.
    """
    run = np.asarray(digits, np.int64).copy()
    n = run.size
    owner = np.arange(n)  # the position each entry of `run` belongs to
    idx = np.arange(n)
    block = 1
    while block < n:
        span = 2 * block
        node = idx // span
        right = idx % span >= block
        left = ~right
        free_below = node[left] * n + (run[left] - idx[left] % span)  # sorted: s_t - t
        rnode, r = node[right], run[right]
        run[right] = r + np.searchsorted(free_below, rnode * n + r, 'right') - rnode * block
        order = np.argsort(node * n + run, kind='stable')  # merge the runs again
        run, owner = run[order], owner[order]
        block = span
    perm = np.empty(n, np.int64)
    perm[owner] = run
    return perm


def chunk_digits(n: int) -> int:
    """Digits per 64-bit chunk: the product of their radices (each <= n) stays below 2^63."""
    return 63 // max(1, (n - 1).bit_length())


def _chunks(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Radices `[chunks, c]` uint64 (padded with radix 1) and chunk bit widths `[chunks]`."""
    c = chunk_digits(n)
    count = -(-n // c)
    radices = np.ones(count * c, np.uint64)
    radices[:n] = np.arange(n, 0, -1, dtype=np.uint64)
    radices = radices.reshape(count, c)
    product = np.ones(count, np.uint64)
    for t in range(c):
        product = product * radices[:, t]
    top = product - np.uint64(1)  # the largest chunk value
    widths = np.zeros(count, np.int64)
    for k in range(64):
        widths += (top >> np.uint64(k)) > 0
    return radices, widths


def encoded_nbytes(n: int) -> int:
    """Bytes `encode` writes for a permutation of n items (0 for n <= 1)."""
    if n <= 1:
        return 0
    return int(-(-_chunks(n)[1].sum() // 8))


def encode(perm: np.ndarray) -> np.ndarray:
    """`[n]` permutation of 0..n-1 -> `[encoded_nbytes(n)]` uint8.

    Raises:
      ValueError: `perm` is not a permutation of 0..n-1.
    """
    perm = np.asarray(perm)
    n = perm.size
    if perm.ndim != 1 or not np.array_equal(np.sort(perm), np.arange(n)):
        raise ValueError(f'not a permutation of 0..{n - 1} (shape {perm.shape})')
    if n <= 1:
        return np.zeros(0, np.uint8)
    radices, widths = _chunks(n)
    digits = np.zeros(radices.size, np.uint64)
    digits[:n] = lehmer_digits(perm)
    digits = digits.reshape(radices.shape)  # [chunks, c]
    value = np.zeros(len(radices), np.uint64)
    for t in range(radices.shape[1]):
        value = value * radices[:, t] + digits[:, t]
    shifts = np.arange(63, -1, -1, dtype=np.uint64)
    bits = ((value[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)  # [chunks, 64] MSB first
    keep = np.arange(64)[None, :] >= 64 - widths[:, None]
    return np.packbits(bits[keep])


def decode(data: np.ndarray, n: int) -> np.ndarray:
    """Inverse of `encode`: `[encoded_nbytes(n)]` uint8 -> `[n]` int64 permutation.

    Raises:
      ValueError: wrong length, or a chunk out of range (the bytes are not an encoding).
    """
    data = np.asarray(data, np.uint8).reshape(-1)
    if data.size != encoded_nbytes(n):
        raise ValueError(f'{n} items need {encoded_nbytes(n)} bytes, got {data.size}')
    if n <= 1:
        return np.arange(n, dtype=np.int64)
    radices, widths = _chunks(n)
    start = np.cumsum(widths) - widths  # first bit of each chunk
    window = np.concatenate([data, np.zeros(9, np.uint8)])[(start // 8)[:, None] + np.arange(9)]
    window = window.astype(np.uint64)  # [chunks, 9]: the bytes holding each chunk's bits
    high = np.zeros(len(start), np.uint64)
    for k in range(8):
        high |= window[:, k] << np.uint64(56 - 8 * k)
    shift = (start % 8).astype(np.uint64)  # the chunk's bits start `shift` bits into `high`
    high = (high << shift) | (window[:, 8] >> (np.uint64(8) - shift))  # chunk bits at the top
    drop = (np.uint64(64) - widths.astype(np.uint64)) % np.uint64(64)
    value = np.where(widths > 0, high >> drop, np.uint64(0))  # [chunks] uint64
    digits = np.zeros(radices.shape, np.int64)
    for t in range(radices.shape[1] - 1, -1, -1):
        digits[:, t] = (value % radices[:, t]).astype(np.int64)
        value = value // radices[:, t]
    if value.any():
        raise ValueError('a chunk exceeds the product of its radices: not a permutation code')
    return permutation_from_digits(digits.reshape(-1)[:n])

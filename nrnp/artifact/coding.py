"""Entropy coding of small-integer streams: rANS (`constriction`) with stored histograms.

  blob = encode([(codes, 31), (multipliers, 15)])    # [bytes] uint8
  codes, multipliers = decode(blob, [(size_a, 31), (size_b, 15)])

Each segment is a stream of integers in `[0, alphabet)` coded with its own static
categorical model: the segment's histogram, stored in front of the coded words (one
LEB128 varint per symbol count), so decoding needs only the segment sizes and alphabets
(both follow from the artefact's header). The coded words are one `constriction` ANS
stack over all segments. The blob opens with the CRC-32 of every symbol (as little-endian
int32s); decoding checks it, the histograms' sums and that the coder ends empty: a damaged
stream raises `ValueError`, never garbage.
"""

from __future__ import annotations

import zlib

import constriction
import numpy as np


def _varints(values: np.ndarray) -> bytes:
    out = bytearray()
    for v in np.asarray(values, np.int64).tolist():
        while True:
            byte, v = v & 0x7F, v >> 7
            out.append(byte | (0x80 if v else 0))
            if not v:
                break
    return bytes(out)


def _read_varints(raw: bytes, at: int, count: int) -> tuple[list[int], int]:
    values = []
    for _ in range(count):
        value = shift = 0
        while True:
            if at >= len(raw) or shift > 56:
                raise ValueError('the coded stream ends inside its histograms')
            byte = raw[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        values.append(value)
    return values, at


def _model(counts: np.ndarray):
    """The categorical model of a histogram (deterministic: float64 ratios of integers)."""
    counts = np.asarray(counts, np.float64)
    return constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)


def encode(segments: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """`[(symbols, alphabet)]` -> `[bytes]` uint8: histograms, then the ANS words.

    Args:
      segments: integer arrays (any shape, values in `[0, alphabet)`) and their alphabet sizes.
    """
    histograms, coder = [], constriction.stream.stack.AnsCoder()
    flat = []
    for symbols, alphabet in segments:
        symbols = np.asarray(symbols, np.int32).reshape(-1)
        if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet):
            raise ValueError(
                f'symbols must lie in [0, {alphabet}), got {symbols.min()}..{symbols.max()}'
            )
        counts = np.bincount(symbols, minlength=alphabet)
        histograms.append(counts)
        flat.append((symbols, counts))
    for symbols, counts in reversed(flat):  # a stack: encode backwards, decode forwards
        if symbols.size:
            coder.encode_reverse(symbols, _model(counts))
    words = np.asarray(coder.get_compressed(), np.uint32).astype('<u4').tobytes()
    head = b''.join(_varints(c) for c in histograms)
    return np.frombuffer(_crc(s for s, _ in flat) + head + words, np.uint8)


def _crc(arrays) -> bytes:
    crc = 0
    for symbols in arrays:
        crc = zlib.crc32(np.asarray(symbols, '<i4').tobytes(), crc)
    return crc.to_bytes(4, 'little')


def decode(blob: np.ndarray, segments: list[tuple[int, int]]) -> list[np.ndarray]:
    """Inverse of `encode` for segments of `(size, alphabet)`: int32 arrays `[size]`.

    Raises:
      ValueError: histograms that do not match the sizes, a word stream of the wrong
        length, or a stream that does not decode to exactly these symbols.
    """
    raw, at, counts = bytes(np.asarray(blob, np.uint8)), 4, []
    if len(raw) < 4:
        raise ValueError(f'a coded stream of {len(raw)} bytes has no checksum')
    for size, alphabet in segments:
        found, at = _read_varints(raw, at, alphabet)
        if sum(found) != size:
            raise ValueError(f'a histogram counts {sum(found)} symbols, its segment holds {size}')
        counts.append(np.asarray(found))
    if (len(raw) - at) % 4:
        raise ValueError(f'the coded words take {len(raw) - at} bytes, not a multiple of 4')
    words = np.frombuffer(raw[at:], '<u4').astype(np.uint32)
    coder, out = constriction.stream.stack.AnsCoder(words), []
    for (size, _), histogram in zip(segments, counts):
        if not size:
            out.append(np.zeros(0, np.int32))
            continue
        symbols = np.asarray(coder.decode(_model(histogram), size), np.int32)
        if not np.array_equal(np.bincount(symbols, minlength=histogram.size), histogram):
            raise ValueError(
                'the coded stream is damaged (its symbols do not match their histogram)'
            )
        out.append(symbols)
    if not coder.is_empty() or _crc(out) != raw[:4]:
        raise ValueError('the coded stream is damaged (its symbols do not match their checksum)')
    return out

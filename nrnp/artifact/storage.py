"""The byte layout of `.nrnp` format versions 2 to 4: a zlib header and three byte blobs.

  members = {'header': encode_header(h), 'predictor': pack_predictor(stored)[0], ...}
  blob, coding_name, sizes = pack_predictor(stored, version=4)
  stored = unpack_predictor(blob, header['predictor_leaves'], coding_name)   # the reader's

Every part is one `uint8` member, its pieces concatenated in header order with no offsets
stored: each piece's size follows from the header (shapes, dtypes, storage, layer sizes),
so a blob of the wrong length is refused. All multi-byte numbers are little-endian.
One member per part keeps the zip/npy framing (~250 bytes per member) out of the size:
version 1 spent ~27 kB of a ResNet20 artefact on it.
"""

from __future__ import annotations

import json
import math
import zlib

import jax.numpy as jnp
import numpy as np

from nrnp.artifact import coding
from nrnp.core import permutation_codec, quantize

ORDERING_CODEC = 'lehmer-mixed-radix-64'  # permutation_codec, named in the header
# The 'separable' ordering as its two factors per layer (filters [O], channel slots [S]):
# about log2(O!) + log2(S!) bits instead of log2((O * S)!) (683 B against 37,085 B for
# ResNet20). Files that stored it whole (ORDERING_CODEC) still read.
SEPARABLE_CODEC = 'lehmer-mixed-radix-64-separable'


def encode_header(header: dict) -> np.ndarray:
    """The header dict as zlib-compressed UTF-8 JSON, `[bytes]` uint8."""
    raw = json.dumps(header, separators=(',', ':')).encode()
    return np.frombuffer(zlib.compress(raw, 9), np.uint8)


def decode_header(member: np.ndarray):
    """A `header` member (plain JSON in version 1, zlib-compressed JSON in version 2).

    Raises:
      ValueError: neither.
    """
    raw = bytes(np.asarray(member).astype(np.uint8))
    if raw[:1] != b'{':
        try:
            raw = zlib.decompress(raw)
        except zlib.error as e:
            raise ValueError(f'the header is neither JSON nor zlib-compressed JSON ({e})') from e
    return json.loads(raw.decode())


def _little(x: np.ndarray) -> bytes:
    """Raw little-endian bytes of `x` (bfloat16 as its 16-bit pattern)."""
    x = np.ascontiguousarray(x)
    if x.dtype.kind not in 'biufc':
        x = x.view(f'u{x.dtype.itemsize}')
    return x.astype(x.dtype.newbyteorder('<'), copy=False).tobytes()


def _read(blob: np.ndarray, at: int, nbytes: int, what: str) -> np.ndarray:
    if at + nbytes > blob.size:
        raise ValueError(f'{what} needs bytes {at}..{at + nbytes} of a {blob.size}-byte blob')
    return blob[at : at + nbytes]


def _as(raw: np.ndarray, dtype, shape) -> np.ndarray:
    """Little-endian bytes -> a native array of `dtype` and `shape` (a copy)."""
    dtype = jnp.dtype(dtype)
    if dtype.kind not in 'biufc':
        stored = np.frombuffer(raw.tobytes(), np.dtype(f'<u{dtype.itemsize}'))
        return stored.astype(f'u{dtype.itemsize}').view(dtype).reshape(shape)
    return np.frombuffer(raw.tobytes(), dtype.newbyteorder('<')).astype(dtype).reshape(shape)


def leaf_nbytes(shape, storage: str) -> int:
    """Bytes of one version 2/3 predictor leaf (values, then per-channel scales)."""
    size = math.prod(shape)
    values = {'float32': 4 * size, 'bfloat16': 2 * size, 'int8': size, 'int4': (size + 1) // 2}
    scales = 4 * shape[-1] if storage in ('int8', 'int4') else 0
    return values[storage] + scales


_FLOAT = {'float32': 4, 'bfloat16': 2, 'float16': 2}


def _raw_nbytes(entry: dict) -> int:
    """Bytes of a version 4 leaf's raw part: float values, or an int leaf's float16 scales."""
    shape = entry['shape']
    return (
        2 * shape[-1] if entry['storage'] == 'int' else _FLOAT[entry['storage']] * math.prod(shape)
    )


def _segments(entries: list[dict]) -> list[tuple[int, int]]:
    """(count, alphabet) of every integer stream of version 4 leaves: codes, then multipliers."""
    ints = [e for e in entries if e['storage'] == 'int']
    codes = [(math.prod(e['shape']), 2 ** e['bits'] - 1) for e in ints]
    groups = [
        (quantize.num_groups(e['shape'][0], e['group']) * e['shape'][1], 2**quantize.SCALE_BITS - 1)
        for e in ints
    ]
    return codes + groups


def _symbols(stored: dict) -> list[np.ndarray]:
    """The integer streams of `_segments`: codes shifted to 0..2 qmax, multipliers to 0..M-1."""
    ints = [leaf for leaf in stored.values() if leaf.storage == 'int']
    codes = [leaf.values.astype(np.int32) + (2 ** (leaf.bits - 1) - 1) for leaf in ints]
    return codes + [leaf.multipliers.astype(np.int32) - 1 for leaf in ints]


def _packed(symbols: list[np.ndarray], segments: list[tuple[int, int]]) -> bytes:
    return b''.join(
        quantize.pack_bits(s, max(a - 1, 1).bit_length()).tobytes()
        for s, (_, a) in zip(symbols, segments)
    )


def _unpacked(raw: np.ndarray, segments: list[tuple[int, int]]) -> list[np.ndarray]:
    out, at = [], 0
    for count, alphabet in segments:
        bits = max(alphabet - 1, 1).bit_length()
        nbytes = -(-count * bits // 8)
        out.append(quantize.unpack_bits(_read(raw, at, nbytes, 'packed codes'), bits, count))
        at += nbytes
    if at != raw.size:
        raise ValueError(f'the packed codes take {raw.size} bytes, their leaves {at}')
    return [x.astype(np.int32) for x in out]


def predictor_entries(stored: dict) -> list[dict]:
    """The header's 'predictor_leaves': path, shape, dtype, storage (and bits, group)."""
    out = []
    for path, leaf in stored.items():
        entry = {'path': list(path), 'shape': list(leaf.shape), 'dtype': 'float32'}
        entry['storage'] = leaf.storage
        if leaf.storage == 'int':
            entry.update(bits=leaf.bits, group=leaf.group)
        out.append(entry)
    return out


def pack_predictor(stored: dict, version: int) -> tuple[np.ndarray, str, tuple[int, int]]:
    """`{path: QuantizedLeaf}` -> (`[bytes]` uint8, coding, (bytes of the integer codes as
    stored, as bit-packed)): see `storage` of the module docstring.

    Version 2/3: per leaf its values, then its scales (coding 'none'). Version 4: per leaf
    its raw part (float values, or an int leaf's float16 column scales), then every int
    leaf's codes and multipliers as one stream, ANS-coded ('ans', `coding`) or bit-packed
    ('packed'), whichever is smaller.
    """
    if version < 4:
        out = []
        for leaf in stored.values():
            out.append(_little(leaf.values))
            if leaf.scale is not None:
                out.append(_little(np.asarray(leaf.scale, np.float32)))
        return np.frombuffer(b''.join(out), np.uint8), 'none', (0, 0)
    raw = b''.join(
        _little(leaf.scale if leaf.storage == 'int' else leaf.values) for leaf in stored.values()
    )
    segments = _segments(predictor_entries(stored))
    symbols = _symbols(stored)
    packed = _packed(symbols, segments)
    coded = (
        coding.encode(list(zip(symbols, [a for _, a in segments]))).tobytes() if segments else b''
    )
    best, name = (coded, 'ans') if len(coded) < len(packed) else (packed, 'packed')
    return np.frombuffer(raw + best, np.uint8), name, (len(best), len(packed))


def unpack_predictor(blob: np.ndarray, entries: list[dict], coding_name: str = 'none') -> dict:
    """Inverse of `pack_predictor`; `entries` are the header's 'predictor_leaves'.

    Returns:
      `{path tuple: QuantizedLeaf}`.

    Raises:
      ValueError: unknown storage, or a blob of the wrong length or damaged.
    """
    if coding_name == 'none':
        return _unpack_v2(blob, entries)
    out, at, raws = {}, 0, []
    for entry in entries:
        if entry['storage'] not in ('int', *_FLOAT):
            raise ValueError(
                f'predictor leaf {entry["path"]}: unknown storage {entry["storage"]!r}'
            )
        nbytes = _raw_nbytes(entry)
        raws.append(_read(blob, at, nbytes, f'predictor leaf {"/".join(entry["path"])}'))
        at += nbytes
    segments = _segments(entries)
    if coding_name == 'ans':
        symbols = coding.decode(blob[at:], segments) if segments else []
    elif coding_name == 'packed':
        symbols = _unpacked(blob[at:], segments)
    else:
        raise ValueError(f'unknown predictor coding {coding_name!r}')
    ints = [e for e in entries if e['storage'] == 'int']
    codes, multipliers = iter(symbols[: len(ints)]), iter(symbols[len(ints) :])
    for entry, raw in zip(entries, raws):
        shape, storage = tuple(entry['shape']), entry['storage']
        if storage == 'int':
            qmax = 2 ** (entry['bits'] - 1) - 1
            groups = quantize.num_groups(shape[0], entry['group'])
            leaf = quantize.QuantizedLeaf(
                'int',
                (next(codes) - qmax).astype(np.int8).reshape(shape),
                _as(raw, np.float16, (shape[-1],)),
                shape,
                bits=entry['bits'],
                group=entry['group'],
                multipliers=(next(multipliers) + 1).astype(np.uint8).reshape(groups, shape[1]),
            )
        else:
            leaf = quantize.QuantizedLeaf(storage, _as(raw, storage, shape), None, shape)
        out[tuple(entry['path'])] = leaf
    return out


def _unpack_v2(blob: np.ndarray, entries: list[dict]) -> dict:
    """Versions 2 and 3: per leaf its values, then for 'int8'/'int4' its float32 scales."""
    out, at = {}, 0
    for entry in entries:
        shape, storage = tuple(entry['shape']), entry['storage']
        if storage not in ('float32', 'bfloat16', 'int8', 'int4'):
            raise ValueError(f'predictor leaf {entry["path"]}: unknown storage {storage!r}')
        what = f'predictor leaf {"/".join(entry["path"])}'
        nbytes = leaf_nbytes(shape, storage)
        raw = _read(blob, at, nbytes, what)
        at += nbytes
        size, scale = math.prod(shape), None
        if storage in ('int8', 'int4'):
            count = size if storage == 'int8' else (size + 1) // 2
            values = raw[:count].copy()
            values = values.view(np.int8).reshape(shape) if storage == 'int8' else values
            scale = _as(raw[count:], np.float32, (shape[-1],))
        else:
            values = _as(raw, 'bfloat16' if storage == 'bfloat16' else np.float32, shape)
        out[tuple(entry['path'])] = quantize.QuantizedLeaf(storage, values, scale, shape)
    if at != blob.size:
        raise ValueError(f'the predictor blob has {blob.size} bytes, its leaves take {at}')
    return out


def pack_orderings(positions: list[np.ndarray]) -> np.ndarray:
    """Per represented layer a permutation `[O * I]` -> `[bytes]` uint8 (`permutation_codec`)."""
    parts = [permutation_codec.encode(p) for p in positions]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def ordering_codec(ordering: str) -> str:
    """The codec a new file stores `ordering` with."""
    return SEPARABLE_CODEC if ordering == 'separable' else ORDERING_CODEC


def pack_separable(positions: list[np.ndarray], slots: list[int]) -> np.ndarray:
    """Per layer its filter and channel-slot permutations (`[O]`, `[S]`), from positions
    `[O * S]` of the form `filter_pos[f] * S + channel_pos[c]` at slot `f * S + c`.

    Raises:
      ValueError: positions that do not factor so (not a 'separable' ordering).
    """
    parts = []
    for i, (flat, s) in enumerate(zip(positions, slots)):
        flat = np.asarray(flat, np.int64).reshape(-1, s)  # [O, S]
        fpos, cpos = flat[:, 0] // s, flat[0] % s
        if not np.array_equal(flat, fpos[:, None] * s + cpos[None, :]):
            raise ValueError(f'the ordering of layer {i} is not separable')
        parts += [permutation_codec.encode(fpos), permutation_codec.encode(cpos)]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def unpack_separable(blob: np.ndarray, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Inverse of `pack_separable` for layers of `(O, S)` slots: `[O * S]` int64 positions.

    Raises:
      ValueError: a blob of the wrong length, or bytes that encode no permutation.
    """
    out, at = [], 0
    for i, (filters, slots) in enumerate(shapes):
        factors = []
        for n, what in ((filters, 'filters'), (slots, 'channels')):
            nbytes = permutation_codec.encoded_nbytes(n)
            raw = _read(blob, at, nbytes, f'ordering of layer {i} ({what})')
            try:
                factors.append(permutation_codec.decode(raw, n))
            except ValueError as e:
                raise ValueError(
                    f'ordering of layer {i} ({what}) is not a permutation code ({e})'
                ) from e
            at += nbytes
        out.append((factors[0][:, None] * slots + factors[1][None, :]).reshape(-1))
    if at != blob.size:
        raise ValueError(f'the ordering blob has {blob.size} bytes, its layers take {at}')
    return out


def unpack_orderings(blob: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Inverse of `pack_orderings` for layers of `sizes` kernels: int64 permutations.

    Raises:
      ValueError: a blob of the wrong length, or bytes that encode no permutation.
    """
    out, at = [], 0
    for i, n in enumerate(sizes):
        nbytes = permutation_codec.encoded_nbytes(n)
        raw = _read(blob, at, nbytes, f'ordering of layer {i}')
        try:
            out.append(permutation_codec.decode(raw, n))
        except ValueError as e:
            raise ValueError(f'ordering of layer {i} is not a valid permutation code ({e})') from e
        at += nbytes
    if at != blob.size:
        raise ValueError(f'the ordering blob has {blob.size} bytes, its layers take {at}')
    return out


def pack_leaves(arrays: list[np.ndarray]) -> np.ndarray:
    """Copied leaves, raw little-endian bytes concatenated, `[bytes]` uint8."""
    return np.frombuffer(b''.join(_little(np.asarray(x)) for x in arrays), np.uint8)


def unpack_leaves(blob: np.ndarray, specs: list[tuple[tuple[int, ...], str]]) -> list:
    """Inverse of `pack_leaves` for leaves of `(shape, dtype)`: numpy arrays.

    Raises:
      ValueError: a blob of the wrong length.
    """
    out, at = [], 0
    for shape, dtype in specs:
        nbytes = math.prod(shape) * jnp.dtype(dtype).itemsize
        out.append(_as(_read(blob, at, nbytes, f'copied leaf {len(out)}'), dtype, shape))
        at += nbytes
    if at != blob.size:
        raise ValueError(f'the copied blob has {blob.size} bytes, its leaves take {at}')
    return out

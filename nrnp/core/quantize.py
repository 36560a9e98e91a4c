"""Predictor weights at a smaller width: bf16, or 2- to 8-bit integers with per-group scales.

  scheme = Scheme('int5', group=8)               # how the artefact stores the predictor
  leaf = quantize_leaf(w, scheme)                # a QuantizedLeaf: what the artefact keeps
  w_q = dequantize_leaf(leaf)                    # float32 again: what the artefact rebuilds with
  pparams_fq = fake_quantize_tree(pparams, scheme)   # in a jitted step: same values, STE gradient

Modes (`MODES`): 'none' keeps float32; 'bf16' rounds every leaf to bfloat16; 'intB'
(B = 2..8; 'lowbit' is `LOWBIT`) stores every Dense kernel `w [in, out]` as B-bit codes
with two-level scales, and biases (under 1 % of a predictor) as float16:

  S[o]    = float16(max_i |w[i, o]| / qmax)             one per output column, qmax = 2^(B-1) - 1
  m[j, o] in 1..M (M = 2^SCALE_BITS - 1)                one per group j of `group` inputs
  s[j, o] = S[o] * MULTIPLIERS[m[j, o]]                 the group's step
  q[i, o] = clip(round(w[i, o] / s[j, o]), -qmax, qmax) B-bit code of w[i, o] (i in group j)
  w ~ q * s

Each group takes the multiplier of least squared error (an exhaustive search over the M
steps the file can hold: MSE-optimal clipping), so a group of small weights gets a fine
step and an outlier costs only its own group. A group costs SCALE_BITS bits instead of a
float: at 8 inputs a group (the default), 0.5 bits per weight. `group=0` gives one group per column.

Float32 products only (`q * (S * MULTIPLIERS[m])`), so numpy (the reader) and XLA (the
training step) compute the dequantized weights bit for bit alike; the codes themselves are
always computed by the same jitted function (`_int_parts`), in training and for storage.
Files of nrnp 0.2 stored 'int8' and 'int4' with one float32 scale per column; those leaves
are still read (`dequantize_leaf`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from nrnp import choices

LOWBIT = 'int6'  # the best sub-8-bit setting measured (docs/results.md, "Per byte")
MODES = choices.QUANTIZE_MODES
SCALE_BITS = 4  # bits of a group's scale multiplier
MULTIPLIERS = np.arange(2**SCALE_BITS, dtype=np.float32) / np.float32(2**SCALE_BITS - 1)
FLOAT16_MAX = 65504.0


@dataclasses.dataclass(frozen=True)
class Scheme:
    """How a predictor is stored (hashable: a static argument of jitted steps).

    Attributes:
      mode: one of `MODES` ('lowbit' is resolved to `LOWBIT` on construction).
      group: inputs per scale group of an int mode's kernels (0: one group per column).
      edge_bits: an int mode's bits for the first and last Dense layers (0: `bits`).
    """

    mode: str = 'none'
    group: int = 8
    edge_bits: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f'quantize mode must be one of {", ".join(MODES)}, got {self.mode!r}')
        if self.mode == 'lowbit':
            object.__setattr__(self, 'mode', LOWBIT)
        if self.group < 0:
            raise ValueError(f'quantize group must be >= 0 (0: one per column), got {self.group}')
        if self.edge_bits and not 2 <= self.edge_bits <= 8:
            raise ValueError(f'quantize edge bits must be 0 or 2..8, got {self.edge_bits}')

    def layers(self, names) -> dict:
        """`{layer name: Scheme}` for a predictor's Dense layers ('dense0'..'denseL'):
        this scheme, or for the first and last of an int mode with `edge_bits`, its bits."""
        order = sorted(names, key=lambda n: int(n[5:]) if n[5:].isdigit() else 0)
        edges = {order[0], order[-1]} if self.edge_bits and self.bits and order else set()
        edge = Scheme(f'int{self.edge_bits}', self.group) if edges else self
        return {n: edge if n in edges else self for n in order}

    @property
    def bits(self) -> int:
        """Bits of an int mode's codes (0 for 'none' and 'bf16')."""
        found = re.fullmatch(r'int(\d)', self.mode)
        return int(found.group(1)) if found else 0

    def storage(self, rank: int) -> str:
        """How a leaf of rank `rank` is stored: 'float32', 'bfloat16', 'float16' or 'int'."""
        if self.mode == 'none':
            return 'float32'
        if self.mode == 'bf16':
            return 'bfloat16'
        return 'int' if rank >= 2 else 'float16'


NONE = Scheme()


@dataclasses.dataclass(frozen=True)
class QuantizedLeaf:
    """One predictor leaf as stored.

    Attributes:
      storage: 'float32', 'bfloat16', 'float16' or 'int' (and, read from older files only,
        'int8' / 'int4': one float32 scale per column).
      values: the float leaf (float storages); 'int': `shape` int8 codes in [-qmax, qmax];
        'int8': `shape` int8; 'int4': `[ceil(size / 2)]` uint8, two codes per byte.
      scale: 'int': `[out]` float16 column scales S; 'int8'/'int4': `[out]` float32 scales.
      shape: the leaf's shape (`[in, out]` for int storages).
      bits: 'int': bits of the codes.
      group: 'int': inputs per scale group (0: the whole column).
      multipliers: 'int': `[groups, out]` uint8 in 1..M, each group's multiplier index.
    """

    storage: str
    values: np.ndarray
    scale: np.ndarray | None
    shape: tuple[int, ...]
    bits: int = 0
    group: int = 0
    multipliers: np.ndarray | None = None


def group_size(rows: int, group: int) -> int:
    """Inputs per group of a kernel with `rows` inputs (`group` 0 or >= rows: all of them)."""
    return rows if group <= 0 or group >= rows else group


def num_groups(rows: int, group: int) -> int:
    """Scale groups per column of a kernel with `rows` inputs."""
    return -(-rows // group_size(rows, group)) if rows else 0


def _step(scale, multipliers, xp):
    """`[out]` column scales and `[groups, out]` multiplier indices -> `[groups, out]` steps."""
    return scale[None, :] * xp.asarray(MULTIPLIERS)[multipliers]


def _codes(grouped, step, qmax: int, xp):
    """`[groups, g, out]` weights on `[groups, out]` steps -> integer-valued float32 codes."""
    safe = xp.where(step > 0, step, xp.float32(1))
    inverse = xp.float32(1) / safe  # one correctly rounded division per group
    return xp.clip(xp.round(grouped * inverse[:, None, :]), -qmax, qmax)


@functools.partial(jax.jit, static_argnames=('bits', 'group'))
def _int_parts(w, bits: int, group: int):
    """`w [in, out]` float32 -> (codes [in, out], S [out] (float16 values), m [groups, out]).

    The one place codes are chosen: the training step's rounding and the stored file agree.
    """
    qmax = 2 ** (bits - 1) - 1
    rows, out = w.shape
    g = group_size(rows, group)
    groups = num_groups(rows, group)
    grouped = jnp.pad(w, ((0, groups * g - rows), (0, 0))).reshape(groups, g, out)
    column = jnp.minimum(jnp.max(jnp.abs(w), axis=0) * jnp.float32(1 / qmax), FLOAT16_MAX)
    column = column.astype(jnp.float16).astype(jnp.float32)  # [out], as stored
    best_err = jnp.full((groups, out), jnp.inf, jnp.float32)
    best = jnp.ones((groups, out), jnp.int32)
    for m in range(1, len(MULTIPLIERS)):  # exhaustive: the M steps a file can hold
        step = jnp.broadcast_to(column[None, :] * MULTIPLIERS[m], (groups, out))
        err = jnp.sum(jnp.square(_codes(grouped, step, qmax, jnp) * step[:, None] - grouped), 1)
        better = err < best_err
        best_err, best = jnp.where(better, err, best_err), jnp.where(better, m, best)
    codes = _codes(grouped, _step(column, best, jnp), qmax, jnp)
    return codes.reshape(groups * g, out)[:rows], column, best


def _int_dequantize(codes, scale, multipliers, group: int, xp):
    """Codes `[in, out]`, S `[out]`, m `[groups, out]` -> `[in, out]` float32 `q * s`."""
    rows, out = codes.shape
    g = group_size(rows, group)
    step = _step(xp.asarray(scale, xp.float32), multipliers, xp)  # [groups, out]
    rows_step = xp.repeat(step, g, axis=0)[:rows]  # [in, out]
    return xp.asarray(codes, xp.float32) * rows_step


@jax.custom_vjp
def _straight_through(w, rounded):
    """`rounded` forward (exactly), the identity gradient into `w`."""
    return rounded


_straight_through.defvjp(lambda w, rounded: (rounded, None), lambda _, g: (g, jnp.zeros_like(g)))


def fake_quantize(w, scheme: Scheme):
    """`w` as the artefact stores it, with a straight-through gradient (jittable).

    The forward value is exactly `dequantize_leaf(quantize_leaf(w, scheme))`; the gradient
    with respect to `w` is the identity.
    """
    storage = scheme.storage(w.ndim)
    if storage == 'float32':
        return w
    if storage in ('bfloat16', 'float16'):
        rounded = w.astype(storage).astype(jnp.float32)
    else:
        parts = _int_parts(jax.lax.stop_gradient(w), bits=scheme.bits, group=scheme.group)
        rounded = _int_dequantize(parts[0], parts[1], parts[2], scheme.group, jnp)
    return _straight_through(w, jax.lax.stop_gradient(rounded))


def fake_quantize_tree(pparams, scheme: Scheme):
    """`fake_quantize` on every leaf (`{layer: {name: leaf}}`, each layer by its scheme,
    `Scheme.layers`); the same pytree for a float32 scheme."""
    if scheme.mode == 'none':
        return pparams
    schemes = scheme.layers(pparams)
    return {
        n: jax.tree.map(lambda w, s=schemes[n]: fake_quantize(w, s), v) for n, v in pparams.items()
    }


def quantize_leaf(w, scheme: Scheme) -> QuantizedLeaf:
    """One predictor leaf (`[in, out]` kernel or `[out]` bias) in its stored form."""
    w = np.asarray(w, np.float32)
    storage = scheme.storage(w.ndim)
    if storage == 'float32':
        return QuantizedLeaf(storage, w, None, w.shape)
    if storage in ('bfloat16', 'float16'):
        dtype = ml_dtypes.bfloat16 if storage == 'bfloat16' else np.float16
        return QuantizedLeaf(storage, w.astype(dtype), None, w.shape)
    if w.ndim != 2:
        raise ValueError(f'int storage needs [in, out] kernels, got shape {w.shape}')
    codes, column, multipliers = jax.device_get(
        _int_parts(jnp.asarray(w), bits=scheme.bits, group=scheme.group)
    )
    return QuantizedLeaf(
        'int',
        np.asarray(codes).astype(np.int8),
        np.asarray(column).astype(np.float16),
        w.shape,
        bits=scheme.bits,
        group=scheme.group,
        multipliers=np.asarray(multipliers).astype(np.uint8),
    )


def dequantize_leaf(leaf: QuantizedLeaf) -> np.ndarray:
    """A stored leaf as float32 of `leaf.shape`."""
    if leaf.storage in ('float32', 'bfloat16', 'float16'):
        return np.asarray(leaf.values).astype(np.float32).reshape(leaf.shape)
    if leaf.storage == 'int':
        return _int_dequantize(leaf.values, leaf.scale, leaf.multipliers, leaf.group, np)
    size = math.prod(leaf.shape)  # nrnp 0.2's per-column 'int8' / 'int4'
    q = leaf.values if leaf.storage == 'int8' else unpack_int4(leaf.values, size)
    return np.asarray(q, np.float32).reshape(leaf.shape) * np.asarray(leaf.scale, np.float32)


def quantize_tree(pparams, scheme: Scheme):
    """Every leaf of a params pytree `{layer: {name: leaf}}` in its stored form
    (`QuantizedLeaf` leaves; each layer by its scheme, `Scheme.layers`)."""
    schemes = scheme.layers(pparams)
    return {
        n: jax.tree.map(lambda w, s=schemes[n]: quantize_leaf(w, s), v) for n, v in pparams.items()
    }


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned `values < 2^bits`, any shape -> `[ceil(size * bits / 8)]` uint8, LSB first.

    Value k occupies bits `k * bits .. (k + 1) * bits - 1` of the little-endian bit stream.
    """
    flat = np.asarray(values).reshape(-1).astype(np.uint16)
    if flat.size and int(flat.max()) >> bits:
        raise ValueError(f'{bits}-bit values must be below {2**bits}, got {int(flat.max())}')
    stream = (flat[:, None] >> np.arange(bits, dtype=np.uint16)) & 1  # [size, bits]
    return np.packbits(stream.astype(np.uint8).reshape(-1), bitorder='little')


def unpack_bits(packed: np.ndarray, bits: int, size: int) -> np.ndarray:
    """Inverse of `pack_bits`: `[ceil(size * bits / 8)]` uint8 -> `[size]` uint16."""
    packed = np.asarray(packed, np.uint8).reshape(-1)
    if packed.size != -(-size * bits // 8):
        raise ValueError(
            f'{size} {bits}-bit values need {-(-size * bits // 8)} bytes, got {packed.size}'
        )
    stream = np.unpackbits(packed, bitorder='little')[: size * bits].reshape(size, bits)
    return (stream.astype(np.uint16) << np.arange(bits, dtype=np.uint16)).sum(1).astype(np.uint16)


def unpack_int4(packed: np.ndarray, size: int) -> np.ndarray:
    """nrnp 0.2's int4 leaves: `[ceil(size / 2)]` uint8, value 2k in the low nibble of byte k
    (two's complement) -> `[size]` int8."""
    nibbles = unpack_bits(packed, 4, size).astype(np.int16)
    return ((nibbles ^ 8) - 8).astype(np.int8)

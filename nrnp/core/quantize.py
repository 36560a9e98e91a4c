"""Predictor weights at a smaller width: bf16, or int8/int4 with per-output-channel scales.

  stored = quantize_tree(pparams, 'int8')      # {..: QuantizedLeaf}, what the artefact keeps
  pparams_q = dequantize_tree(stored)          # float32 again: what the artefact rebuilds with
  pparams_fq = fake_quantize_tree(pparams, 'int8')  # in a jitted step: same values, STE gradient

Modes (`MODES`): 'none' keeps float32; 'bf16' rounds every leaf to bfloat16 (round to
nearest even); 'int8' and 'int4' quantize each Dense kernel `[in, out]` symmetrically with
one float32 scale per output column, `scale[o] = max_i |w[i, o]| / qmax` (qmax 127 or 7),
`q = clip(round(w / scale), -qmax, qmax)` (int8), `w ~ q * scale` with
`|w - q * scale| <= scale / 2`.
In the int modes biases (rank-1 leaves) stay float32: they are under 1 % of a predictor's
parameters and a per-tensor bias scale would add an error to every pre-activation. int4
values are stored two per byte (`pack_int4`).

The same formula is written once (`_qdq`) for numpy (storage) and jax.numpy (training), so
the fake-quantized forward pass sees the values the artefact stores.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

MODES = ('none', 'bf16', 'int8', 'int4')
QMAX = {'int8': 127, 'int4': 7}


@dataclasses.dataclass(frozen=True)
class QuantizedLeaf:
    """One predictor leaf as stored.

    Attributes:
      storage: 'float32', 'bfloat16', 'int8' or 'int4'.
      values: float32 or bfloat16 `shape`; int8 `shape` (int8); int4: `[ceil(size / 2)]`
        uint8, two values per byte (`pack_int4`).
      scale: `[shape[-1]]` float32 per-output-channel scales (int8/int4), else None.
      shape: the leaf's shape.
    """

    storage: str
    values: np.ndarray
    scale: np.ndarray | None
    shape: tuple[int, ...]


def storage_of(mode: str, rank: int) -> str:
    """How a leaf of rank `rank` is stored under `mode` (biases stay float in int modes)."""
    if mode not in MODES:
        raise ValueError(f'quantize mode must be one of {", ".join(MODES)}, got {mode!r}')
    if mode == 'none':
        return 'float32'
    if mode == 'bf16':
        return 'bfloat16'
    return mode if rank >= 2 else 'float32'


def _qdq(w, qmax: int, xp):
    """`w [..., out]` -> (q [..., out] integer-valued float32, scale [out] float32).

    Only multiplications by explicit reciprocals (each a correctly rounded division):
    XLA rewrites `w / broadcast(scale)` as a multiplication by `1 / scale`, so this is
    the form numpy and jit compute bit for bit alike.
    """
    axes = tuple(range(w.ndim - 1))
    scale = xp.max(xp.abs(w), axis=axes) * xp.float32(1 / qmax)  # [out]
    safe = xp.where(scale > 0, scale, xp.float32(1))  # an all-zero column stays zero
    q = xp.clip(xp.round(w * (xp.float32(1) / safe)), -qmax, qmax)  # [..., out]
    return q, scale


def quantize_kernel(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel quantization of a kernel.

    Args:
      w: `[in, out]` (any rank >= 2: the last axis is the output channel) float32.
      bits: 8 or 4.

    Returns:
      (q `[in, out]` int8 in [-qmax, qmax], scale `[out]` float32), qmax = 2^(bits-1) - 1.
    """
    w = np.asarray(w, np.float32)
    q, scale = _qdq(w, 2 ** (bits - 1) - 1, np)
    return q.astype(np.int8), scale.astype(np.float32)


def dequantize_kernel(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """`q [in, out]` int8, `scale [out]` float32 -> `[in, out]` float32 `q * scale`."""
    return np.asarray(q, np.float32) * np.asarray(scale, np.float32)


def pack_int4(q: np.ndarray) -> np.ndarray:
    """`q` int8 values in [-8, 7], any shape -> `[ceil(q.size / 2)]` uint8.

    Value 2k goes to the low nibble of byte k, value 2k + 1 to the high nibble (two's
    complement nibbles); an odd count leaves the last high nibble 0.
    """
    flat = np.asarray(q, np.int8).reshape(-1)
    if flat.size and (flat.min() < -8 or flat.max() > 7):
        raise ValueError(f'int4 values must be in [-8, 7], got [{flat.min()}, {flat.max()}]')
    nibbles = (flat.astype(np.uint8) & 0x0F).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return nibbles[0::2] | (nibbles[1::2] << 4)


def unpack_int4(packed: np.ndarray, size: int) -> np.ndarray:
    """Inverse of `pack_int4`: `[ceil(size / 2)]` uint8 -> `[size]` int8."""
    packed = np.asarray(packed, np.uint8).reshape(-1)
    if packed.size != (size + 1) // 2:
        raise ValueError(f'{size} int4 values need {(size + 1) // 2} bytes, got {packed.size}')
    nibbles = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(-1)[:size]  # [size]
    return ((nibbles.astype(np.int16) ^ 8) - 8).astype(np.int8)


def quantize_leaf(w, mode: str) -> QuantizedLeaf:
    """One predictor leaf (`[in, out]` kernel or `[out]` bias) in its stored form."""
    w = np.asarray(w, np.float32)
    storage = storage_of(mode, w.ndim)
    if storage == 'float32':
        return QuantizedLeaf(storage, w, None, w.shape)
    if storage == 'bfloat16':
        return QuantizedLeaf(storage, w.astype(ml_dtypes.bfloat16), None, w.shape)
    q, scale = quantize_kernel(w, 8 if storage == 'int8' else 4)
    values = q if storage == 'int8' else pack_int4(q)
    return QuantizedLeaf(storage, values, scale, w.shape)


def dequantize_leaf(leaf: QuantizedLeaf) -> np.ndarray:
    """A stored leaf as float32 of `leaf.shape`."""
    if leaf.storage in ('float32', 'bfloat16'):
        return np.asarray(leaf.values).astype(np.float32).reshape(leaf.shape)
    size = int(np.prod(leaf.shape))
    q = leaf.values if leaf.storage == 'int8' else unpack_int4(leaf.values, size)
    return dequantize_kernel(np.asarray(q).reshape(leaf.shape), leaf.scale)


def quantize_tree(pparams, mode: str):
    """Every leaf of a params pytree in its stored form (`QuantizedLeaf` leaves)."""
    return jax.tree.map(lambda w: quantize_leaf(w, mode), pparams)


def dequantize_tree(stored):
    """Inverse direction of `quantize_tree`: float32 numpy leaves, same structure."""
    return jax.tree.map(dequantize_leaf, stored, is_leaf=lambda x: isinstance(x, QuantizedLeaf))


def fake_quantize(w, mode: str):
    """`w` rounded as the artefact stores it, with a straight-through gradient (jittable).

    The forward value is exactly `dequantize_leaf(quantize_leaf(w, mode))` (the rounding
    error added back is exact in float32); the gradient with respect to `w` is the identity.

    Args:
      w: a float32 leaf (`[in, out]` kernel or `[out]` bias).
      mode: one of `MODES`.
    """
    storage = storage_of(mode, w.ndim)
    if storage == 'float32':
        return w
    if storage == 'bfloat16':
        rounded = w.astype(jnp.bfloat16).astype(jnp.float32)
    else:
        q, scale = _qdq(w, QMAX[storage], jnp)
        rounded = q * scale
    return w + jax.lax.stop_gradient(rounded - w)


def fake_quantize_tree(pparams, mode: str):
    """`fake_quantize` on every leaf; the identity (the same pytree) for mode 'none'."""
    if mode == 'none':
        return pparams
    return jax.tree.map(lambda w: fake_quantize(w, mode), pparams)

"""Positional encodings of kernel coordinates: the predictor's input features.

  coords = coordinates.kernel_coordinates(layout, table)       # [N, 3] int32
  encode, width = encodings.make_encoder('nern', levels=40)    # width 240
  features = encode(coords)                                    # [N, 240] float32

`make_encoder` is the one way to build an encoding from its settings (the config's
`encoding` section, the artefact's header); `nern_encoding` and `gaussian_encoding` are
the functions it wraps.

'nern' is NeRN's "smooth" sinusoidal encoding of the raw integer coordinates
(METHOD.md section 2); 'gaussian' is a random Fourier-feature encoding of coordinates
normalised to [0, 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nrnp import choices

# The settings no recipe varies: NeRN's wavelength base; the Fourier features' count and std.
NERN_BASE = 0.76
GAUSSIAN_FEATURES = 120
GAUSSIAN_SCALE = 10.0


def nern_encoding(coords, levels: int = 40, base: float = NERN_BASE) -> jax.Array:
    """NeRN's sinusoidal encoding of raw integer coordinates.

    For each coordinate p and level l the angle is `a = p * base**l * pi`, computed in
    float32 in the order NeRN's PyTorch code uses (`pos * (base ** arange(L)) * np.pi`:
    `float32(base) ** l` in float32, times p, rounded, times float32(pi), rounded), so
    the large angles of big coordinates round like NeRN's. Jittable with `levels` and
    `base` static (Python numbers).

    Args:
      coords: [N, 3] integer array (layer, filter, channel), not normalised.
      levels: number of levels L.
      base: ratio between consecutive frequencies (< 1: ever longer wavelengths).

    Returns:
      [N, 3 * 2 * L] float32, ordered coordinate-major, then level, sin/cos
      interleaved: [sin a_00, cos a_00, sin a_01, cos a_01, ..., sin a_10, ...].
    """
    scales = np.float32(base) ** np.arange(levels, dtype=np.float32)  # [L]
    coords = jnp.asarray(coords).astype(jnp.float32)
    angles = coords[:, :, None] * jnp.asarray(scales)  # [N, 3, L]
    angles = angles * np.float32(np.pi)
    features = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # [N, 3, L, 2]
    return features.reshape(coords.shape[0], -1)  # [N, 6L]


def gaussian_matrix(seed: int, features: int, scale: float) -> jax.Array:
    """Random Fourier-feature projection for `gaussian_encoding`.

    Args:
      seed: PRNG seed.
      features: number of frequencies M.
      scale: standard deviation of the entries.

    Returns:
      [3, M] float32, entries N(0, scale^2).
    """
    return jax.random.normal(jax.random.key(seed), (3, features), jnp.float32) * scale


def gaussian_encoding(coords, maxima, matrix) -> jax.Array:
    """Random Fourier features of coordinates normalised to [0, 1).

    Args:
      coords: [N, 3] integer array.
      maxima: [3] per-coordinate normaliser (the largest value + 1).
      matrix: [3, M] float32 projection (see `gaussian_matrix`).

    Returns:
      [N, 2M] float32: [sin(2 pi x B), cos(2 pi x B)] concatenated, x = coords / maxima.
    """
    x = jnp.asarray(coords).astype(jnp.float32) / jnp.asarray(maxima, jnp.float32)  # [N, 3]
    angles = (2 * jnp.pi) * (x @ jnp.asarray(matrix, jnp.float32))  # [N, M]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def make_encoder(
    kind: str,
    *,
    levels: int = 40,
    base: float = NERN_BASE,
    features: int = GAUSSIAN_FEATURES,
    scale: float = GAUSSIAN_SCALE,
    seed: int = 0,
):
    """An encoding as a function `coords [N, 3] int -> [N, F] float32` and its width F.

    Args:
      kind: 'nern' (uses levels, base) or 'gaussian' (uses features, scale and `seed`
        for the random frequencies; coordinates are normalised by their maxima + 1).
      levels, base, features, scale, seed: the encoding's settings.

    Returns:
      (encode, F).

    Raises:
      ValueError: for an unknown kind.
    """
    if kind == 'nern':
        return (lambda coords: nern_encoding(coords, levels=levels, base=base)), 6 * levels
    if kind == 'gaussian':
        matrix = gaussian_matrix(seed, features, scale)

        def encode_gaussian(coords):
            maxima = np.asarray(coords).max(axis=0) + 1
            return gaussian_encoding(coords, maxima, matrix)

        return encode_gaussian, 2 * features
    raise ValueError(f'unknown encoding {kind!r}; valid kinds: {", ".join(choices.ENCODINGS)}')

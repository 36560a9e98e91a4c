"""Kernel orderings: greedy cosine chains that give similar kernels neighbouring coordinates.

  filter_pos, channel_pos = orderings.layer_positions(kernels, 'crossfilter')  # [O, I] each
  order = orderings.greedy_chain(orderings.cosine_normalise(features))  # [N] int32
  coordinates = np.stack([np.full_like(filter_pos, layer), filter_pos, channel_pos], -1)

The greedy nearest-neighbour chain (METHOD.md section 3) starts at item 0 and always
steps to the unvisited item with the highest similarity, ties going to the smallest
index. It is O(N^2): each step is one similarity sweep over the unvisited items, run
inside a jitted `lax.fori_loop`. Between chunks of steps the unvisited set is compacted
(keeping the original index order, so ties still resolve to the smallest index) into
the next power-of-two bucket, which both shrinks the work as the chain grows and lets
every layer of a network reuse the same few compiled bucket shapes.

For 1x1 layers (D = 1) the cosine of two scalars is the product of their signs. NeRN's
code (`get_all_cosine_sim` in its tsp.py) instead scores 1-value kernels by minus the
squared difference of the values divided by the norm of the whole layer; nrnp keeps
the cosine everywhere.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nrnp import choices

MODES = choices.ORDERINGS

# Smallest padded item count; below it the whole remaining chain runs in one chunk.
_MIN_BUCKET = 128
# Feature sizes up to this are summed as an unrolled row sweep (fast, and the same
# arithmetic for every bucket size); wider features (whole filters) use a dot.
_UNROLL_MAX_FEATURES = 32
# Items per block of the two-level maximum search in `_select_best`.
_BLOCK = 1024
# Items swept (steps x padded items) per call of the chain's jitted loop: ~0.3 s on a CPU.
_SWEEPS = 1 << 28


def cosine_normalise(x) -> jax.Array:
    """Divides each row by its L2 norm (at least 1e-12), so dot products are cosines.

    Args:
      x: [N, D] float array.

    Returns:
      [N, D] float32 array; all-zero rows stay zero.
    """
    x = jnp.asarray(x, jnp.float32)
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)  # [N, 1]
    return x / jnp.maximum(norm, 1e-12)


def _similarities(features_t, current):
    """Similarity of `current` to every column; non-finite values count as 0.

    Args:
      features_t: [D, B] float32, items as columns.
      current: [D] float32.

    Returns:
      [B] float32.
    """
    num_features = features_t.shape[0]
    if num_features <= _UNROLL_MAX_FEATURES:
        sims = features_t[0] * current[0]
        for d in range(1, num_features):
            sims = sims + features_t[d] * current[d]
    else:
        sims = jnp.dot(current, features_t, precision=lax.Precision.HIGHEST)
    return jnp.where(jnp.isfinite(sims), sims, 0.0)


def _select_best(features_t, penalty, current):
    """Index of the highest `similarity + penalty`, ties to the smallest index.

    A max followed by a first-index-of-max search (much faster on CPU than a variadic
    argmax). Large sets go through blocks: one sweep yields every block's maximum, and
    only the first block holding the overall maximum is swept again to locate it.

    Args:
      features_t: [D, B] float32 items as columns.
      penalty: [B] float32, 0 for candidates, -inf for visited items and padding.
      current: [D] float32.

    Returns:
      int32 scalar in [0, B).
    """
    num_items = features_t.shape[1]
    block = min(num_items, _BLOCK)
    if block == num_items or num_items % block:
        sims = _similarities(features_t, current) + penalty  # [B]
        best = jnp.max(sims)
        return jnp.min(jnp.where(sims == best, jnp.arange(num_items, dtype=jnp.int32), num_items))
    num_blocks = num_items // block
    sims = _similarities(features_t, current) + penalty
    block_best = jnp.max(sims.reshape(num_blocks, block), axis=1)  # [B / block]
    first = jnp.min(
        jnp.where(
            block_best == jnp.max(block_best), jnp.arange(num_blocks, dtype=jnp.int32), num_blocks
        )
    )
    offset = first * block
    block_sims = _similarities(lax.dynamic_slice_in_dim(features_t, offset, block, axis=1), current)
    block_sims = block_sims + lax.dynamic_slice_in_dim(penalty, offset, block)  # [block]
    # The block's own maximum (not the one from the sweep) keeps this exact even if the
    # two sweeps were to round differently.
    in_block = jnp.min(
        jnp.where(block_sims == jnp.max(block_sims), jnp.arange(block, dtype=jnp.int32), block)
    )
    return offset + in_block


def _chain_steps(features_t, penalty, current, num_steps):
    """Runs `num_steps` greedy steps over one (padded) set of items.

    Args:
      features_t: [D, B] float32 item features as columns.
      penalty: [B] float32, 0 for unvisited items and -inf for visited or padding.
      current: [D] float32 features of the item the chain stands on.
      num_steps: int32 scalar, at most the number of unvisited items.

    Returns:
      [B] int32: the first `num_steps` entries are the chosen item indices in order.
    """
    num_items = features_t.shape[1]

    def step(i, carry):
        penalty, current, chosen = carry
        j = _select_best(features_t, penalty, current)
        penalty = penalty.at[j].set(-jnp.inf)
        chosen = chosen.at[i].set(j)
        return penalty, features_t[:, j], chosen

    chosen = jnp.zeros((num_items,), jnp.int32)
    _, _, chosen = lax.fori_loop(0, num_steps, step, (penalty, current, chosen))
    return chosen


_chain_chunk = jax.jit(_chain_steps)


def _bucket(count):
    """Padded size for `count` items: the next power of two, at least _MIN_BUCKET."""
    return max(_MIN_BUCKET, 1 << max(count - 1, 0).bit_length())


def _chunk(features_t: np.ndarray, count: int, current: np.ndarray, num_steps: int):
    """`num_steps` greedy steps over the first `count` columns of `features_t` [D, B]:
    the chosen column indices [num_steps] int32, in order.

    Run as calls of at most `_SWEEPS // B` steps each (the same chain: a call continues
    from the last one's visited set and item), so a large layer returns to Python every
    fraction of a second, where a stop request (a signal) can be acted on.
    """
    size = features_t.shape[1]
    penalty = np.full((size,), -np.inf, np.float32)
    penalty[:count] = 0.0
    chosen, limit = [], max(1, _SWEEPS // size)
    while num_steps > 0:
        steps = min(num_steps, limit)
        part = np.asarray(_chain_chunk(features_t, penalty, current, np.int32(steps)))[:steps]
        chosen.append(part)
        penalty[part] = -np.inf
        current = features_t[:, part[-1]]
        num_steps -= steps
    return np.concatenate(chosen)


def greedy_chain(features, start: int = 0, *, compact: bool = True) -> np.ndarray:
    """Greedy nearest-neighbour chain by dot-product similarity.

    Starts at `start` and always steps to the unvisited item with the highest
    `features[cur] @ features[j]`, ties to the smallest index. Normalise the rows first
    (`cosine_normalise`) for cosine similarity. Non-finite similarities count as 0.

    Args:
      features: [N, D] float array.
      start: index of the first item of the chain.
      compact: if True, shrink the swept set as items get visited (chunks that halve
        the power-of-two bucket); if False, sweep all N items on every step. Both give
        the same chain.

    Returns:
      [N] int32 numpy array: the item indices in chain order (a permutation of 0..N-1).
    """
    features = np.asarray(features, np.float32)
    num_items, num_features = features.shape
    if not 0 <= start < max(num_items, 1):
        raise ValueError(f'start={start} outside [0, {num_items})')
    order = np.empty((num_items,), np.int32)
    if num_items == 0:
        return order
    order[0] = start
    remaining = np.delete(np.arange(num_items), start)  # original indices, ascending
    current = features[start]
    filled = 1
    while remaining.size:
        count = remaining.size
        size = _bucket(count)
        if compact and size > _MIN_BUCKET:
            num_steps = count - size // 2  # then the rest fits the next bucket down
        else:
            num_steps = count
        features_t = np.zeros((num_features, size), np.float32)
        features_t[:, :count] = features[remaining].T
        chosen = _chunk(features_t, count, current, num_steps)
        order[filled : filled + num_steps] = remaining[chosen]
        filled += num_steps
        current = features[remaining[chosen[-1]]]
        keep = np.ones((count,), bool)
        keep[chosen] = False
        remaining = remaining[keep]
    return order


@functools.partial(jax.jit, static_argnames=('num_steps',))
def _chains_in_filters(features_t, penalty, num_steps):
    """Greedy chains inside every filter at once, each starting at its item 0.

    Args:
      features_t: [O, D, B] float32 normalised kernels as columns, B >= I padded.
      penalty: [O, B] float32, 0 for real kernels, -inf for padding.
      num_steps: I - 1.

    Returns:
      [O, B] int32: column 0 is 0, columns 1..I-1 the rest of each chain.
    """
    penalty = penalty.at[:, 0].set(-jnp.inf)
    chain = jax.vmap(_chain_steps, in_axes=(0, 0, 0, None))(
        features_t, penalty, features_t[:, :, 0], num_steps
    )  # [O, B]
    return jnp.concatenate([jnp.zeros_like(chain[:, :1]), chain[:, :-1]], axis=1)


def _inverse(perm):
    """Inverse of permutations along the last axis: [..., n] int -> [..., n] int32."""
    return np.argsort(perm, axis=-1, kind='stable').astype(np.int32)


def infilter_chains(kernels) -> tuple[np.ndarray, np.ndarray]:
    """The two chains of the infilter ordering.

    Args:
      kernels: [O, I, D] float array.

    Returns:
      sigma: [O, I] int32, sigma[f, j] is the channel at position j of filter f's chain.
      tau: [O] int32, tau[q] is the filter at position q of the filter chain.
    """
    kernels = np.asarray(kernels, np.float32)
    num_filters, num_channels, num_features = kernels.shape
    normed = np.asarray(cosine_normalise(kernels.reshape(-1, num_features)))
    normed = normed.reshape(kernels.shape)  # [O, I, D]
    size = max(8, 1 << max(num_channels - 1, 0).bit_length())
    features_t = np.zeros((num_filters, num_features, size), np.float32)
    features_t[:, :, :num_channels] = normed.transpose(0, 2, 1)
    penalty = np.full((num_filters, size), -np.inf, np.float32)
    penalty[:, :num_channels] = 0.0
    sigma = np.asarray(_chains_in_filters(features_t, penalty, num_channels - 1))
    sigma = sigma[:, :num_channels]  # [O, I]
    reordered = np.take_along_axis(normed, sigma[:, :, None], axis=1)  # [O, I, D]
    tau = greedy_chain(reordered.reshape(num_filters, num_channels * num_features))
    return sigma.astype(np.int32), tau


def layer_positions(kernels, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The (filter, channel) coordinate each kernel slot of a layer receives.

    Args:
      kernels: [O, I, D] float array, kernel (f, c) flattened to D values (D = 9 for
        3x3, D = 1 for 1x1; cosine of scalars is their sign).
      mode: 'none' (storage position), 'crossfilter' (one chain over all O*I kernels,
        item f*I + c), 'infilter' (chains inside filters, then a chain of filters) or
        'separable' (one chain of whole filters and one of whole input channels: kernel
        (f, c) gets (filter f's place, channel c's place), log2(O!) + log2(I!) bits).

    Returns:
      filter_pos: [O, I] int32 and channel_pos: [O, I] int32, a permutation of the
      layer's (filter, channel) grid: kernel slot (f, c) is predicted from coordinate
      (filter_pos[f, c], channel_pos[f, c]).

    Raises:
      ValueError: for an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f'unknown ordering mode {mode!r}; valid modes: {", ".join(MODES)}')
    kernels = np.asarray(kernels, np.float32)
    num_filters, num_channels, num_features = kernels.shape
    if mode == 'none':
        filter_pos, channel_pos = np.meshgrid(
            np.arange(num_filters, dtype=np.int32),
            np.arange(num_channels, dtype=np.int32),
            indexing='ij',
        )
        return filter_pos, channel_pos
    if mode == 'crossfilter':
        order = greedy_chain(cosine_normalise(kernels.reshape(-1, num_features)))
        position = _inverse(order).reshape(num_filters, num_channels)  # [O, I]
        return position // num_channels, position % num_channels
    if mode == 'separable':
        tau = greedy_chain(cosine_normalise(kernels.reshape(num_filters, -1)))  # [O]
        sigma = greedy_chain(cosine_normalise(kernels.transpose(1, 0, 2).reshape(num_channels, -1)))
        filter_pos, channel_pos = np.meshgrid(_inverse(tau), _inverse(sigma), indexing='ij')
        return filter_pos.astype(np.int32), channel_pos.astype(np.int32)
    sigma, tau = infilter_chains(kernels)
    filter_pos = np.broadcast_to(_inverse(tau)[:, None], (num_filters, num_channels))
    return np.ascontiguousarray(filter_pos), _inverse(sigma)

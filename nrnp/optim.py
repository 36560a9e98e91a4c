"""Optimisers: Ranger (RAdam + Lookahead, NeRN's settings) and Adam, with per-step cosine decay.

tx = make_optimizer('ranger', steps=10_000, learning_rate=5e-3)
state = tx.init(pparams)
updates, state = tx.update(grads, state, pparams)   # params are required (Lookahead)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class LookaheadState(NamedTuple):
    inner: optax.OptState
    slow: optax.Params
    count: jax.Array


def lookahead(
    inner: optax.GradientTransformation, sync_period: int = 6, slow_step_size: float = 0.5
) -> optax.GradientTransformation:
    """Lookahead (Zhang et al. 2019) on plain params, as Ranger uses it.

    The fast weights are the params; every `sync_period` steps they move to
    `slow + alpha (fast - slow)`, which becomes the new slow copy. Unlike
    `optax.lookahead`, params stay a plain pytree, so the predictor is applied the
    same way in every phase and the slow copy lives in the optimizer state.
    """

    def init(params):
        # A copy: the slow weights must not alias params (the state is donated with them).
        return LookaheadState(
            inner.init(params),
            jax.tree.map(lambda x: jnp.array(x, copy=True), params),
            jnp.zeros([], jnp.int32),
        )

    def update(updates, state, params=None):
        if params is None:
            raise ValueError('lookahead needs params in update()')
        fast_updates, inner_state = inner.update(updates, state.inner, params)
        fast = optax.apply_updates(params, fast_updates)
        count = state.count + 1
        sync = count % sync_period == 0
        slow = jax.tree.map(
            lambda s, f: jnp.where(sync, s + slow_step_size * (f - s), s), state.slow, fast
        )
        new_updates = jax.tree.map(
            lambda u, s, p: jnp.where(sync, s - p, u), fast_updates, slow, params
        )
        return new_updates, LookaheadState(inner_state, slow, count)

    return optax.GradientTransformation(init, update)


def cosine_schedule(
    learning_rate: float, steps: int, final: float = 1e-6, warmup: int = 0
) -> optax.Schedule:
    """Per-step cosine decay from `learning_rate` to `final` over `steps` (after warm-up)."""
    steps = max(int(steps), 1)
    alpha = min(final / learning_rate, 1.0) if learning_rate > 0 else 0.0
    if warmup > 0:
        return optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, warmup, max(steps, warmup + 1), end_value=learning_rate * alpha
        )
    return optax.cosine_decay_schedule(learning_rate, steps, alpha=alpha)


def make_optimizer(
    name: str,
    *,
    steps: int,
    learning_rate: float = 5e-3,
    b1: float = 0.5,
    b2: float = 0.999,
    eps: float = 1e-5,
    weight_decay: float = 1e-3,
    final_learning_rate: float = 1e-6,
    warmup: int = 0,
    lookahead_k: int = 6,
    lookahead_alpha: float = 0.5,
) -> optax.GradientTransformation:
    """The optimiser of one phase.

    Args:
      name: 'ranger' (RAdam + decoupled weight decay + Lookahead, NeRN's defaults),
        'adam' or 'adamw'.
      steps: length of the cosine decay (the phase's steps).
      learning_rate, b1, b2, eps, weight_decay: as in RAdam/AdamW (decoupled decay).
      final_learning_rate: where the cosine decay ends.
      warmup: linear warm-up steps.
      lookahead_k, lookahead_alpha: Lookahead's sync period and slow step size.

    Returns:
      An optax GradientTransformation; its `update` needs params.
    """
    schedule = cosine_schedule(learning_rate, steps, final_learning_rate, warmup)
    if name == 'ranger':
        inner = optax.chain(
            optax.scale_by_radam(b1, b2, eps),
            optax.add_decayed_weights(weight_decay),
            optax.scale_by_learning_rate(schedule),
        )
        return lookahead(inner, lookahead_k, lookahead_alpha)
    if name == 'adam':
        return optax.adam(schedule, b1, b2, eps)
    if name == 'adamw':
        return optax.adamw(schedule, b1, b2, eps, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'ranger', 'adam' or 'adamw', got {name!r}")

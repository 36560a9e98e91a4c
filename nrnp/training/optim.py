"""Optimisers: Ranger (RAdam + Lookahead, NeRN's settings) and Adam with per-step cosine
decay, and `phase_switch`, which holds one optimizer per training phase.

  tx = phase_switch({'reconstruct': make_optimizer('ranger', steps=10_000),
                     'distill': make_optimizer('adam', steps=2_000, learning_rate=1e-4)})
  state = tx.init(pparams)                        # both phases' states, phase 0 active
  state = select_phase(state, 'distill', tx)      # at a phase switch (host side, no compile)
  updates, state = tx.update(grads, state, pparams)   # params are required (Lookahead)
  lr = learning_rate(state, tx)                   # what the active phase's last update applied

Every optimizer here scales its updates with `scale_by_learning_rate`, which keeps the
learning rate it applied in its state, so the steps report the learning rate the optimizer
used (`recon/lr`, `distill/lr`) instead of the host recomputing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from nrnp import choices


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


class ScheduleState(NamedTuple):
    """State of `scale_by_learning_rate`: updates applied, and the last learning rate."""

    count: jax.Array
    learning_rate: jax.Array


def scale_by_learning_rate(schedule: optax.Schedule) -> optax.GradientTransformation:
    """`optax.scale_by_learning_rate(schedule)` that keeps the rate it applied in its state.

    The same arithmetic as optax's (updates times `-schedule(count)` in their dtype), so an
    optimizer built on it computes the same updates bit for bit.
    """

    def init(params):
        del params
        return ScheduleState(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.float32))

    def update(updates, state, params=None):
        del params
        rate = schedule(state.count)
        updates = jax.tree.map(lambda g: jnp.array(-rate, dtype=g.dtype) * g, updates)
        return updates, ScheduleState(optax.safe_increment(state.count), jnp.float32(rate))

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
    scale = scale_by_learning_rate(
        cosine_schedule(learning_rate, steps, final_learning_rate, warmup)
    )
    if name == 'ranger':
        inner = optax.chain(
            optax.scale_by_radam(b1, b2, eps), optax.add_decayed_weights(weight_decay), scale
        )
        return lookahead(inner, lookahead_k, lookahead_alpha)
    if name == 'adam':  # optax.adam, keeping its learning rate
        return optax.chain(optax.scale_by_adam(b1, b2, eps), scale)
    if name == 'adamw':  # optax.adamw
        return optax.chain(
            optax.scale_by_adam(b1, b2, eps), optax.add_decayed_weights(weight_decay), scale
        )
    raise ValueError(f'optimizer must be one of {", ".join(choices.OPTIMIZERS)}, got {name!r}')


class PhaseSwitchState(NamedTuple):
    """State of `phase_switch`: the active phase and every phase's own optimizer state.

    Attributes:
      phase: int32 scalar, index of the active phase in the transform's `phases` order.
      inner: `{phase name: optimizer state}`, each kept while another phase is active.
    """

    phase: jax.Array
    inner: dict


class PhaseSwitch(NamedTuple):
    """A `GradientTransformation` (init, update) that also knows its phase names."""

    init: optax.TransformInitFn
    update: optax.TransformUpdateFn
    phases: tuple[str, ...]
    transforms: dict


def phase_switch(transforms: Mapping[str, optax.GradientTransformation]) -> PhaseSwitch:
    """The time-partitioned counterpart of `optax.multi_transform`.

    `multi_transform` sends each *parameter* to the transform of its label; this sends
    the whole update at each *step* to the transform of the active phase, read from the
    state (`PhaseSwitchState.phase`, set with `select_phase`). The inactive phases'
    states are carried unchanged, so returning to a phase resumes its moments and
    schedule. The switch is a `lax.switch` on the state's phase, so the optimizer state
    has one structure in every phase: a checkpoint of it holds every phase's optimizer
    and restores into any phase. (The loop still jits one step per phase kind, since the
    reconstruction and distillation steps compute different losses; within a kind, every
    phase and cycle reuses that compilation.)

    Args:
      transforms: `{phase name: GradientTransformation}`; the first is active after init.

    Returns:
      A `PhaseSwitch` (a GradientTransformation with `phases` and `transforms`).
    """
    names = tuple(transforms)
    if not names:
        raise ValueError('phase_switch needs at least one transform')
    transforms = dict(transforms)

    def init(params):
        inner = {name: transforms[name].init(params) for name in names}
        return PhaseSwitchState(jnp.zeros([], jnp.int32), inner)

    def update(updates, state, params=None):
        def branch(name):
            def apply(updates, inner, params):
                new_updates, new_state = transforms[name].update(updates, inner[name], params)
                return new_updates, {**inner, name: new_state}

            return apply

        if len(names) == 1:
            new_updates, inner = branch(names[0])(updates, state.inner, params)
        else:
            branches = [branch(name) for name in names]
            new_updates, inner = lax.switch(state.phase, branches, updates, state.inner, params)
        return new_updates, PhaseSwitchState(state.phase, inner)

    return PhaseSwitch(init, update, names, transforms)


def select_phase(state: PhaseSwitchState, name: str, tx: PhaseSwitch) -> PhaseSwitchState:
    """`state` with phase `name` active (its optimizer state as it was left)."""
    if name not in tx.phases:
        raise ValueError(f'unknown phase {name!r}; phases: {", ".join(tx.phases)}')
    return state._replace(phase=jnp.asarray(tx.phases.index(name), jnp.int32))


def learning_rate(state, tx: optax.GradientTransformation | None = None) -> jax.Array | None:
    """The learning rate the last update applied (a float32 scalar): the active phase's for
    a `phase_switch` state (`tx` its transformation), else the one `scale_by_learning_rate`
    in `state` holds; None for an optimizer without one (e.g. a plain `optax.sgd`)."""
    if isinstance(tx, PhaseSwitch):
        rates = [learning_rate(state.inner[name]) for name in tx.phases]
        return None if None in rates else jnp.stack(rates)[state.phase]
    found = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, ScheduleState))
    rates = [leaf.learning_rate for leaf in found if isinstance(leaf, ScheduleState)]
    return rates[0] if len(rates) == 1 else None


def reset_phase(state: PhaseSwitchState, name: str, tx: PhaseSwitch, params) -> PhaseSwitchState:
    """`state` with phase `name`'s optimizer state re-initialised for `params`."""
    return state._replace(inner={**state.inner, name: tx.transforms[name].init(params)})

"""Optimisers: Lookahead's sync rule, schedules, names."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nrnp.training import optim


def test_lookahead_syncs_every_k_steps():
    inner = optax.sgd(1.0)
    tx = optim.lookahead(inner, sync_period=2, slow_step_size=0.5)
    p = {'w': jnp.array(0.0)}
    state = tx.init(p)
    g = {'w': jnp.array(-1.0)}  # every fast step adds +1
    u, state = tx.update(g, state, p)
    p = optax.apply_updates(p, u)
    assert float(p['w']) == 1.0  # fast step
    u, state = tx.update(g, state, p)
    p = optax.apply_updates(p, u)
    # fast would be 2; sync: slow = 0 + 0.5 * (2 - 0) = 1 and params jump to it.
    assert float(p['w']) == 1.0 and float(state.slow['w']) == 1.0
    u, state = tx.update(g, state, p)
    p = optax.apply_updates(p, u)
    assert float(p['w']) == 2.0


def test_cosine_schedule_ends_at_final():
    s = optim.cosine_schedule(5e-3, 100, final=1e-6)
    assert float(s(0)) == pytest.approx(5e-3)
    assert float(s(100)) == pytest.approx(1e-6, rel=1e-3)
    w = optim.cosine_schedule(1.0, 100, final=0.0, warmup=10)
    assert float(w(0)) == 0.0 and float(w(10)) == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['ranger', 'adam', 'adamw'])
def test_optimizers_minimise_a_quadratic(name):
    tx = optim.make_optimizer(name, steps=300, learning_rate=0.1, b1=0.9)
    p = {'w': jnp.array([3.0, -2.0])}
    state = tx.init(p)
    for _ in range(300):
        g = {'w': 2 * p['w']}
        u, state = tx.update(g, state, p)
        p = optax.apply_updates(p, u)
    assert np.abs(np.asarray(p['w'])).max() < 1.0  # from 3.0 (Lookahead halves the pace)


def test_unknown_optimizer():
    with pytest.raises(ValueError, match='ranger'):
        optim.make_optimizer('sgdx', steps=1)

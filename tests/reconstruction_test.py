"""Reconstruction: magnitude-oriented batching statistics and the step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nrnp.core import predictor
from nrnp.training import optim, reconstruction


def test_magnitude_probabilities_follow_kernel_norms():
    rows = jnp.zeros((3, 9)).at[0, 0].set(3.0).at[0, 1].set(4.0).at[1, 4].set(5.0)
    mask = jnp.ones((3, 9))
    np.testing.assert_allclose(reconstruction.magnitude_probabilities(rows, mask), [0.5, 0.5, 0.0])
    # Masked entries do not count.
    mask = mask.at[0, 1].set(0.0)
    np.testing.assert_allclose(
        reconstruction.magnitude_probabilities(rows, mask), [3 / 8, 5 / 8, 0.0], rtol=1e-6
    )


def test_batches_uniform_without_replacement_and_magnitude_with():
    n, b = 50, 20
    probs = jnp.zeros(n).at[7].set(0.75).at[11].set(0.25)
    sample = jax.jit(
        functools.partial(reconstruction.sample_kernel_batch, batch_size=b, magnitude_fraction=0.2)
    )
    magnitude_steps, counts = 0, np.zeros(n)
    steps = 2000
    for s in range(steps):
        idx = np.asarray(sample(jax.random.fold_in(jax.random.key(0), s), probs))
        assert idx.shape == (b,) and idx.dtype == np.int32
        if set(idx) <= {7, 11}:  # a magnitude batch: only rows with probability > 0
            magnitude_steps += 1
            counts += np.bincount(idx, minlength=n)
        else:
            assert len(set(idx)) == b  # uniform batches never repeat a row
    # 20 % of steps (binomial sd ~ 0.9 %), and draws in proportion 3:1.
    assert abs(magnitude_steps / steps - 0.2) < 0.03
    assert abs(counts[7] / counts.sum() - 0.75) < 0.02


def test_batch_larger_than_table():
    with pytest.raises(ValueError, match='exceeds'):
        reconstruction.sample_kernel_batch(jax.random.key(0), jnp.ones(4) / 4, 5)


@pytest.mark.slow
def test_step_reduces_rmse_and_counts_steps():
    rng = np.random.default_rng(0)
    n = 256
    encoded = jnp.asarray(rng.normal(size=(n, 6)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(n, 9)) * 0.1, jnp.float32)
    mask = jnp.ones((n, 9))
    problem = reconstruction.ReconstructionProblem(
        encoded, target, mask, reconstruction.magnitude_probabilities(target, mask)
    )
    model = predictor.Predictor(hidden=32, layers=3)
    pparams = predictor.init_predictor(model, 6, seed=0)
    tx = optim.make_optimizer('adam', steps=200, learning_rate=3e-3, b1=0.9)
    state = reconstruction.PredictorState(jnp.asarray(0, jnp.int32), pparams, tx.init(pparams))
    before = reconstruction.full_rmse(model, pparams, problem)
    step = jax.jit(
        functools.partial(reconstruction.reconstruction_step, model=model, tx=tx, batch_size=64),
        donate_argnums=0,
    )
    for _ in range(200):
        state, metrics = step(state, problem, jax.random.key(1))
    assert int(state.step) == 200
    after = reconstruction.full_rmse(model, state.pparams, problem)
    assert np.isfinite(float(metrics['recon/loss']))
    assert after < 0.7 * before

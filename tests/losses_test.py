"""Losses against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nrnp.training import losses


def test_reconstruction_rmse_pooled_over_real_weights():
    pred = jnp.array([[1.0] * 9, [0.0] * 9])
    target = jnp.zeros((2, 9))
    mask = jnp.array([[1.0] * 9, [0, 0, 0, 0, 1, 0, 0, 0, 0]])
    # 9 squared errors of 1 and one of 0 over 10 real weights.
    assert float(losses.reconstruction_loss(pred, target, mask)) == pytest.approx(np.sqrt(0.9))
    # Row weights count a row m times.
    w = jnp.array([2.0, 1.0])
    assert float(losses.reconstruction_loss(pred, target, mask, w)) == pytest.approx(
        np.sqrt(18 / 19)
    )


def test_kd_loss_values():
    t = jnp.array([[2.0, 0.0]])
    s = jnp.array([[0.0, 0.0]])
    p = np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum()
    exact = float(np.sum(p * (np.log(p) - np.log([0.5, 0.5]))))
    assert float(losses.kd_loss(t, s, stable=False)) == pytest.approx(exact, rel=1e-5)
    stable = float(np.sum(p * (np.log(p) - np.log(np.array([0.5, 0.5]) + 1e-4))))
    assert float(losses.kd_loss(t, s, stable=True)) == pytest.approx(stable, rel=1e-5)
    assert float(losses.kd_loss(t, t, stable=False)) == pytest.approx(0.0, abs=1e-6)
    # Temperature T: KL of the softened distributions times T^2.
    q = np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum()
    soft = float(np.sum(q * (np.log(q) - np.log([0.5, 0.5])))) * 4
    assert float(losses.kd_loss(t, s, temperature=2.0, stable=False)) == pytest.approx(
        soft, rel=1e-5
    )


def test_feature_map_loss():
    a = jnp.zeros((2, 1, 1, 2)).at[:, 0, 0, 0].set(3.0)  # unit direction e0
    b = jnp.zeros((2, 1, 1, 2)).at[:, 0, 0, 1].set(4.0)  # unit direction e1
    na, nb = 3 / (3 + 1e-3), 4 / (4 + 1e-3)
    expected = na**2 + nb**2  # per sample, averaged over the batch of 2 identical samples
    assert float(losses.feature_map_loss([a], [b])) == pytest.approx(expected, rel=1e-6)
    assert float(losses.feature_map_loss([a, a], [b, b])) == pytest.approx(2 * expected, rel=1e-6)
    with pytest.raises(ValueError, match='shapes differ'):
        losses.feature_map_loss([a], [jnp.zeros((2, 1, 1, 3))])
    g = jax.grad(lambda x: losses.feature_map_loss([a], [x]))(b)
    assert np.isfinite(np.asarray(g)).all()


def test_rmse_gradient_is_finite_at_zero_loss():
    x = jnp.ones((2, 9))
    g = jax.grad(lambda p: losses.reconstruction_loss(p, x, jnp.ones((2, 9))))(x)
    assert np.isfinite(np.asarray(g)).all()


def test_feature_map_loss_of_a_zero_map_is_finite_with_a_finite_gradient():
    """A fresh network's BatchNorm (zero bias and mean) on a blank image gives an exactly
    zero feature map; jnp.linalg.norm's gradient is NaN there."""
    zero = jnp.zeros((2, 3, 3, 4))
    teacher = jnp.ones((2, 3, 3, 4))
    loss, g = jax.value_and_grad(lambda s: losses.feature_map_loss([teacher], [s]))(zero)
    assert float(loss) == pytest.approx(36 / (6 + 1e-3) ** 2, rel=1e-6)  # |t/(|t|+eps)|^2
    assert np.isfinite(np.asarray(g)).all()
    g = jax.grad(lambda t: losses.feature_map_loss([t], [t]))(zero)
    np.testing.assert_array_equal(np.asarray(g), 0.0)  # both zero: loss 0, gradient 0
    x = jax.random.normal(jax.random.key(0), (5, 7))
    np.testing.assert_allclose(losses.safe_norm(x)[:, 0], jnp.linalg.norm(x, axis=-1), rtol=1e-6)

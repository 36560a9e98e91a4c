"""Distillation: gradient only through the kernel batch (with multiplicity), a working step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nrnp.core import kernels, predictor, quantize
from nrnp.nets import models
from nrnp.training import distillation, optim, reconstruction


def _problem(n=40, d=5, seed=0):
    rng = np.random.default_rng(seed)
    encoded = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(n, 9)), jnp.float32)
    mask = jnp.ones((n, 9))
    probs = reconstruction.magnitude_probabilities(target, mask)
    return reconstruction.ReconstructionProblem(encoded, target, mask, probs)


@pytest.mark.slow
@pytest.mark.parametrize('fraction', [0.0, 1.0])  # uniform batches; magnitude with repeats
def test_gradient_flows_only_through_the_batch_with_multiplicity(fraction):
    problem = _problem()
    pmodel = predictor.Predictor(hidden=8, layers=3)
    pparams = predictor.init_predictor(pmodel, 5, 0)
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(40, 9)), jnp.float32)
    setup = distillation.DistillSetup(
        predictor=pmodel,
        target=None,
        teacher=None,
        layout=None,
        batch_size=12,
        magnitude_fraction=fraction,
    )
    key = jax.random.key(7)
    idx = reconstruction.sample_kernel_batch(key, problem.probs, 12, fraction)
    if fraction == 1.0:
        assert len(set(np.asarray(idx).tolist())) < 12  # repeats happen
    rows = distillation.predicted_rows(setup, pparams, problem, key)
    full = pmodel.apply({'params': pparams}, problem.encoded)
    np.testing.assert_allclose(rows, full, rtol=1e-6, atol=1e-7)  # value: all kernels

    def through_setup(p):
        return jnp.sum(distillation.predicted_rows(setup, p, problem, key) * weights)

    def through_batch(p):
        return jnp.sum(pmodel.apply({'params': p}, problem.encoded[idx]) * weights[idx])

    g, expected = jax.grad(through_setup)(pparams), jax.grad(through_batch)(pparams)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g, expected)


@pytest.mark.slow
def test_distillation_step_reduces_kd_to_the_original_network():
    model = models.SmallCNN(num_classes=4, widths=(4, 8, 8))
    variables = models.init_variables(model, (1, 8, 8, 1), seed=0)
    layout = kernels.kernel_layout(variables['params'], kernels.select_kernels())
    table = kernels.gather(layout, variables['params'])
    mask = jnp.asarray(layout.mask())
    rng = np.random.default_rng(0)
    encoded = jnp.asarray(rng.normal(size=(layout.num_kernels, 6)), jnp.float32)
    problem = reconstruction.ReconstructionProblem(
        encoded, table, mask, reconstruction.magnitude_probabilities(table, mask)
    )
    pmodel = predictor.Predictor(hidden=32, layers=3)
    pparams = predictor.init_predictor(pmodel, 6, 0)
    adam = optim.make_optimizer('adam', steps=60, learning_rate=3e-3, b1=0.9)
    tx = optim.phase_switch({'reconstruct': adam, 'distill': adam})
    opt_state = optim.select_phase(tx.init(pparams), 'distill', tx)
    state = reconstruction.PredictorState(jnp.zeros([], jnp.int32), pparams, opt_state)
    setup = distillation.DistillSetup(
        predictor=pmodel,
        target=model,
        teacher=model,
        layout=layout,
        batch_size=layout.num_kernels,
        grad_through='all',
    )
    frozen = distillation.Frozen(variables['params'], variables['batch_stats'], variables)
    step = jax.jit(
        functools.partial(
            distillation.distillation_step, setup=setup, tx=tx, loss_weights=(1.0, 0.0, 0.0)
        )
    )
    images = jnp.asarray(rng.normal(size=(32, 8, 8, 1)), jnp.float32)
    key = jax.random.key(0)
    first = None
    for _ in range(60):
        state, metrics = step(state, problem, frozen, images, key)
        first = float(metrics['distill/kd']) if first is None else first
    assert float(metrics['distill/kd']) < 0.5 * first
    assert int(state.step) == 60
    # Only the distillation optimizer state moved.
    assert int(state.opt_state.inner['reconstruct'][0].count) == 0
    assert int(state.opt_state.inner['distill'][0].count) == 60


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['int8', 'int4'])
def test_quantize_aware_steps_see_the_stored_predictor_and_pass_gradients_straight(mode):
    scheme = quantize.Scheme(mode, 16)
    model = models.SmallCNN(num_classes=4, widths=(4, 8, 8))
    variables = models.init_variables(model, (1, 8, 8, 1), seed=0)
    layout = kernels.kernel_layout(variables['params'], kernels.select_kernels())
    table = kernels.gather(layout, variables['params'])
    mask = jnp.asarray(layout.mask())
    encoded = jnp.asarray(np.random.default_rng(0).normal(size=(layout.num_kernels, 6)))
    problem = reconstruction.ReconstructionProblem(
        encoded.astype(jnp.float32),
        table,
        mask,
        reconstruction.magnitude_probabilities(table, mask),
    )
    pmodel = predictor.Predictor(hidden=16, layers=3)
    pparams = predictor.init_predictor(pmodel, 6, 0)
    stored = quantize.fake_quantize_tree(pparams, scheme)  # as stored (quantize_test)
    frozen = distillation.Frozen(variables['params'], variables['batch_stats'], variables)
    images = jnp.asarray(np.random.default_rng(1).normal(size=(8, 8, 8, 1)), jnp.float32)
    key = jax.random.key(3)

    def kd(p, m):
        setup = distillation.DistillSetup(
            predictor=pmodel, target=model, teacher=model, layout=layout, batch_size=64, quantize=m
        )
        return distillation.distillation_losses(setup, p, problem, frozen, images, key)[
            'distill/kd'
        ]

    aware, grads = jax.jit(jax.value_and_grad(lambda p: kd(p, scheme)))(pparams)
    plain, plain_grads = jax.jit(jax.value_and_grad(lambda p: kd(p, quantize.NONE)))(stored)
    assert float(aware) == float(plain)  # the forward pass is the stored predictor's
    jax.tree.map(np.testing.assert_array_equal, grads, plain_grads)  # identity through rounding

    def recon(p, m):
        state = reconstruction.PredictorState(jnp.zeros([], jnp.int32), p, optax.sgd(1.0).init(p))
        step = functools.partial(
            reconstruction.reconstruction_step,
            model=pmodel,
            tx=optax.sgd(1.0),
            batch_size=32,
            scheme=m,
        )
        return step(state, problem, key)

    (moved, loss), (plain_moved, plain_loss) = recon(pparams, scheme), recon(stored, quantize.NONE)
    assert float(loss['recon/loss']) == float(plain_loss['recon/loss'])
    update = jax.tree.map(lambda a, b: a - b, moved.pparams, pparams)  # SGD(1): -gradient
    plain_update = jax.tree.map(lambda a, b: a - b, plain_moved.pparams, stored)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), update, plain_update
    )

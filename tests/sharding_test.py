"""Sharding: 1 vs 8 simulated CPU devices give the same steps, compiled once.

The 8-device runs happen in a subprocess, since the device count is fixed when
JAX starts: `python tests/sharding_test.py N` prints the results for N devices.
"""

import dataclasses
import functools
import json
import os
import sys

import numpy as np
import pytest
from helpers import run_on_cpu_devices

HERE = os.path.dirname(os.path.abspath(__file__))


def _steps(num_devices: int, model_axis: int = 1) -> dict:
    import jax
    import jax.numpy as jnp

    from nrnp.core import kernels, predictor
    from nrnp.data.dataset import Dataset
    from nrnp.nets import models
    from nrnp.training import device_data, distillation, optim, reconstruction, sharding

    mesh = sharding.make_mesh(num_devices, model_axis)
    model = models.build_model('resnet20', 10)
    shapes = jax.eval_shape(lambda: models.init_variables(model, (1, 32, 32, 3)))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.1, s.dtype), shapes)
    variables['batch_stats'] = jax.tree.map(lambda x: jnp.abs(x) + 0.5, variables['batch_stats'])
    layout = kernels.kernel_layout(variables['params'], kernels.select_kernels())
    table = kernels.gather(layout, variables['params'])
    mask = jnp.asarray(layout.mask())
    encoded = jnp.asarray(rng.normal(size=(layout.num_kernels, 12)), jnp.float32)
    problem = reconstruction.ReconstructionProblem(
        encoded, table, mask, reconstruction.magnitude_probabilities(table, mask)
    )
    pmodel = predictor.Predictor(hidden=128)  # 128 x 128 kernels: big enough to split
    pparams = predictor.init_predictor(pmodel, 12, 0)
    adam = optim.make_optimizer('adam', steps=10, learning_rate=1e-3, b1=0.9)
    tx = optim.phase_switch({'reconstruct': adam, 'distill': adam})
    state = reconstruction.PredictorState(jnp.zeros([], jnp.int32), pparams, tx.init(pparams))
    state, problem = sharding.place_state(state, mesh), sharding.replicate(problem, mesh)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    recon = jax.jit(
        functools.partial(
            reconstruction.reconstruction_step, model=pmodel, tx=tx, batch_size=512, mesh=mesh
        ),
        donate_argnums=0,
    )
    key = jax.random.key(3)
    losses = []
    for _ in range(3):
        state, m = recon(state, problem, key)
        state = jax.device_put(state, shardings)  # as phases does: a stable placement
        losses.append(float(m['recon/loss']))
    state = state.replace(opt_state=optim.select_phase(state.opt_state, 'distill', tx))
    state = jax.device_put(state, shardings)
    setup = distillation.DistillSetup(
        predictor=pmodel, target=model, teacher=model, layout=layout, batch_size=512, mesh=mesh
    )
    frozen = sharding.replicate(
        distillation.Frozen(variables['params'], variables['batch_stats'], variables), mesh
    )
    distill = jax.jit(
        functools.partial(
            distillation.distillation_step, setup=setup, tx=tx, loss_weights=(1.0, 1.0, 0.1)
        ),
        donate_argnums=0,
    )
    dl = []
    for _ in range(2):
        images = rng.normal(size=(16, 32, 32, 3)).astype(np.float32)
        state, m = distill(state, problem, frozen, sharding.global_batch(images, mesh), key)
        state = jax.device_put(state, shardings)
        dl.append(float(m['distill/loss']))
    # The same step on images drawn and augmented on the device (uint8 split replicated).
    split = device_data.place(
        Dataset(
            rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
            np.zeros(40, np.int32),
            1,
            ('x',),
        ),
        mesh,
    )
    on_device = jax.jit(
        functools.partial(
            distillation.distillation_step_on_device,
            setup=setup,
            tx=tx,
            loss_weights=(1.0, 1.0, 0.1),
            batch_size=16,
            augment='crop_flip',
            pad=4,
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
        ),
        donate_argnums=0,
    )
    dd = []
    data_key = jax.random.key(5)
    for k in range(3):  # 3 steps: the second epoch starts at step 2 (40 // 16)
        state, m = on_device(state, problem, frozen, split, data_key, np.int32(k), key)
        state = jax.device_put(state, shardings)
        dd.append(float(m['distill/loss']))
    # BatchNorm re-estimation over the mesh (batches split over 'data'), and a distillation
    # step whose student normalises with batch statistics.
    from nrnp.training import recalibration

    batches = [rng.normal(size=(16, 32, 32, 3)).astype(np.float32) for _ in range(2)]
    moved = jax.tree.map(lambda x: x * 1.05, variables['params'])
    reestimate = recalibration.Reestimation(model, variables, batches, 'relative', mesh)
    recal = [np.asarray(x).ravel()[:8].tolist() for x in jax.tree.leaves(reestimate(moved))[:6]]
    batch_setup = dataclasses.replace(setup, batch_norm='batch')
    terms = jax.jit(functools.partial(distillation.distillation_losses, batch_setup))(
        state.pparams, problem, frozen, sharding.global_batch(batches[0], mesh), key
    )
    return {
        'recal': recal,
        'batch_norm_kd': float(terms['distill/kd']),
        'devices': len(jax.devices()),
        'recon_losses': losses,
        'distill_losses': dl,
        'device_losses': dd,
        'device_compiles': on_device._cache_size(),
        'params': [np.asarray(x).ravel()[:50].tolist() for x in jax.tree.leaves(state.pparams)],
        'split_leaves': sum(
            sharding.MODEL in str(x.sharding.spec) for x in jax.tree.leaves(state.pparams)
        ),
        'recon_compiles': recon._cache_size(),
        'distill_compiles': distill._cache_size(),
    }


def _run(num_devices: int, model_axis: int = 1) -> dict:
    return run_on_cpu_devices(__file__, num_devices, str(num_devices), str(model_axis))


@pytest.mark.slow
def test_one_and_eight_devices_agree():
    one, eight, fsdp = _run(1), _run(8), _run(8, model_axis=2)
    assert one['devices'] == 1 and eight['devices'] == 8
    assert one['split_leaves'] == eight['split_leaves'] == 0 and fsdp['split_leaves'] > 0
    for other in (eight, fsdp):
        np.testing.assert_allclose(one['recon_losses'], other['recon_losses'], rtol=1e-5)
        np.testing.assert_allclose(one['distill_losses'], other['distill_losses'], rtol=1e-4)
        np.testing.assert_allclose(one['device_losses'], other['device_losses'], rtol=1e-4)
        for a, b in zip(one['params'], other['params']):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)  # reassociated sums
        for a, b in zip(one['recal'], other['recal']):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        assert one['batch_norm_kd'] == pytest.approx(other['batch_norm_kd'], rel=1e-4)
    for r in (one, eight, fsdp):  # one compilation per step function, whatever the step
        assert r['recon_compiles'] == 1 and r['distill_compiles'] == 1
        assert r['device_compiles'] == 1


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(HERE))
    print(json.dumps(_steps(int(sys.argv[1]), int(sys.argv[2]))))

"""Predictor: sizes, init, reconstruct."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nrnp.core import kernels, predictor


@pytest.mark.parametrize('hidden, expected', [(180, 142_749), (160, 117_289), (140, 94_229)])
def test_nern_parameter_count(hidden, expected):
    model = predictor.Predictor(hidden=hidden)
    pparams = predictor.init_predictor(model, 240, seed=0)
    assert sum(x.size for x in jax.tree.leaves(pparams)) == expected
    assert predictor.num_params(hidden, 240) == expected == 3 * hidden**2 + 253 * hidden + 9


def test_torch_init_bounds():
    pparams = predictor.init_predictor(predictor.Predictor(hidden=64), 240, seed=1)
    w, b = np.asarray(pparams['dense0']['kernel']), np.asarray(pparams['dense0']['bias'])
    bound = 1 / np.sqrt(240)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.9 * bound and np.abs(b).max() > 0.5 * bound  # biases not zero


def test_reconstruct_matches_predict_and_keeps_structure():
    rng = np.random.default_rng(0)
    params = {
        'a': {'kernel': rng.normal(size=(3, 3, 2, 3)).astype(np.float32)},
        'b': {
            'kernel': rng.normal(size=(1, 1, 3, 2)).astype(np.float32),
            'bias': np.zeros(2, np.float32),
        },
    }
    layout = kernels.kernel_layout(params, kernels.select_kernels())
    model = predictor.Predictor(hidden=8, layers=3)
    pparams = predictor.init_predictor(model, 5, seed=0)
    encoded = jnp.asarray(rng.normal(size=(layout.num_kernels, 5)), jnp.float32)
    rebuilt = predictor.reconstruct(model, layout, pparams, encoded, params)
    assert jax.tree.structure(rebuilt) == jax.tree.structure(params)
    rows = np.asarray(predictor.predict(model, pparams, encoded))
    np.testing.assert_allclose(
        rebuilt['a']['kernel'][:, :, 1, 2], rows[2 * 2 + 1].reshape(3, 3), rtol=1e-6
    )
    # The 1x1 kernel's rows are grouped: filter 1's channels 0..2 are row 6 + 1, entries 0..2.
    np.testing.assert_allclose(rebuilt['b']['kernel'][0, 0, 2, 1], rows[6 + 1, 2], rtol=1e-6)
    np.testing.assert_array_equal(rebuilt['b']['bias'], params['b']['bias'])


def test_bad_settings():
    with pytest.raises(ValueError, match='init'):
        predictor.init_predictor(predictor.Predictor(hidden=4, initializer='xavier'), 3, 0)
    with pytest.raises(ValueError, match='at least 2'):
        predictor.init_predictor(predictor.Predictor(hidden=4, layers=1), 3, 0)

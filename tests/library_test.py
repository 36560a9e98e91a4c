"""nrnp.compress on nrnp's ResNet20, a VGG-style net and a 1x1/depthwise/dense net."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import nrnp
from nrnp import errors
from nrnp.artifact import compressed, provenance
from nrnp.configs import catalog, default
from nrnp.core import permutation_codec, predictor
from nrnp.nets import models
from nrnp.pipeline import problem

pytestmark = pytest.mark.slow  # runs nrnp.compress end to end

FAST = dict(
    reconstruct__steps=3,
    reconstruct__batch_size=256,
    predictor__hidden=8,
    predictor__layers=3,
    encoding__levels=4,
    log_every=1,
)


class VGG(nn.Module):
    """Conv-BN-ReLU-pool twice, then a Dense head; sows nothing."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, features in enumerate((8, 16)):
            x = nn.Conv(features, (3, 3), name=f'conv{i}')(x)
            x = nn.BatchNorm(use_running_average=not train, name=f'bn{i}')(x)
            x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
        return nn.Dense(10, name='fc')(x.reshape(x.shape[0], -1))


class Mobile(nn.Module):
    """A 3x3 stem, a depthwise 3x3, a pointwise 1x1, a 5x5 conv and a bfloat16 Dense head."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(8, (3, 3), name='stem')(x))
        x = nn.relu(nn.Conv(8, (3, 3), feature_group_count=8, name='dw')(x))
        x = nn.relu(nn.Conv(16, (1, 1), use_bias=False, name='pw')(x))
        x = nn.Conv(4, (5, 5), name='big')(x)
        return nn.Dense(10, param_dtype=jnp.bfloat16, name='head')(jnp.mean(x, (1, 2)))


def random_variables(model, input_shape, seed=0):
    """Variables of `model` with random values (abstract init: no real init work)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape)))
    rng = np.random.default_rng(seed)
    fill = lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype)
    variables = jax.tree.map(fill, dict(shapes))
    if 'batch_stats' in variables:  # positive variances
        variables['batch_stats'] = jax.tree.map(lambda x: np.abs(x) + 0.5, variables['batch_stats'])
    return variables


def bits(x):
    x = np.asarray(x)
    return x.view(f'u{x.dtype.itemsize}')


def check_roundtrip(comp, variables, tmp_path):
    """save -> load -> reconstruct keeps the tree, shapes, dtypes, copied leaves, predictions."""
    path = comp.save(tmp_path / 'net.nrnp')
    loaded = nrnp.load(path)
    rebuilt = loaded.reconstruct()
    assert jax.tree.structure(rebuilt) == jax.tree.structure(variables)
    flat_in = compressed.flatten_variables(variables if 'params' in variables else {'p': variables})
    flat_out = compressed.flatten_variables(rebuilt if 'params' in rebuilt else {'p': rebuilt})
    for path_, x in flat_in.items():
        assert flat_out[path_].shape == x.shape and flat_out[path_].dtype == x.dtype, path_
    # the exact rebuild of the training code, from a fresh `prepare`
    params = variables['params'] if 'params' in variables else variables
    config = ml_collections.ConfigDict(loaded.config)
    prep = problem.prepare(params, config, log=lambda s: None)
    np.testing.assert_array_equal(loaded.coordinates(), prep.coords)
    pparams = jax.tree.map(jnp.asarray, loaded.predictor_params)
    expected = predictor.reconstruct(prep.pmodel, prep.layout, pparams, prep.encoded, params)
    represented = {layer.path for layer in prep.layout.layers}
    got = compressed.flatten_variables(rebuilt['params'] if 'params' in rebuilt else rebuilt)
    half = {leaf.path[1:] for leaf in loaded.leaves if leaf.stored == 'float16'}
    for path_, x in compressed.flatten_variables(expected).items():
        if path_ not in represented:
            x = params_get(params, path_)  # copied leaves: the input's, bit for bit,
            x = x.astype(np.float16).astype(x.dtype) if path_ in half else x  # or as stored
        np.testing.assert_array_equal(bits(got[path_]), bits(x), err_msg=str(path_))
    # size report: the parts add up and match the file
    report = loaded.size_report()
    parts = ('predictor_bytes', 'ordering_bytes', 'copied_bytes', 'header_bytes')
    assert report['payload_bytes'] == sum(report[k] for k in parts)
    assert report['copied_bytes'] == report['copied_params_bytes'] + report['batch_stats_bytes']
    assert report['artifact_bytes'] == (tmp_path / 'net.nrnp').stat().st_size
    codec = [permutation_codec.encoded_nbytes(layer.kernel_slots) for layer in prep.layout.layers]
    assert report['ordering_bytes'] == (0 if loaded.ordering == 'none' else sum(codec))
    assert report['represented_params'] == prep.layout.num_params
    assert report['predictor_params'] == prep.predictor_params
    assert report['param_ratio'] == pytest.approx(prep.predictor_params / prep.layout.num_params)
    original = sum(x.nbytes for x in flat_in.values())
    assert report['original_bytes'] == original
    assert report['disk_ratio'] == pytest.approx(report['artifact_bytes'] / original)
    assert 'on-disk ratio' in str(loaded)
    return loaded, rebuilt


def params_get(tree, path):
    for name in path:
        tree = tree[name]
    return tree


def test_resnet20_data_free(tmp_path):
    model = models.build_model('resnet20', 10)
    variables = random_variables(model, (1, 32, 32, 3))
    logs = []
    comp = nrnp.compress(variables, kernels__ordering='none', log=logs.append, **FAST)
    assert any('data-free' in line and 'distill__steps 300 -> 0' in line for line in logs)
    assert [r['kind'] for r in comp.history] == ['init', 'reconstruct']
    assert comp.metrics['top1_original'] is None and np.isfinite(
        comp.metrics['reconstruction_rmse']
    )
    assert len(comp.layout.layers) == 19 and comp.positions == []
    loaded, rebuilt = check_roundtrip(comp, variables, tmp_path)
    assert set(rebuilt) == {'params', 'batch_stats'}
    assert loaded.history == [provenance.compact_record(r) for r in comp.history]


def test_vgg_with_data_distills_and_evaluates(tmp_path):
    model = VGG()
    variables = random_variables(model, (1, 8, 8, 3))
    rng = np.random.default_rng(1)
    images = [rng.standard_normal((4, 8, 8, 3)).astype(np.float32) for _ in range(3)]
    labels = np.arange(6) % 10
    logs = []
    comp = nrnp.compress(
        variables,
        model,
        data=[(x, labels[:4]) for x in images],
        test_data=(np.concatenate(images[:2])[:6], labels),
        distill__steps=3,
        distill__batch_size=4,
        distill__kernel_batch_size=64,
        log=logs.append,
        **FAST,
    )
    kinds = ['init', 'reconstruct', 'recalibrate', 'distill']
    assert [r['kind'] for r in comp.history] == kinds  # BatchNorm re-estimated on `data`
    assert any('fm_weight -> 0' in line for line in logs)
    assert comp.config['distill']['fm_weight'] == 0.0
    assert 0 <= comp.metrics['top1_original'] <= 100
    kept = [r for r in comp.history if r.get('label') == comp.metrics['kept_phase']]
    assert len(kept) == 1 and comp.metrics['top1_reconstructed'] == kept[0]['top1']
    assert all(r['heldout'] is not None for r in comp.history[1:])  # scored on `data`
    assert comp.history[0]['top1'] is None  # the untrained predictor only with eval_init
    assert all(r['top1'] is not None for r in comp.history[1:])
    loaded, _ = check_roundtrip(comp, variables, tmp_path)
    assert loaded.metrics == comp.metrics


def test_mobile_depthwise_dense_bare_params(tmp_path):
    model = Mobile()
    params = random_variables(model, (1, 8, 8, 3))['params']  # bare params: no 'params' key
    config = default.get_config()
    comp = nrnp.compress(
        params,
        config=config,
        kernels__dense=True,
        kernels__large='tile',
        kernels__ordering='crossfilter',
        **FAST,
        log=None,
    )
    names = [layer.name for layer in comp.layout.layers]
    assert names == ['big/kernel', 'dw/kernel', 'head/kernel', 'pw/kernel', 'stem/kernel']
    assert comp.layout.layers[1].shape == (3, 3, 1, 8)  # depthwise
    assert comp.layout.layers[2].rank == 2 and comp.layout.layers[2].dtype == 'bfloat16'
    assert [p.dtype for p in comp.positions] == [np.uint8] * 5
    assert config.kernels.dense is False and config.predictor.hidden == 64  # not modified
    _, rebuilt = check_roundtrip(comp, params, tmp_path)
    assert set(rebuilt) == set(params) and rebuilt['head']['bias'].dtype == jnp.bfloat16
    logits = model.apply({'params': rebuilt}, jnp.ones((2, 8, 8, 3)))
    assert logits.shape == (2, 10) and np.isfinite(np.asarray(logits, np.float32)).all()


def test_smallcnn_feature_maps_and_resume(tmp_path):
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    # Freshly initialised (BatchNorm bias and mean 0) and a blank first batch: its feature
    # maps are exactly zero, where a plain L2 norm's gradient is NaN.
    variables = models.init_variables(model, (1, 8, 8, 1), seed=0)
    batches = [np.ones((4, 8, 8, 1), np.float32) * i for i in range(2)]
    kwargs = dict(data=batches, distill__steps=2, distill__batch_size=4, log=None, **FAST)
    kwargs['distill__kernel_batch_size'] = 32
    first = nrnp.compress(variables, model, workdir=tmp_path / 'w', **kwargs)
    assert first.config['distill']['fm_weight'] == 1.0  # SmallCNN sows its feature maps
    logs = []
    again = nrnp.compress(
        variables, model, workdir=tmp_path / 'w', **{**kwargs, 'log': logs.append}
    )
    assert any('resuming from checkpoint' in line for line in logs)
    jax.tree.map(np.testing.assert_array_equal, first.predictor_params, again.predictor_params)
    kinds = ['init', 'reconstruct', 'recalibrate', 'distill']
    assert [r['kind'] for r in again.history] == kinds


def test_bad_arguments():
    params = random_variables(VGG(), (1, 8, 8, 3))['params']
    with pytest.raises(ValueError, match=r"predictor__hiden: no such .* 'predictor__hidden'"):
        nrnp.compress(params, predictor__hiden=3)
    with pytest.raises(ValueError, match=r'nosuch__x: no such config field'):
        nrnp.compress(params, nosuch__x=3)
    with pytest.raises(ValueError, match='predictor is a section'):
        nrnp.compress(params, predictor=3)
    with pytest.raises(TypeError, match='predictor__hidden'):
        nrnp.compress(params, predictor__hidden='wide')
    with pytest.raises(ValueError, match='need the model'):
        nrnp.compress(params, data=[np.zeros((1, 8, 8, 3), np.float32)])


def test_apply_overrides_converts_lists_to_tuples():
    config = default.get_config()
    catalog.apply_overrides(config, {'predictor__hidden': 7, 'kernels__sizes': [3]})
    assert config.predictor.hidden == 7 and config.kernels.sizes == (3,)


class NoTrain(nn.Module):
    """A conv net whose __call__ takes no `train` argument."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(jnp.mean(nn.Conv(4, (3, 3))(x), (1, 2)))


class Softmaxed(nn.Module):
    """A conv net that returns probabilities instead of logits."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return jax.nn.softmax(nn.Dense(10)(jnp.mean(nn.Conv(4, (3, 3))(x), (1, 2))))


def _refused_before_work(call, error, message):
    """`call(log)` raises `error` matching `message` before the kernel table is built."""
    logs = []
    with pytest.raises(error, match=message):
        call(logs.append)
    assert not any('kernel table' in line for line in logs), logs


def test_library_inputs_are_checked_before_any_training():
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    variables = random_variables(model, (1, 8, 8, 1))
    batch = np.random.default_rng(0).standard_normal((4, 8, 8, 1)).astype(np.float32)
    generator = (batch for _ in range(3))
    cases = [
        (lambda log: nrnp.compress(variables, model, data=generator, log=log), 'one-pass'),
        (lambda log: nrnp.compress(variables, model, data=[], log=log), 'data is empty'),
        (lambda log: nrnp.compress('x.th', log=log), r'dict of arrays.*load_target'),
        (
            lambda log: nrnp.compress(variables, reconstruct__steps=-5, log=log),
            r'reconstruct__steps=-5: must be a number >= 0',
        ),
        (
            lambda log: nrnp.compress(variables, predictor__hidden=0, log=log),
            r'predictor__hidden=0: must be a number >= 1',
        ),
        (
            lambda log: nrnp.compress(variables, kernels__ordering='zigzag', log=log),
            r"kernels__ordering='zigzag': must be one of 'none', 'infilter', 'crossfilter'",
        ),
        (
            lambda log: nrnp.compress(variables, model, test_data=(batch, np.zeros(3)), log=log),
            r'test_data must be \(images \[N, H, W, C\], labels \[N\]\)',
        ),
    ]
    for call, message in cases:
        _refused_before_work(call, errors.BadInput, message)
    notrain = NoTrain()
    nt_vars = random_variables(notrain, (1, 8, 8, 1))
    _refused_before_work(
        lambda log: nrnp.compress(nt_vars, notrain, data=[batch], log=log, **FAST),
        errors.BadInput,
        r'model.apply\(variables, x, train=False\) failed',
    )
    soft = Softmaxed()
    soft_vars = random_variables(soft, (1, 8, 8, 1))
    _refused_before_work(
        lambda log: nrnp.compress(soft_vars, soft, test_data=(batch, np.zeros(4)), log=log),
        errors.BadInput,
        'returns probabilities',
    )


def test_nan_weights_are_named():
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    variables = random_variables(model, (1, 8, 8, 1))
    variables['params']['conv2']['kernel'][0, 0, 0, 0] = np.nan
    with pytest.raises(errors.NonFiniteError, match='params/conv2/kernel'):
        nrnp.compress(variables, log=None, **FAST)


def test_frozendict_in_frozendict_out(tmp_path):
    from flax.core import FrozenDict, freeze

    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    variables = freeze(random_variables(model, (1, 8, 8, 1)))
    comp = nrnp.compress(variables, log=None, **FAST)
    for rebuilt in (comp.reconstruct(), nrnp.load(comp.save(tmp_path / 'f.nrnp')).reconstruct()):
        assert isinstance(rebuilt, FrozenDict)
        assert jax.tree.structure(rebuilt) == jax.tree.structure(variables)
        stored = np.asarray(variables['batch_stats']['bn1']['mean']).astype(np.float16)
        np.testing.assert_array_equal(rebuilt['batch_stats']['bn1']['mean'], stored)


def test_workdir_holding_another_run_is_refused(tmp_path):
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    variables = random_variables(model, (1, 8, 8, 1))
    workdir = tmp_path / 'w'
    nrnp.compress(variables, workdir=workdir, log=None, **FAST)
    files = {  # (the lock file records each caller that takes the lock: not run data)
        p: p.read_bytes()
        for p in workdir.rglob('*')
        if p.is_file() and 'tensorboard' not in str(p) and p.name != '.lock'
    }
    for change in (
        {'kernels__ordering': 'none'},
        {'seed': 1},
        {'reconstruct__learning_rate': 1e-3},
    ):
        with pytest.raises(errors.WorkdirError, match=r'(?s)holds another run.*overwrite=True'):
            nrnp.compress(variables, workdir=workdir, log=None, **{**FAST, **change})
    other = {**variables, 'params': jax.tree.map(lambda x: x + 1, variables['params'])}
    with pytest.raises(errors.WorkdirError, match='input variables'):
        nrnp.compress(other, workdir=workdir, log=None, **FAST)
    for path, payload in files.items():
        assert path.read_bytes() == payload, path  # nothing rewritten
    again = nrnp.compress(
        variables, workdir=workdir, log=None, overwrite=True, **{**FAST, 'seed': 1}
    )
    assert again.config['seed'] == 1


class DenseOnly(nn.Module):
    """No conv at all: a Dense head on flattened pixels."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(10, name='fc')(x.reshape(x.shape[0], -1))


class BigConvs(nn.Module):
    """Only a 5x5 and a 7x7 conv: nothing the default sizes (1, 3) represent."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (5, 5), name='c5')(x)
        return jnp.mean(nn.Conv(10, (7, 7), name='c7')(x), (1, 2))


def test_more_refusals_before_any_work():
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    variables = random_variables(model, (1, 8, 8, 1))
    good = np.random.default_rng(0).standard_normal((4, 8, 8, 1)).astype(np.float32)
    dense = random_variables(DenseOnly(), (1, 8, 8, 1))
    big = random_variables(BigConvs(), (1, 8, 8, 1))
    listed = {**variables, 'params': {**variables['params'], 'step': 3}}
    strings = {**variables, 'params': {**variables['params'], 'names': np.array(['a', 'b'])}}
    cases = [
        (
            lambda log: nrnp.compress(variables, model, data=[good, good[:2]], log=log),
            r'data batch 1 has shape \(2, 8, 8, 1\) but batch 0 has \(4, 8, 8, 1\)',
        ),
        (
            lambda log: nrnp.compress(variables, model, data=[good, good, good[..., :0]], log=log),
            r'data batch 2 has shape \(4, 8, 8, 0\)',
        ),
        (
            lambda log: nrnp.compress(variables, model, data=[np.ones((4, 8, 8, 3))], log=log),
            r'cannot be applied to data batch 0 of shape \(4, 8, 8, 3\)',
        ),
        (
            lambda log: nrnp.compress(dense, DenseOnly(), log=log),
            r'nothing to represent.*kernels__dense=True represents fc/kernel',
        ),
        (
            lambda log: nrnp.compress(big, BigConvs(), log=log),
            r"nothing to represent.*kernels__large='tile' represents c5/kernel, c7/kernel",
        ),
        (lambda log: nrnp.compress(listed, log=log), r'variables leaf params/step is a int'),
        (lambda log: nrnp.compress(strings, log=log), r'leaf params/names is a ndarray of dtype'),
    ]
    for call, message in cases:
        _refused_before_work(call, errors.BadInput, message)


def test_images_are_checked_as_the_cli_checks_them_before_any_work():
    """Issue 27: floats taken as normalised that are not, blank images, NaN pixels (named),
    an input_shape the model cannot take, and data and test_data of different sizes."""
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))  # global pooling: any size
    variables = random_variables(model, (1, 8, 8, 1))
    rng = np.random.default_rng(0)
    good = rng.standard_normal((8, 8, 8, 1)).astype(np.float32)
    labels = np.arange(8) % 10
    pixels = rng.integers(0, 256, good.shape).astype(np.float64)  # 0-255 as float64
    nan_batch, nan_test = good.copy(), good.copy()
    nan_batch[2, 3, 4, 0] = np.nan
    nan_test[5, 0, 0, 0] = np.inf
    big = rng.standard_normal((8, 16, 16, 1)).astype(np.float32)

    def run(**kwargs):
        return lambda log: nrnp.compress(variables, model, log=log, **kwargs)

    cases = [
        (run(data=(pixels, labels)), r'data holds float images of whole numbers from 0 to 255'),
        (run(data=(50 * good, labels)), r'data holds float images from -\d.*not normalised'),
        (run(data=(np.zeros_like(good), labels)), 'data is blank: all its 8 images are zeros'),
        (run(data=[good[:4], nan_batch[:4]]), 'data batch 1 image 2 holds NaN or infinite'),
        (run(test_data=(nan_test, labels)), 'test_data image 5 holds NaN or infinite pixels'),
        (run(input_shape=(8, 8, 3)), r'input_shape=\(8, 8, 3\) does not fit the model'),
        (
            run(data=(good, labels), test_data=(big, labels)),
            r'differ in size \(H, W, C\): data \(8, 8, 1\), test_data \(16, 16, 1\)',
        ),
        (run(data=(good, labels), input_shape=(16, 16, 1)), r'data \(8, 8, 1\), input_shape'),
    ]
    for call, message in cases:
        _refused_before_work(call, errors.BadInput, message)


def test_a_config_lacking_sections_is_refused_naming_them():
    config = ml_collections.ConfigDict({'seed': 0, 'predictor': default.get_config().predictor})
    with pytest.raises(errors.ConfigError, match=r'config= lacks the sections data, distill'):
        nrnp.compress({'w': np.zeros((3, 3, 1, 2), np.float32)}, config=config, log=None)


def test_a_workdir_in_use_is_refused(tmp_path):
    from nrnp.pipeline import locks

    variables = random_variables(models.build_model('smallcnn', 10, widths=(4, 8, 8)), (1, 8, 8, 1))
    held = locks.WorkdirLock(str(tmp_path))
    with pytest.raises(errors.WorkdirError, match=r'in use by another nrnp run.*workdir='):
        nrnp.compress(variables, workdir=tmp_path, log=None, **FAST)
    held.release()


def test_nan_message_says_what_is_kept_and_the_fix_is_accepted(tmp_path):
    variables = random_variables(models.build_model('smallcnn', 10, widths=(4, 8, 8)), (1, 8, 8, 1))
    bad = dict(FAST, reconstruct__optimizer='adam', reconstruct__learning_rate=1e30)
    with pytest.raises(errors.NonFiniteError, match='no checkpoint was written yet') as e:
        nrnp.compress(variables, workdir=tmp_path, log=None, **bad)
    assert 'last good checkpoint' not in str(e.value)
    assert 'at step 2 of the phase (learning rate 7.5e+29)' in str(e.value)  # its cosine
    assert 'Lower reconstruct.learning_rate' in str(e.value)
    fixed = nrnp.compress(
        variables, workdir=tmp_path, log=None, **dict(bad, reconstruct__learning_rate=1e-3)
    )
    assert np.isfinite(fixed.metrics['reconstruction_rmse'])


def test_nan_message_names_the_checkpoint_only_when_one_is_kept():
    import types

    from nrnp.training import phases, schedule

    phase = schedule.build_schedule(default.get_config('tiny'))[0]
    ctx = types.SimpleNamespace(temporary=True, saved={}, workdir='/w')
    nan = {'recon/loss': np.nan, 'recon/lr': 5e-3}
    with pytest.raises(errors.NonFiniteError, match='no checkpoint is kept') as e:
        phases._check_finite(ctx, nan, phase, 3)
    assert '/w' not in str(e.value)  # a temporary workdir is deleted: never point at it
    ctx.temporary, ctx.saved['step'] = False, 20
    with pytest.raises(
        errors.NonFiniteError, match=r'checkpoint \(step 20\) stays in /w/checkpoints'
    ):
        phases._check_finite(ctx, nan, phase, 3)


def test_load_rebuilds_the_weights_the_run_evaluated(tmp_path, monkeypatch):
    """Issue 24: the coded int6 artefact, loaded from disk, rebuilds bit for bit the
    variables whose top-1 the run reported (quantized predictor, float16 copies and
    re-estimated statistics included), not a near copy."""
    from nrnp.training import evaluation

    evaluated = []
    real = evaluation.top1_batches

    def recording(model, v, batches, mesh):
        top1 = real(model, v, batches, mesh)
        evaluated.append((jax.tree.map(np.asarray, jax.device_get(v)), top1))
        return top1

    monkeypatch.setattr(evaluation, 'top1_batches', recording)
    model = VGG()
    variables = random_variables(model, (1, 8, 8, 3))
    rng = np.random.default_rng(2)
    images = rng.standard_normal((8, 8, 8, 3)).astype(np.float32)
    labels = np.arange(8) % 10
    comp = nrnp.compress(
        variables,
        model,
        data=(images, labels),
        test_data=(images, labels),
        distill__steps=2,
        distill__batch_size=4,
        distill__kernel_batch_size=64,
        predictor__quantize='int6',
        log=lambda s: None,
        **FAST,
    )
    rebuilt = nrnp.load(comp.save(tmp_path / 'net.nrnp')).reconstruct()
    assert comp.predictor_settings['quantize'] == 'int6'

    def same(v):
        a, b = compressed.flatten_variables(v), compressed.flatten_variables(rebuilt)
        return a.keys() == b.keys() and all(
            a[k].dtype == b[k].dtype and np.array_equal(bits(a[k]), bits(b[k])) for k in a
        )

    # the test-set evaluation that reported its top-1 (held-out agreement scores too)
    matches = [top1 for v, top1 in evaluated if same(v)]
    assert comp.metrics['top1_reconstructed'] in matches, (matches, comp.metrics)
    assert not same(variables)  # the rebuild is the compressed net, not the original

"""The `.nrnp` file: round trips (quantized predictors, version 1 files), orderings as
positions, refusal of foreign files, state-dict export."""

import dataclasses
import json
import os
import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nrnp
from nrnp import errors
from nrnp.artifact import storage
from nrnp.core import coordinates, kernels, permutation_codec, predictor, quantize
from nrnp.data import batching
from nrnp.nets import loading, models, state_dicts
from nrnp.nets.trees import flatten_variables


def random_variables(model, input_shape, seed=0):
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape)))
    rng = np.random.default_rng(seed)
    variables = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
    return {k: dict(v) for k, v in variables.items()}


@pytest.fixture(scope='module')
def compressed():
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    variables = random_variables(model, (1, 8, 8, 1))
    comp = nrnp.compress(
        variables,
        reconstruct__steps=2,
        reconstruct__batch_size=64,
        predictor__hidden=8,
        predictor__quantize='none',  # the format's float parts; quantized ones below
        encoding__levels=4,
        log=None,
    )
    return model, variables, comp


@pytest.fixture
def saved(compressed, tmp_path):
    return compressed[2].save(tmp_path / 'net.nrnp')


def _rewrite(src, dst, edit):
    """Copies an artefact, letting `edit(members, header)` change it."""
    with np.load(src, allow_pickle=False) as f:
        members = {k: f[k] for k in f.files}
    header = storage.decode_header(members.pop('header'))
    edit(members, header)
    members['header'] = storage.encode_header(header)
    with open(dst, 'wb') as f:  # a path without .npz would get one appended
        np.savez(f, **members)
    return dst


class _Evil:
    def __reduce__(self):
        return (os.mkdir, (os.environ['NRNP_EVIL_DIR'],))


def test_save_load_keeps_everything(compressed, saved):
    _, variables, comp = compressed
    loaded = nrnp.load(saved)
    assert loaded.layout == comp.layout and loaded.leaves == comp.leaves
    assert loaded.encoding == comp.encoding and loaded.predictor_settings == comp.predictor_settings
    jax.tree.map(np.testing.assert_array_equal, loaded.predictor_params, comp.predictor_params)
    for a, b in zip(loaded.positions, comp.positions, strict=True):
        assert a.dtype == b.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
    jax.tree.map(np.testing.assert_array_equal, loaded.reconstruct(), comp.reconstruct())
    jax.tree.map(np.testing.assert_array_equal, loaded.batch_stats, variables['batch_stats'])
    with np.load(saved, allow_pickle=False) as f:
        assert sorted(f.files) == ['copied', 'header', 'ordering', 'predictor']
        assert all(f[k].dtype == np.uint8 and f[k].ndim == 1 for k in f.files)
        assert f['header'][0] == 0x78  # zlib
        assert storage.decode_header(f['header'])['version'] == 2


def test_evaluate_is_the_top1_of_the_rebuilt_network(compressed, saved):
    model, _, comp = compressed
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (23, 8, 8, 1), np.uint8)
    rebuilt = comp.reconstruct()
    normalised = batching.normalise(images, (0.5,), (0.25,))  # the run's (default) mean/std
    labels = np.array(jnp.argmax(model.apply(rebuilt, normalised, train=False), -1))
    labels[::3] = (labels[::3] + 1) % 10  # 8 of 23 wrong
    expected = 100 * 15 / 23
    assert comp.evaluate(model, images, labels) == pytest.approx(expected)
    assert comp.evaluate(model, images, labels, batch_size=5) == pytest.approx(expected)  # padded
    assert comp.evaluate(model, normalised, labels) == pytest.approx(expected)
    assert nrnp.load(saved).evaluate(model, images, labels) == pytest.approx(expected)
    other = comp.evaluate(model, images, labels, mean=(0.0,), std=(1.0,))
    manual = (images / 255).astype(np.float32)
    hits = jnp.argmax(model.apply(rebuilt, manual, train=False), -1) == labels
    assert other == pytest.approx(100 * float(jnp.mean(hits)))
    with pytest.raises(ValueError, match=r'labels \[N\]'):
        comp.evaluate(model, images, labels[:-1])
    with pytest.raises(ValueError, match='pass mean= and std='):
        dataclasses.replace(comp, config={}).evaluate(model, images, labels)


def test_foreign_truncated_and_wrong_version_files_raise(saved, tmp_path, monkeypatch):
    raw = open(saved, 'rb').read()
    cases = {}
    cases['truncated.nrnp'] = raw[: len(raw) // 2]
    cases['empty.nrnp'] = b''
    cases['random.nrnp'] = np.random.default_rng(0).bytes(4096)
    monkeypatch.setenv('NRNP_EVIL_DIR', str(tmp_path / 'evil'))
    cases['pickle.nrnp'] = pickle.dumps({'header': _Evil()})
    cases['weights.h5'] = b'\x89HDF\r\n\x1a\n' + bytes(64)
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
    np.savez(tmp_path / 'plain.npz', weights=np.ones(3))
    np.save(tmp_path / 'single.npy', np.ones(3))
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'compressed.nrnp').write_bytes(raw)
    bad = {
        'truncated.nrnp': 'not a readable',
        'empty.nrnp': r'not an nrnp artefact \(starts with',
        'random.nrnp': 'not an nrnp artefact',
        'pickle.nrnp': r'not an nrnp artefact \(a pickle',
        'weights.h5': r'not an nrnp artefact \(an HDF5 file',
        'plain.npz': 'without a header',
        'single.npy': 'single .npy',
        'missing.nrnp': 'no such file',
        'run': r'is a directory; .* did you mean .*run/compressed.nrnp',
    }

    def version(members, header):
        header['version'] = 99

    def foreign(members, header):
        header['format'] = 'something.else'

    def drop(members, header):
        del members['copied']

    def shuffle(members, header):
        members['ordering'] = np.full_like(members['ordering'], 0xFF)

    def cut(members, header):
        members['predictor'] = members['predictor'][:-1]

    def codec(members, header):
        header['ordering_codec'] = 'zigzag'

    def lose(members, header):
        del header['layout']

    for name, edit, message in [
        ('v99.nrnp', version, 'version 99 is not supported'),
        ('foreign.nrnp', foreign, "format 'something.else'"),
        ('drop.nrnp', drop, "missing array 'copied'"),
        ('shuffle.nrnp', shuffle, 'ordering of layer 0 is not a valid permutation code'),
        ('cut.nrnp', cut, 'predictor leaf .* needs bytes'),
        ('codec.nrnp', codec, "unknown ordering codec 'zigzag'"),
        ('lose.nrnp', lose, 'header lacks layout'),
    ]:
        _rewrite(saved, tmp_path / name, edit)
        bad[name] = message
    for name, message in bad.items():
        path = str(tmp_path / name)
        with pytest.raises(nrnp.ArtifactError, match=message) as info:
            nrnp.load(path)
        assert path in str(info.value) and isinstance(info.value, ValueError)
        assert 'allow_pickle' not in str(info.value)  # nothing the caller could pass
    assert not (tmp_path / 'evil').exists()  # nothing was unpickled


@pytest.mark.parametrize('mode,group', [('bf16', 16), ('int8', 16), ('int5', 5), ('int4', 0)])
def test_quantized_predictor_round_trip(compressed, tmp_path, mode, group):
    model, variables, comp = compressed
    fp32 = comp.predictor_params
    settings = {**comp.predictor_settings, 'quantize': mode, 'quantize_group': group}
    quant = dataclasses.replace(comp, predictor_settings=settings, predictor_storage=None)
    scheme = quantize.Scheme(mode, group)
    assert quant.quantize == mode and quant.scheme == scheme
    expected = jax.tree.map(np.asarray, quantize.fake_quantize_tree(fp32, scheme))  # as stored
    jax.tree.map(np.testing.assert_array_equal, quant.predictor_params, expected)
    loaded = nrnp.load(quant.save(tmp_path / f'{mode}.nrnp'))
    assert loaded.quantize == mode and loaded.scheme == scheme
    jax.tree.map(np.testing.assert_array_equal, loaded.predictor_params, expected)
    # the rebuild is the dequantized predictor's, exactly
    pparams = jax.tree.map(jnp.asarray, expected)
    direct = predictor.reconstruct(
        loaded.predictor_module(), loaded.layout, pparams, loaded.encoded(), variables['params']
    )
    rebuilt = loaded.reconstruct()
    jax.tree.map(np.testing.assert_array_equal, rebuilt['params'], jax.device_get(direct))
    jax.tree.map(np.testing.assert_array_equal, rebuilt, quant.reconstruct())
    # sizes: the predictor part shrinks as the storage says
    sizes, full = loaded.size_report(), comp.size_report()
    flat = flatten_variables(fp32)
    kernels_ = [v for v in flat.values() if v.ndim == 2]
    bias_params = sum(v.size for v in flat.values() if v.ndim == 1)
    if mode == 'bf16':
        assert sizes['predictor_bytes'] == 2 * sum(v.size for v in flat.values())
        assert sizes['predictor_coding'] == 'none'
    else:
        bits = int(mode[3:])
        groups = sum(quantize.num_groups(v.shape[0], group) * v.shape[1] for v in kernels_)
        packed = sum(-(-v.size * bits // 8) for v in kernels_) + -(-groups * 4 // 8)
        floats = 2 * sum(v.shape[1] for v in kernels_) + 2 * bias_params  # float16
        assert sizes['predictor_codes_raw_bytes'] == packed
        assert sizes['predictor_codes_bytes'] <= packed
        assert sizes['predictor_bytes'] == floats + sizes['predictor_codes_bytes']
        assert sizes['predictor_coding'] in ('ans', 'packed')
    assert sizes['predictor_bytes'] < full['predictor_bytes'] == 4 * sizes['predictor_params']
    assert sizes['artifact_bytes'] == (tmp_path / f'{mode}.nrnp').stat().st_size
    assert sizes['quantize'] == mode and sizes['artifact_ratio'] == sizes['disk_ratio']


def test_float16_copied_leaves_are_what_the_file_holds(compressed, tmp_path):
    model, variables, comp = compressed
    leaves = [
        dataclasses.replace(leaf, stored='' if leaf.represented else 'float16')
        for leaf in comp.leaves
    ]
    half = dataclasses.replace(comp, leaves=leaves, copied=dict(comp.copied))
    half.__post_init__()
    for path, value in half.copied.items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, comp.copied[path].astype(np.float16))
    loaded = nrnp.load(half.save(tmp_path / 'half.nrnp'))
    assert loaded.minimum_version() == 4
    jax.tree.map(np.testing.assert_array_equal, loaded.reconstruct(), half.reconstruct())
    sizes = loaded.size_report()
    assert sizes['copied_bytes'] == comp.size_report()['copied_bytes'] // 2


def test_a_damaged_coded_stream_is_an_artifact_error(compressed, tmp_path):
    model, variables, comp = compressed
    settings = {**comp.predictor_settings, 'quantize': 'int4'}
    rng = np.random.default_rng(0)  # a predictor large enough for coding to pay
    pparams = {'dense0': {'kernel': rng.standard_normal((64, 96)).astype(np.float32)}}
    good = dataclasses.replace(
        comp, predictor_settings=settings, predictor_storage=None, predictor_params=pparams
    )
    path = good.save(tmp_path / 'good.nrnp')
    assert good.size_report()['predictor_coding'] == 'ans'

    def flip(members, header):
        blob = members['predictor'].copy()
        blob[-3] ^= 0x40  # inside the coded words (the zip CRC is rewritten by savez)
        members['predictor'] = blob

    bad = _rewrite(path, tmp_path / 'bad.nrnp', flip)
    with pytest.raises(nrnp.ArtifactError, match='damaged') as info:
        nrnp.load(bad)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize('mode', ['int4', 'int8'])
def test_files_of_nrnp_0_2_still_load(mode, tmp_path):
    """tests/data/nrnp02_*: written by nrnp 0.2 (format 2, one float32 scale per column)
    for the smallcnn of the `compressed` fixture; the sums were printed when they were made."""
    path = os.path.join(os.path.dirname(__file__), 'data', f'nrnp02_smallcnn_{mode}.nrnp')
    loaded = nrnp.load(path)
    assert loaded.quantize == mode and loaded.scheme == quantize.Scheme(mode, 0)
    assert {leaf.storage for leaf in loaded.predictor_storage.values()} == {mode, 'float32'}
    total = sum(np.asarray(x, np.float64).sum() for x in jax.tree.leaves(loaded.predictor_params))
    assert total == {'int4': -5.2935943538323045, 'int8': -5.5276375889079645}[mode]
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    variables = random_variables(model, (1, 8, 8, 1))
    rebuilt = loaded.reconstruct()
    for path_, value in flatten_variables(variables).items():
        assert rebuilt[path_[0]][path_[1]][path_[2]].shape == value.shape
        if path_[0] == 'batch_stats' or 'bias' in path_[-1] or 'Dense' in path_[1]:
            np.testing.assert_array_equal(
                rebuilt[path_[0]][path_[1]][path_[2]], value, err_msg=str(path_)
            )
    again = nrnp.load(loaded.save(tmp_path / 'again.nrnp'))  # re-saved as version 2
    jax.tree.map(np.testing.assert_array_equal, again.reconstruct(), rebuilt)


def _write_version_1(comp, path):
    """`comp` in format version 1 (nrnp <= a75393a): a plain JSON header and one npz member
    per array: `copied/<leaf index>`, float32 `predictor/<i>`, index arrays `ordering/<l>`."""
    header = {k: v for k, v in comp._header(2, 'none').items() if k != 'ordering_codec'}
    header['version'] = 1
    header['predictor'] = {k: v for k, v in header['predictor'].items() if k != 'quantize'}
    leaves = header['predictor_leaves'] = [
        {k: v for k, v in x.items() if k != 'storage'} for x in header['predictor_leaves']
    ]
    members = {'header': np.frombuffer(json.dumps(header).encode(), np.uint8)}
    for i, leaf in enumerate(comp.leaves):
        if not leaf.represented:
            members[f'copied/{i}'] = comp.copied[leaf.path]
    for i, x in enumerate(leaves):
        stored = comp.predictor_storage[tuple(x['path'])]
        members[f'predictor/{i}'] = np.asarray(quantize.dequantize_leaf(stored), np.float32)
    for i, positions in enumerate(comp.positions):
        members[f'ordering/{i}'] = positions
    with open(path, 'wb') as f:
        np.savez(f, **members)
    return path


def test_version_1_files_still_load(compressed, tmp_path):
    comp = compressed[2]
    v1 = _write_version_1(comp, tmp_path / 'v1.nrnp')
    loaded = nrnp.load(v1)
    assert loaded.quantize == 'none' and [p.dtype for p in loaded.positions] == [np.uint8] * 3
    expected = flatten_variables(comp.reconstruct())
    got = flatten_variables(loaded.reconstruct())
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=str(key))
    again = nrnp.load(loaded.save(tmp_path / 'v2.nrnp'))  # re-saved as version 2
    jax.tree.map(np.testing.assert_array_equal, again.reconstruct(), loaded.reconstruct())
    assert again.size_report()['artifact_bytes'] < v1.stat().st_size


@pytest.mark.parametrize('ordering', ['none', 'infilter', 'crossfilter', 'separable'])
def test_positions_rebuild_coordinates_exactly(ordering):
    rng = np.random.default_rng(0)
    params = {
        'a': {'kernel': rng.standard_normal((5, 5, 3, 4)).astype(np.float32)},  # 4 tiles each
        'b': {'kernel': rng.standard_normal((3, 3, 20, 20)).astype(np.float32)},  # 400 > 256
        'c': {'kernel': rng.standard_normal((1, 1, 20, 6)).astype(np.float32)},  # 3 groups each
        'd': {'kernel': rng.standard_normal((3, 3, 1, 300)).astype(np.float32)},  # depthwise
        'e': {'kernel': rng.standard_normal((1, 1, 300, 1)).astype(np.float32)},  # 34 groups
    }
    select = kernels.select_kernels(large='tile')
    layout = kernels.kernel_layout(params, select, depthwise=[('d', 'kernel')])
    assert [layer.kernel_slots for layer in layout.layers] == [12, 400, 18, 300, 34]
    table = kernels.gather(layout, params)
    coords = coordinates.kernel_coordinates(layout, table, ordering)
    positions = coordinates.layer_positions(layout, coords)
    assert [p.dtype for p in positions] == [np.uint8, np.uint16, np.uint8, np.uint16, np.uint8]
    for layer, p in zip(layout.layers, positions):  # each a permutation of its kernel slots
        np.testing.assert_array_equal(np.sort(p), np.arange(layer.kernel_slots))
    np.testing.assert_array_equal(coordinates.positions_to_coordinates(layout, positions), coords)
    stored = storage.pack_orderings(positions)  # what the artefact keeps (not for 'none')
    assert stored.size == sum(permutation_codec.encoded_nbytes(p.size) for p in positions)
    assert stored.size < sum(p.nbytes for p in positions)
    back = storage.unpack_orderings(stored, [p.size for p in positions])
    jax.tree.map(np.testing.assert_array_equal, back, positions)
    if ordering == 'none':
        np.testing.assert_array_equal(coordinates.positions_to_coordinates(layout, None), coords)
    slots = [layer.channel_slots for layer in layout.layers]
    if ordering in ('infilter', 'crossfilter'):  # chains over kernels have no two factors
        with pytest.raises(ValueError, match=r'the ordering of layer \d is not separable'):
            storage.pack_separable(positions, slots)
    if ordering != 'separable':
        return
    compact = storage.pack_separable(positions, slots)  # its filter and channel factors
    factors = [(layer.filters, layer.channel_slots) for layer in layout.layers]
    sizes = [permutation_codec.encoded_nbytes(n) for f in factors for n in f]
    assert compact.size == sum(sizes) < stored.size / 2  # 297 B against 652 B here
    jax.tree.map(
        np.testing.assert_array_equal, storage.unpack_separable(compact, factors), positions
    )
    with pytest.raises(ValueError, match='the ordering blob has'):
        storage.unpack_separable(np.concatenate([compact, compact[:1]]), factors)


def test_a_separable_ordering_is_stored_as_its_factors(compressed, tmp_path):
    model, variables, _ = compressed
    comp = nrnp.compress(
        variables,
        reconstruct__steps=2,
        reconstruct__batch_size=64,
        predictor__hidden=8,
        encoding__levels=4,
        kernels__ordering='separable',
        log=None,
    )
    loaded = nrnp.load(comp.save(tmp_path / 'separable.nrnp'))
    jax.tree.map(np.testing.assert_array_equal, loaded.positions, comp.positions)
    jax.tree.map(np.testing.assert_array_equal, loaded.reconstruct(), comp.reconstruct())
    factors = [(layer.filters, layer.channel_slots) for layer in comp.layout.layers]
    sizes = [permutation_codec.encoded_nbytes(n) for f in factors for n in f]
    assert comp.size_report()['ordering_bytes'] == sum(sizes)
    whole = sum(permutation_codec.encoded_nbytes(p.size) for p in comp.positions)
    assert sum(sizes) < whole  # what the full permutations took before


def test_export_state_dict_roundtrips_resnet20(tmp_path):
    model = models.build_model('resnet20', 10, shortcut='B')
    variables = random_variables(model, (1, 32, 32, 3))
    state_dict = state_dicts.export_state_dict(variables, tmp_path / 'r20.npz')
    assert 'layer2.0.shortcut.0.weight' in state_dict  # nrnp's (torchvision/akamaster) names
    assert state_dict['conv1.weight'].shape == (16, 3, 3, 3)  # OIHW
    read = state_dicts.read_state_dict(tmp_path / 'r20.npz')
    template = jax.eval_shape(lambda: variables)
    back = state_dicts.state_dict_to_variables(read, template)
    jax.tree.map(np.testing.assert_array_equal, back, variables)


class DepthwiseNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(6, (3, 3), feature_group_count=3, name='dw')(x)
        x = nn.BatchNorm(use_running_average=not train, name='block_1')(x)
        x = nn.PReLU(name='prelu')(x)  # a leaf nrnp's torch names do not cover
        return nn.Dense(5, name='head')(jnp.mean(x, (1, 2)))


def test_generic_state_dict_layout(tmp_path):
    variables = random_variables(DepthwiseNet(), (1, 4, 4, 3))
    sd = state_dicts.export_state_dict(variables, tmp_path / 'dw.npz')  # auto: generic here
    assert sorted(sd) == [
        'block_1.bias',
        'block_1.running_mean',
        'block_1.running_var',
        'block_1.weight',
        'dw.bias',
        'dw.weight',
        'head.bias',
        'head.weight',
        'prelu.negative_slope',
    ]
    p = variables['params']
    np.testing.assert_array_equal(sd['dw.weight'], p['dw']['kernel'].transpose(3, 2, 0, 1))
    assert sd['dw.weight'].shape == (6, 1, 3, 3)  # torch's grouped-conv weight
    np.testing.assert_array_equal(sd['head.weight'], p['head']['kernel'].T)
    np.testing.assert_array_equal(sd['block_1.weight'], p['block_1']['scale'])
    np.testing.assert_array_equal(
        sd['block_1.running_var'], variables['batch_stats']['block_1']['var']
    )
    read = state_dicts.read_state_dict(tmp_path / 'dw.npz')
    jax.tree.map(np.testing.assert_array_equal, read, sd)
    with pytest.raises(errors.CheckpointError):
        state_dicts.export_state_dict(variables, tmp_path / 'x.npz', naming='nrnp')


def test_export_torch_and_flax(compressed, tmp_path):
    _, variables, comp = compressed
    rebuilt = comp.reconstruct()
    comp.export_torch(tmp_path / 'net.npz')
    template = jax.eval_shape(lambda: variables)
    back = state_dicts.state_dict_to_variables(
        state_dicts.read_state_dict(tmp_path / 'net.npz'), template
    )
    jax.tree.map(np.testing.assert_array_equal, back, rebuilt)
    comp.export_flax(tmp_path / 'orbax')
    restored = loading.load_variables(tmp_path / 'orbax', template)
    jax.tree.map(np.testing.assert_array_equal, restored, rebuilt)


def _pointwise_params():
    rng = np.random.default_rng(2)
    return {
        'conv': {'kernel': rng.standard_normal((3, 3, 3, 6)).astype(np.float32)},
        'dw': {'kernel': rng.standard_normal((3, 3, 1, 6)).astype(np.float32)},
        'pw': {'kernel': rng.standard_normal((1, 1, 13, 5)).astype(np.float32)},  # 9 + 4
    }


def _untrained(pointwise):
    """An artefact of `_pointwise_params` with an untrained predictor (no training compiled)."""
    from nrnp.configs import default
    from nrnp.pipeline import problem, stored

    config = default.get_config()
    config.kernels.pointwise, config.predictor.hidden, config.encoding.levels = pointwise, 8, 4
    config.predictor.quantize = 'none'  # the layout's version alone
    params = _pointwise_params()
    prep = problem.prepare(params, config, log=lambda m: None, depthwise=[('dw', 'kernel')])
    pparams = predictor.init_predictor(prep.pmodel, prep.input_dim, prep.predictor_seed)
    record = {'kind': 'init', 'steps': 0, 'seconds': 0.0, 'top1': None, 'rmse': None}
    return stored.make_artifact({'params': params}, prep, config, pparams, [record])


@pytest.mark.parametrize('pointwise', ['grouped', 'centre'])
def test_pointwise_layouts_save_and_load(tmp_path, pointwise):
    comp = _untrained(pointwise)
    path = comp.save(tmp_path / f'{pointwise}.nrnp')
    with np.load(path, allow_pickle=False) as f:
        header = storage.decode_header(f['header'])
    groups = [layer['group'] for layer in header['layout']]
    assert groups == ([1, 1, 9] if pointwise == 'grouped' else [1, 1, 1])
    # Version 3 only where an nrnp reading versions 1-2 would misread the rows.
    assert header['version'] == (3 if pointwise == 'grouped' else 2)
    loaded = nrnp.load(path)
    assert loaded.layout == comp.layout
    assert [layer.kind for layer in loaded.layout.layers] == ['3x3', 'depthwise', 'pointwise']
    assert loaded.layout.num_kernels == 18 + 6 + (10 if pointwise == 'grouped' else 65)
    np.testing.assert_array_equal(loaded.coordinates(), comp.coordinates())
    jax.tree.map(np.testing.assert_array_equal, loaded.reconstruct(), comp.reconstruct())


def test_version_2_layout_without_new_fields_loads_and_bad_groups_are_refused(tmp_path):
    comp = _untrained('centre')
    saved = comp.save(tmp_path / 'centre.nrnp')

    def as_old_version_2(members, header):  # what nrnp wrote before the grouped rows
        header['layout'] = [
            {k: v for k, v in x.items() if k not in ('group', 'depthwise')}
            for x in header['layout']
        ]
        header['version'] = 2

    old = nrnp.load(_rewrite(saved, tmp_path / 'old.nrnp', as_old_version_2))
    assert [layer.group for layer in old.layout.layers] == [1, 1, 1]
    jax.tree.map(np.testing.assert_array_equal, old.reconstruct(), comp.reconstruct())

    def odd_group(members, header):
        header['layout'][0]['group'] = 9  # a 3x3 layer cannot have grouped rows

    with pytest.raises(errors.ArtifactError, match='conv/kernel has rows of 9 channels'):
        nrnp.load(_rewrite(saved, tmp_path / 'odd.nrnp', odd_group))

"""nrnp.nets.state_dicts, torch_pickle and loading: layout round trips, safe torch reading
and writing, mismatch summaries and hints, non-finite leaves, real akamaster weights."""

import io
import os
import pathlib
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nrnp import errors
from nrnp.nets import loading, models, state_dicts, torch_pickle

_REPO = pathlib.Path(__file__).resolve().parents[1]
_AKAMASTER = 'weights/akamaster-cifar10'
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _shared() -> pathlib.Path:
    shared = pathlib.Path(os.environ.get('NRNP_SHARED') or _REPO.parent / 'shared')
    if not (shared / _AKAMASTER).is_dir():
        pytest.skip(f'shared weights/data not found at {shared} (set NRNP_SHARED)')
    return shared


def _torch():
    return pytest.importorskip('torch', reason='torch is not installed')


def _random_variables(model, input_shape, seed=0):
    """Distinct random values for every leaf, without compiling init."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(lambda: models.init_variables(model, input_shape))
    fill = lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape).astype(np.float32))
    return jax.tree.map(fill, abstract)


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype == jnp.float32
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def option_b():
    model = models.build_model('resnet20', 10, shortcut='B', width=4)
    return _random_variables(model, (1, 8, 8, 3))


def test_state_dict_layout_and_exact_round_trip(option_b):
    state_dict = state_dicts.variables_to_state_dict(option_b)
    p = option_b['params']
    hwio = np.asarray(p['layer2_0']['conv1']['kernel'])  # [3, 3, 4, 8]
    np.testing.assert_array_equal(state_dict['layer2.0.conv1.weight'], hwio.transpose(3, 2, 0, 1))
    assert state_dict['layer2.0.shortcut.0.weight'].shape == (8, 4, 1, 1)
    assert state_dict['layer2.0.shortcut.1.running_var'].shape == (8,)
    assert state_dict['linear.weight'].shape == (10, 16)
    np.testing.assert_array_equal(state_dict['bn1.weight'], p['bn1']['scale'])
    assert len(state_dict) == len(jax.tree.leaves(option_b))
    _assert_trees_equal(state_dicts.state_dict_to_variables(state_dict, option_b), option_b)


def test_downsample_names_round_trip():
    variables = _random_variables(models.build_model('resnet18', 5), (1, 32, 32, 3))
    state_dict = state_dicts.variables_to_state_dict(variables)
    assert state_dict['layer3.0.downsample.0.weight'].shape == (256, 128, 1, 1)
    assert state_dict['layer3.0.downsample.1.running_mean'].shape == (256,)
    assert state_dict['fc.weight'].shape == (5, 512)
    _assert_trees_equal(state_dicts.state_dict_to_variables(state_dict, variables), variables)


def test_mismatches_are_all_reported(option_b):
    state_dict = state_dicts.variables_to_state_dict(option_b)
    state_dict['layer1.0.conv2.weight'] = np.zeros((4, 4, 5, 5), np.float32)
    del state_dict['layer3.2.bn1.running_mean']
    state_dict['layer9.0.conv1.weight'] = np.zeros((1,), np.float32)
    with pytest.raises(errors.CheckpointError) as info:
        state_dicts.state_dict_to_variables(state_dict, option_b)
    message = str(info.value)
    assert '3 problems' in message
    assert 'params/layer1_0/conv2/kernel <- layer1.0.conv2.weight' in message
    assert '(4, 4, 5, 5)' in message and '(4, 4, 3, 3)' in message
    assert 'missing: batch_stats/layer3_2/bn1/mean <- layer3.2.bn1.running_mean' in message
    assert 'unexpected: layer9.0.conv1.weight' in message


def test_foreign_pickles_are_refused_without_running_them(tmp_path):
    marker = tmp_path / 'pwned'

    class Evil:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))

    legacy = tmp_path / 'evil.th'
    legacy.write_bytes(pickle.dumps({'state_dict': Evil()}, protocol=2))
    archive = tmp_path / 'evil.pt'
    with zipfile.ZipFile(archive, 'w') as z:
        z.writestr('evil/data.pkl', pickle.dumps({'w': Evil()}, protocol=2))
    for path in (legacy, archive):
        with pytest.raises(errors.CheckpointError, match=r'forbidden global (posix|nt)\.system'):
            state_dicts.read_state_dict(path, use_torch=False)
    assert not marker.exists()


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(errors.CheckpointError, match='nope.th: no such'):
        state_dicts.read_state_dict(tmp_path / 'nope.th')
    junk = tmp_path / 'junk.th'
    junk.write_bytes(b'this is not a checkpoint')
    with pytest.raises(errors.CheckpointError, match='junk.th'):
        state_dicts.read_state_dict(junk, use_torch=False)
    bad_npz = tmp_path / 'bad.npz'
    bad_npz.write_bytes(b'PK\x03\x04 truncated')
    with pytest.raises(errors.CheckpointError, match='bad.npz'):
        state_dicts.read_state_dict(bad_npz)
    with pytest.raises(errors.CheckpointError, match='missing_dir'):
        loading.load_target(tmp_path / 'missing_dir', models.SmallCNN(), (1, 8, 8, 1))


def test_orbax_round_trip_and_load_target(tmp_path):
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    variables = _random_variables(model, (1, 8, 8, 1))
    loading.save_variables(tmp_path / 'target', variables)
    _assert_trees_equal(loading.load_variables(tmp_path / 'target', variables), variables)
    _assert_trees_equal(loading.load_target(tmp_path / 'target', model, (1, 8, 8, 1)), variables)
    np.savez(tmp_path / 'target.npz', **state_dicts.variables_to_state_dict(variables))
    from_npz = loading.load_target(tmp_path / 'target.npz', model, (1, 8, 8, 1))
    _assert_trees_equal(from_npz, variables)


def test_restricted_reader_matches_torch_on_zip_format(tmp_path):
    torch = _torch()
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    tensors = {
        'module.a.weight': base.permute(2, 0, 1),  # non-contiguous strides
        'module.a.bias': base[1, 1:, 2:],  # storage offset into a shared storage
        'module.b.running_mean': torch.randn(7, dtype=torch.float64),
        'module.b.num_batches_tracked': torch.tensor(3),
        'module.c.idx': torch.tensor([1, 2, 3]),
    }
    path = tmp_path / 'ckpt.pt'
    torch.save({'model': tensors, 'epoch': 3}, path)
    restricted = state_dicts.read_state_dict(path, use_torch=False)
    via_torch = state_dicts.read_state_dict(path, use_torch=True)
    expected_keys = ['a.bias', 'a.weight', 'b.running_mean', 'c.idx']
    assert sorted(restricted) == sorted(via_torch) == expected_keys
    for key, value in via_torch.items():
        assert restricted[key].dtype == value.dtype
        np.testing.assert_array_equal(restricted[key], value)
    np.testing.assert_array_equal(restricted['a.weight'], base.permute(2, 0, 1).numpy())


def test_truncated_checkpoints(tmp_path):
    raw = (_shared() / _AKAMASTER / 'resnet20-12fca82f.th').read_bytes()
    for cut in (10, len(raw) // 2, len(raw) - 5):
        path = tmp_path / f'cut{cut}.th'
        path.write_bytes(raw[:cut])
        with pytest.raises(errors.CheckpointError, match=f'cut{cut}.th'):
            state_dicts.read_state_dict(path, use_torch=False)
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    # torch's own error is replaced by the restricted reader's, which names the damage.
    with pytest.raises(errors.CheckpointError, match=f'cut{cut}.th: truncated data'):
        state_dicts.read_state_dict(path, use_torch=True)


@pytest.mark.parametrize('stem', ['resnet20-12fca82f', 'resnet56-4bfd9763'])
def test_th_and_npz_are_bit_identical(stem):
    weights = _shared() / _AKAMASTER
    from_npz = state_dicts.read_state_dict(weights / f'{stem}.npz')
    readers = {'restricted': state_dicts.read_state_dict(weights / f'{stem}.th', use_torch=False)}
    try:
        readers['torch'] = state_dicts.read_state_dict(weights / f'{stem}.th', use_torch=True)
    except ImportError:
        pass
    assert 'layer1.0.conv1.weight' in from_npz and 'bn1.num_batches_tracked' not in from_npz
    for state_dict in readers.values():
        assert sorted(state_dict) == sorted(from_npz)
        for key, value in from_npz.items():
            assert state_dict[key].dtype == value.dtype == np.float32
            assert state_dict[key].tobytes() == value.tobytes(), key


@pytest.mark.parametrize(
    'name, file', [('resnet20', 'resnet20-12fca82f.th'), ('resnet56', 'resnet56-4bfd9763.npz')]
)
def test_akamaster_nets_classify_first20(name, file):
    shared = _shared()
    data = np.load(shared / 'data/cifar-test-first20/foolbox_cifar10_test_first20.npz')
    images = (data['x'].astype(np.float32) / 255.0 - _MEAN) / _STD  # [20, 32, 32, 3]
    model = models.build_model(name, 10)
    variables = loading.load_target(shared / _AKAMASTER / file, model, (1, 32, 32, 3))
    logits = model.apply(variables, jnp.asarray(images), train=False)  # [20, 10]
    correct = int((np.argmax(logits, -1) == data['y']).sum())
    assert correct >= 19


def test_resnet56_given_to_resnet20_is_summarised_with_a_hint():
    path = _shared() / _AKAMASTER / 'resnet56-4bfd9763.th'
    with pytest.raises(errors.CheckpointError) as info:
        loading.load_target(path, models.build_model('resnet20', 10), (1, 32, 32, 3))
    message = str(info.value)
    assert message.startswith(f'{path}: state dict does not match the model (180 problems: ')
    assert '0 missing, 180 unexpected, 0 shape mismatches' in message
    assert 'unexpected: layer1.3.conv1.weight (16, 16, 3, 3)' in message
    assert '... and 174 more unexpected' in message
    assert message.endswith(
        'looks like resnet56 (option A, 10 classes): set --config.teacher.model=resnet56'
    )
    assert len(message.splitlines()) == 9


def test_generated_mismatches_name_paths_shapes_and_the_architecture():
    variables = _random_variables(models.build_model('resnet32', 100, shortcut='B'), (1, 8, 8, 3))
    state_dict = state_dicts.variables_to_state_dict(variables)
    template = jax.eval_shape(
        lambda: models.init_variables(models.build_model('resnet32', 10), (1, 8, 8, 3))
    )
    with pytest.raises(errors.CheckpointError) as info:
        state_dicts.state_dict_to_variables(state_dict, template)
    message = str(info.value)
    assert '12 problems: 0 missing, 10 unexpected, 2 shape mismatches' in message
    assert (
        'shape mismatch: params/linear/kernel <- linear.weight: checkpoint (100, 64), '
        'expected (10, 64) (flax (64, 10))'
    ) in message
    assert 'unexpected: layer2.0.shortcut.1.running_mean (32,)' in message
    assert message.endswith(
        'looks like resnet32 (option B, 100 classes): set --config.teacher.shortcut=B '
        '--config.data.num_classes=100'
    )


def test_non_finite_leaves_are_named(option_b, tmp_path):
    state_dict = state_dicts.variables_to_state_dict(option_b)
    state_dict['layer2.0.bn1.running_var'] = state_dict['layer2.0.bn1.running_var'].copy()
    state_dict['layer2.0.bn1.running_var'][[1, 3]] = [np.nan, np.inf]
    with pytest.raises(
        errors.NonFiniteError,
        match=r'batch_stats/layer2_0/bn1/var <- '
        r'layer2.0.bn1.running_var: 2 of 8',
    ):
        state_dicts.state_dict_to_variables(state_dict, option_b)
    model = models.build_model('resnet20', 10, shortcut='B', width=4)
    broken = jax.tree.map(np.asarray, option_b)
    broken['params']['conv1']['kernel'] = broken['params']['conv1']['kernel'].copy()
    broken['params']['conv1']['kernel'][0, 0, 0, 0] = np.nan
    loading.save_variables(tmp_path / 'orbax', broken)
    with pytest.raises(errors.NonFiniteError, match=r'orbax: params/conv1/kernel holds 1 NaN'):
        loading.load_target(tmp_path / 'orbax', model, (1, 8, 8, 3))
    np.savez(tmp_path / 'nan.npz', **state_dict)
    with pytest.raises(errors.NonFiniteError, match=r'nan.npz: the checkpoint holds NaN'):
        loading.load_target(tmp_path / 'nan.npz', model, (1, 8, 8, 3))


def _writer_payload():
    import ml_dtypes

    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    return {
        'state_dict': {
            'w': base.transpose(2, 0, 1),  # non-contiguous: written contiguous
            'big_endian': np.arange(5, dtype='>f8'),
            'half': np.linspace(-1, 1, 7, dtype=np.float16),
            'bf16': np.arange(3).astype(ml_dtypes.bfloat16),
            'count': np.array(7, np.int64),  # 0-d
            'mask': np.array([True, False]),
            'empty': np.zeros((2, 0, 3), np.float32),
            'bytes': np.arange(9, dtype=np.uint8),
        },
        'best_prec1': 93.39,
        'epoch': 199,
        'arch': 'resnet56',
        'big': -(2**40),
    }


def test_torch_writer_round_trips_through_the_restricted_reader(tmp_path):
    payload = _writer_payload()
    path = tmp_path / 'w.pt'
    torch_pickle.save(payload, path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert (
            names[:2] == ['archive/data.pkl', 'archive/byteorder']
            and names[-1] == 'archive/version'
        )
        for info in archive.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            if '/data/' in info.filename:  # 64-byte aligned storage bytes
                assert (info.header_offset + 30 + len(info.filename) + len(info.extra)) % 64 == 0
    obj = torch_pickle.load(str(path))
    assert {k: obj[k] for k in ('best_prec1', 'epoch', 'arch', 'big')} == {
        'best_prec1': 93.39,
        'epoch': 199,
        'arch': 'resnet56',
        'big': -(2**40),
    }
    for key, value in payload['state_dict'].items():
        got = obj['state_dict'][key]
        assert got.shape == value.shape and got.dtype == value.dtype.newbyteorder('='), key
        np.testing.assert_array_equal(got, value)
    read = state_dicts.read_state_dict(path, use_torch=False)
    assert sorted(read) == sorted(payload['state_dict'])
    try:
        import torch
    except ImportError:
        return
    loaded = torch.load(path, weights_only=True)
    for key, value in payload['state_dict'].items():
        np.testing.assert_array_equal(
            loaded['state_dict'][key].float().numpy(), value.astype(np.float32)
        )


def test_malformed_torch_zips_raise_checkpoint_errors(tmp_path):
    path = tmp_path / 'good.pt'
    torch_pickle.save({'a.weight': np.ones((2, 3), np.float32), 'b': np.arange(4)}, path)
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    rng = np.random.default_rng(0)
    variants = [raw[:cut] for cut in range(0, len(raw), 37)]
    for _ in range(300):  # corrupt pickles inside a valid zip (the CRCs match)
        pkl = bytearray(members['archive/data.pkl'])
        for i in rng.integers(0, len(pkl), rng.integers(1, 4)):
            pkl[i] = rng.integers(0, 256)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, 'w') as archive:
            for name, data in members.items():
                archive.writestr(name, bytes(pkl) if name.endswith('data.pkl') else data)
        variants.append(buffer.getvalue())
    short = io.BytesIO()
    with zipfile.ZipFile(short, 'w') as archive:
        for name, data in members.items():
            archive.writestr(name, data[:3] if name.endswith('data/0') else data)
    variants.append(short.getvalue())
    failures = 0
    for i, data in enumerate(variants):
        bad = tmp_path / f'bad{i}.pt'
        bad.write_bytes(data)
        try:
            state_dicts.read_state_dict(bad, use_torch=False)
        except errors.CheckpointError as e:
            assert f'bad{i}.pt' in str(e)
            failures += 1
    assert failures > len(variants) // 2


def test_state_dict_keys_must_be_strings(tmp_path):
    path = tmp_path / 'intkey.pt'
    torch_pickle.save({1: np.ones(2, np.float32)}, path)
    with pytest.raises(errors.CheckpointError, match='key 1 is not a string'):
        state_dicts.read_state_dict(path, use_torch=False)


def _state_dict_of(name, width=None, classes=10):
    """A generated state dict (zeros) of a 32x32 `name` network and its template."""
    model = models.build_model(name, classes, width_mult=width)
    template = jax.eval_shape(lambda: models.init_variables(model, (1, 32, 32, 3)))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
    return state_dicts.variables_to_state_dict(zeros), template


@pytest.mark.parametrize(
    'checkpoint, target, hint',
    [
        (('resnet20',), ('cifar_mobilenet_v2',), 'looks like resnet20 (option A, 10 classes): set'),
        (('resnet20',), ('cifar_resnet50',), '--config.teacher.model=resnet20'),
        (('cifar_mobilenet_v2', 0.25), ('resnet20',), 'teacher.model=mobilenet_v2 (or cifar_'),
        (('cifar_resnet50', 0.25), ('cifar_resnet50', 0.5), "channels are 0.5x the model's in 266"),
        (('cifar_mobilenet_v2', 0.25), ('cifar_mobilenet_v2', 0.5), "0.5x the model's in 242"),
    ],
    ids=['r20-for-mnv2', 'r20-for-r50', 'mnv2-for-r20', 'r50-width', 'mnv2-width'],
)
def test_every_family_and_a_width_factor_get_a_hint(checkpoint, target, hint):
    state_dict, _ = _state_dict_of(*checkpoint)
    _, template = _state_dict_of(*target)
    with pytest.raises(errors.CheckpointError) as info:
        state_dicts.state_dict_to_variables(state_dict, template)
    last = str(info.value).splitlines()[-1]
    assert hint in last, last
    if checkpoint[0] == target[0]:  # the same family at another width
        assert last.endswith('set --config.teacher.width to 0.5 times its value here'), last


def test_one_problem_is_one_problem():
    state_dict, template = _state_dict_of('resnet20')
    del state_dict['linear.bias']
    with pytest.raises(errors.CheckpointError, match=r'\(1 problem: 1 missing, 0 unexpected, 0 '):
        state_dicts.state_dict_to_variables(state_dict, template)

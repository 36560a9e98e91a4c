"""Tests for nrnp.nets.registry and checkpoint resolution in nrnp.nets.loading: registry
entries, chenyaofo-layout checkpoints written without torch, served from 127.0.0.1 and
loaded by URL (fragment sha256, torch-hub prefix) or registry name, bit for bit."""

import dataclasses
import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nrnp import errors
from nrnp.configs import default
from nrnp.nets import checkpoint_files, layouts, loading, models, registry, state_dicts


def _random_variables(model, input_shape=(1, 32, 32, 3), seed=0):
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(lambda: models.init_variables(model, input_shape))
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=s.shape).astype(np.float32)), abstract
    )


def _assert_bit_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and np.asarray(x).tobytes() == np.asarray(y).tobytes()


@pytest.fixture(scope='module')
def resnet56_b100():
    model = models.build_model('resnet56', 100, shortcut='B')
    return model, _random_variables(model)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('NRNP_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


def as_trained(name: str) -> dict:
    """The config fields that make a run use registry entry `name` as it was trained."""
    entry = registry.get(name)
    out = {
        'teacher.checkpoint': entry.name,
        'teacher.model': entry.arch,
        'teacher.shortcut': entry.shortcut,
        'data.name': entry.dataset,
        'data.num_classes': entry.num_classes,
        'data.mean': entry.mean,
        'data.std': entry.std,
        'data.crop_fraction': entry.crop_fraction,
    }
    return {k: v for k, v in out.items() if v not in ('', None)}


def test_entries_are_consistent_and_give_valid_config_overrides():
    assert len(registry.names()) == 17
    for entry in registry.ENTRIES.values():
        stem = f'{entry.arch}-{entry.sha256_prefix}'
        assert any(entry.url.endswith(f'{stem}{suffix}') for suffix in ('.pt', '.th', '.pth'))
        assert checkpoint_files._hash_in_name(os.path.basename(entry.url)) == entry.sha256_prefix
        models.build_model(entry.arch, entry.num_classes, shortcut=entry.shortcut or None)
        assert entry.layout in layouts.LAYOUTS
        assert entry.dataset in ('cifar10', 'cifar100', 'imagenet2012')
    entry = registry.get('cifar100_resnet56')
    assert entry.url == (
        'https://github.com/chenyaofo/pytorch-cifar-models/releases/download/resnet/'
        'cifar100_resnet56-f2eff4c8.pt'
    )
    assert (entry.arch, entry.shortcut, entry.num_classes, entry.top1) == (
        'resnet56',
        'B',
        100,
        72.63,
    )
    assert registry.get('akamaster_resnet20').std == (0.229, 0.224, 0.225)
    c = default.get_config()
    for key, value in as_trained('cifar100_resnet56').items():
        section, field = key.split('.')
        c[section][field] = value  # every key is a declared field
    assert (c.teacher.model, c.data.name, c.data.mean) == ('resnet56', 'cifar100', entry.mean)
    with pytest.raises(errors.CheckpointError, match='known: akamaster_resnet110'):
        registry.get('resnet57')
    # torchvision's ImageNet weights (torchvision.models ResNet50_Weights, MobileNet_V2_Weights).
    urls = {n: registry.get(n).url.rsplit('/', 1)[1] for n in registry.names() if 'imagenet' in n}
    assert urls == {
        'resnet50_imagenet1k_v1': 'resnet50-0676ba61.pth',
        'resnet50_imagenet1k_v2': 'resnet50-11ad3fa6.pth',
        'mobilenet_v2_imagenet1k_v1': 'mobilenet_v2-b0353104.pth',
        'mobilenet_v2_imagenet1k_v2': 'mobilenet_v2-7ebf99e0.pth',
    }
    r50 = registry.get('resnet50_imagenet1k_v2')
    assert r50.url.startswith('https://download.pytorch.org/models/') and r50.top1 == 80.858
    assert registry.get('mobilenet_v2_imagenet1k_v1').crop_fraction == 0.875
    assert r50.describe() == (
        'resnet50_imagenet1k_v2 (pytorch/vision: resnet50, 1000 classes, published top-1 80.86 %)'
    )
    overrides = as_trained('resnet50_imagenet1k_v2')
    assert 'teacher.shortcut' not in overrides and overrides['data.crop_fraction'] == 224 / 232


def test_chenyaofo_layout_round_trip_is_bit_identical(tmp_path, resnet56_b100):
    model, variables = resnet56_b100
    path = tmp_path / 'cifar100_resnet56.pt'
    written = state_dicts.export_state_dict(variables, path, layout='chenyaofo')
    assert {
        'fc.weight',
        'layer2.0.downsample.0.weight',
        'layer3.0.downsample.1.running_var',
    } <= set(written)
    assert not any(k.startswith('linear') or '.shortcut.' in k for k in written)
    assert not any('downsample' in k for k in written if not k.startswith(('layer2.0', 'layer3.0')))
    read = state_dicts.read_state_dict(path, use_torch=False)
    assert sorted(read) == sorted(written)
    _assert_bit_identical(state_dicts.state_dict_to_variables(read, variables), variables)
    _assert_bit_identical(loading.load_target(path, model, (1, 32, 32, 3)), variables)


def _serve_checkpoint(http_server, tmp_path, variables, name):
    path = tmp_path / 'export.pt'
    state_dicts.export_state_dict(variables, path, layout='chenyaofo')
    data = path.read_bytes()
    http_server.files[f'releases/{name}'] = data
    return data, hashlib.sha256(data).hexdigest()


def test_registry_entry_is_downloaded_verified_and_loaded(
    http_server, tmp_path, cache, monkeypatch, resnet56_b100
):
    model, variables = resnet56_b100
    probe, sha = _serve_checkpoint(http_server, tmp_path, variables, 'probe.pt')
    name = f'cifar100_resnet56-{sha[:8]}.pt'
    http_server.files[f'releases/{name}'] = probe
    entry = dataclasses.replace(
        registry.get('cifar100_resnet56'), name='local_r56', url=http_server.url(f'releases/{name}')
    )
    entry = dataclasses.replace(entry, sha256_prefix=sha[:8])
    monkeypatch.setitem(registry.ENTRIES, 'local_r56', entry)
    lines = []
    loaded = loading.load_target('local_r56', model, (1, 32, 32, 3), log=lines.append)
    _assert_bit_identical(loaded, variables)
    assert (cache / 'checkpoints' / name).read_bytes() == probe
    assert any('MB/s' in line for line in lines)
    source = loading.resolve_checkpoint('local_r56', download=False)  # cached: no request
    assert len(http_server.requests) == 1 and source.sha256 == sha and source.entry == entry
    assert 'local_r56 (chenyaofo/pytorch-cifar-models: resnet56 option B' in source.describe()
    assert sha in source.describe()
    _assert_bit_identical(loading.load_target(source, model, (1, 32, 32, 3)), variables)


def test_url_with_fragment_or_name_hash(http_server, tmp_path, cache, resnet56_b100):
    model, variables = resnet56_b100
    data, sha = _serve_checkpoint(http_server, tmp_path, variables, 'net.pt')
    url = http_server.url('releases/net.pt')
    with pytest.raises(errors.DownloadError, match=f'expected {"0" * 64}, got {sha}'):
        loading.load_target(f'{url}#sha256={"0" * 64}', model, (1, 32, 32, 3))
    assert os.listdir(cache / 'checkpoints') == []
    _assert_bit_identical(
        loading.load_target(f'{url}#sha256={sha}', model, (1, 32, 32, 3)), variables
    )
    http_server.files['releases/net-deadbeef.pt'] = data  # a torch-hub name that lies
    with pytest.raises(errors.DownloadError, match=r'expected deadbeef\.\.\. \(prefix\)'):
        loading.resolve_checkpoint(http_server.url('releases/net-deadbeef.pt'))
    source = loading.resolve_checkpoint(http_server.url('releases/net-deadbeef.pt'), sha256=sha)
    assert source.sha256 == sha  # an explicit sha256 wins over the name


def test_unknown_specs_and_disabled_downloads(tmp_path, cache):
    with pytest.raises(
        errors.CheckpointError, match=r'(?s)nope.*neither an http.*cifar100_resnet56'
    ):
        loading.resolve_checkpoint('nope')
    with pytest.raises(errors.DownloadError) as info:
        loading.resolve_checkpoint('cifar10_resnet20', download=False)
    message = str(info.value)
    assert 'cifar10_resnet20-4118986f.pt' in message and '4118986f... (prefix)' in message
    assert f'put it at: {cache}/checkpoints/cifar10_resnet20-4118986f.pt' in message
    assert '--config.teacher.checkpoint=PATH' in message


def test_mismatch_hint_for_a_chenyaofo_checkpoint(tmp_path, resnet56_b100):
    _, variables = resnet56_b100
    path = tmp_path / 'c100_r56.pt'
    state_dicts.export_state_dict(variables, path, layout='chenyaofo')
    with pytest.raises(errors.CheckpointError) as info:
        loading.load_target(path, models.build_model('resnet20', 10), (1, 32, 32, 3))
    message = str(info.value)
    assert str(path) in message and 'keys read in the chenyaofo layout' in message
    assert (
        'looks like resnet56 (option B, 100 classes): set --config.teacher.model=resnet56 '
        '--config.teacher.shortcut=B --config.data.num_classes=100'
    ) in message
    assert (
        'shape mismatch: params/linear/kernel <- linear.weight: checkpoint (100, 64), ' in message
    )
    assert len(message.splitlines()) < 25
    with pytest.raises(errors.CheckpointError, match='set --config.distill.teacher_model=resnet56'):
        loading.load_target(
            path,
            models.build_model('resnet20', 100),
            (1, 32, 32, 3),
            flags=layouts.DISTILL_TEACHER_FLAGS,
        )


def test_recipes_use_their_registry_entries_as_trained():
    from nrnp.configs import c10_r20, c10_r56, c100

    for recipe, name in ((c100, 'cifar100_resnet56'), (c10_r20, 'akamaster_resnet20')):
        config = recipe.get_config()
        for dotted, value in as_trained(name).items():
            section, field = dotted.split('.')
            assert config[section][field] == pytest.approx(value), (recipe.__name__, dotted)
    assert c10_r56.get_config().teacher.checkpoint == 'akamaster_resnet56'
    from nrnp.configs import imagenet_mobilenetv2, imagenet_r50

    for recipe, name in (
        (imagenet_r50, 'resnet50_imagenet1k_v2'),
        (imagenet_mobilenetv2, 'mobilenet_v2_imagenet1k_v2'),
    ):
        config = recipe.get_config()
        for dotted, value in as_trained(name).items():
            section, field = dotted.split('.')
            assert config[section][field] == pytest.approx(value), (recipe.__name__, dotted)
        assert tuple(config.kernels.sizes) == (1, 3) and config.kernels.pointwise == 'grouped'


def test_larger_teacher_recipe_uses_the_resnet56_entry_as_trained():
    from nrnp.configs import c10_r20_r56teacher
    from nrnp.pipeline import validation

    config = c10_r20_r56teacher.get_config()
    entry = as_trained('akamaster_resnet56')
    d = config.distill
    assert d.teacher_checkpoint == entry['teacher.checkpoint']
    assert (d.teacher_model, d.teacher_shortcut) == (
        entry['teacher.model'],
        entry['teacher.shortcut'],
    )
    assert tuple(config.data.mean) == entry['data.mean']  # both nets share the normalisation
    assert d.fm_weight == 0.0  # ResNet56's feature maps do not pair with ResNet20's
    assert validation.problems(config, style='library') == []

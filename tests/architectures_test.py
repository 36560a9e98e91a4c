"""ResNet50 and MobileNetV2 (torchvision names): counts and keys, bit-exact state-dict round
trips, the fast 1x1/depthwise layers against nn.Conv, depthwise detection, the grouped
table's row cut, and (with torch) the forward pass against torchvision-named torch modules."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nrnp import choices
from nrnp.core import kernels
from nrnp.nets import layers, layouts, mobilenet, models, state_dicts


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract(name, num_classes=1000, width=1.0, size=64):
    model = models.build_model(name, num_classes, width_mult=width)
    return model, jax.eval_shape(lambda: models.init_variables(model, (1, size, size, 3)))


def _random(abstract, seed=0):
    """Distinct values per leaf, BatchNorm variances positive, without compiling init."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape).astype(np.float32)), abstract
    )


@pytest.mark.parametrize(
    'name, params, keys, some',
    [
        (
            'resnet50',
            25_557_032,  # torchvision's num_params
            267,  # its state dict without the 53 num_batches_tracked
            {
                'conv1.weight': (64, 3, 7, 7),
                'layer1.0.conv3.weight': (256, 64, 1, 1),
                'layer2.0.conv2.weight': (128, 128, 3, 3),
                'layer2.0.downsample.0.weight': (512, 256, 1, 1),
                'layer4.2.bn3.running_var': (2048,),
                'fc.weight': (1000, 2048),
            },
        ),
        (
            'mobilenet_v2',
            3_504_872,
            262,  # without the 52 num_batches_tracked
            {
                'features.0.0.weight': (32, 3, 3, 3),
                'features.1.conv.0.0.weight': (32, 1, 3, 3),
                'features.1.conv.1.weight': (16, 32, 1, 1),
                'features.2.conv.0.0.weight': (96, 16, 1, 1),
                'features.2.conv.1.0.weight': (96, 1, 3, 3),
                'features.2.conv.3.running_mean': (24,),
                'features.18.0.weight': (1280, 320, 1, 1),
                'classifier.1.weight': (1000, 1280),
            },
        ),
    ],
)
def test_torchvision_counts_and_keys(name, params, keys, some):
    _, abstract = _abstract(name)
    assert _count(abstract['params']) == params
    shapes = {k: v.shape for k, v in state_dicts.variables_to_state_dict(_zeros(abstract)).items()}
    assert len(shapes) == keys
    assert {k: shapes[k] for k in some} == some


def _zeros(abstract):
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)


@pytest.mark.parametrize(
    'name, width', [('resnet50', 0.25), ('mobilenet_v2', 0.35), ('cifar_mobilenet_v2', 0.25)]
)
def test_state_dict_round_trip_is_bit_exact(tmp_path, name, width):
    model, abstract = _abstract(name, 10, width, size=32)
    rng = np.random.default_rng(1)
    # A torchvision-layout state dict of random weights (OIHW, [out, in] Linear).
    torch_shapes = state_dicts.variables_to_state_dict(_zeros(abstract))
    state_dict = {
        k: rng.standard_normal(v.shape).astype(np.float32) for k, v in torch_shapes.items()
    }
    variables = state_dicts.state_dict_to_variables(state_dict, abstract)
    back = state_dicts.variables_to_state_dict(variables)
    assert back.keys() == state_dict.keys()
    for key, value in state_dict.items():
        assert back[key].tobytes() == value.tobytes(), key
    path = tmp_path / f'{name}.pth'  # through PyTorch's zip format, read without torch
    state_dicts.export_state_dict(variables, path)
    read = state_dicts.read_state_dict(path, use_torch=False)
    assert all(read[k].tobytes() == v.tobytes() for k, v in state_dict.items())


@pytest.mark.slow
def test_fast_pointwise_and_depthwise_equal_conv():
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 6))
    for stride in (1, 2):
        point = layers.Pointwise(4, stride)
        conv = layers.conv(4, 1, stride, 'c')
        p = point.init(jax.random.key(1), x)
        np.testing.assert_allclose(point.apply(p, x), conv.apply(p, x), atol=1e-5)
        deep = layers.Depthwise(3, stride)
        grouped = layers.conv(6, 3, stride, 'd', groups=6)
        p = deep.init(jax.random.key(2), x)
        assert p['params']['kernel'].shape == (3, 3, 1, 6)
        np.testing.assert_allclose(deep.apply(p, x), grouped.apply(p, x), atol=1e-5)


def test_depthwise_kernels_are_found():
    model, abstract = _abstract('cifar_mobilenet_v2', 10, 0.25, size=32)
    found = layers.depthwise_kernels(model, abstract, (1, 32, 32, 3))
    assert len(found) == 17  # one per inverted residual block
    assert ('features_1', 'conv_0_0', 'kernel') in found
    assert ('features_2', 'conv_1_0', 'kernel') in found
    assert ('features_0_0', 'kernel') not in found  # the 3-channel stem
    grey = models.build_model('smallcnn', 10, widths=(4, 8, 8))  # [3, 3, 1, 4]: not depthwise
    grey_vars = jax.eval_shape(lambda: models.init_variables(grey, (1, 8, 8, 1)))
    assert layers.depthwise_kernels(grey, grey_vars, (1, 8, 8, 1)) == set()


def test_grouped_rows_cut_resnet50_table_five_fold():
    _, abstract = _abstract('resnet50')
    params = abstract['params']
    select = kernels.select_kernels()  # every 1x1 and 3x3 conv; the 7x7 stem is copied
    grouped = kernels.kernel_layout(params, select, 'grouped')
    centre = kernels.kernel_layout(params, select, 'centre')
    assert grouped.num_params == centre.num_params == 23_445_504
    assert (centre.num_kernels, grouped.num_kernels) == (13_385_728, 2_613_632)
    assert centre.num_kernels / grouped.num_kernels >= 5
    by_kind = kernels.params_by_kind(grouped, params)
    assert by_kind['pointwise'] == 12_128_256 and by_kind['3x3'] == 11_317_248
    assert sum(by_kind.values()) == 25_557_032


def test_make_divisible_and_describe():
    assert [mobilenet.make_divisible(v) for v in (32 * 0.25, 16 * 0.25, 24 * 0.35, 1280)] == [
        8,
        8,
        8,
        1280,
    ]
    _, abstract = _abstract('resnet50', width=0.25)
    shapes = {k: v.shape for k, v in state_dicts.variables_to_state_dict(_zeros(abstract)).items()}
    assert layouts.describe(shapes).model == 'resnet50'
    with pytest.raises(ValueError, match='no width multiplier'):
        models.build_model('resnet20', 10, width_mult=0.5)


# ---------------------------------------------------------------- against PyTorch


def _torch_nets(torch):
    """torchvision-named reference modules (torchvision itself is not installable here)."""
    nn = torch.nn

    def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
        layers_ = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)]
        return nn.Sequential(*layers_, nn.BatchNorm2d(cout), *([nn.ReLU6()] if act else []))

    class Bottleneck(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = None
            if stride != 1 or cin != planes * 4:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
                )

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = torch.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return torch.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet50(nn.Module):
        def __init__(self, width, num_classes, cifar):
            super().__init__()
            k, s = (3, 1) if cifar else (7, 2)
            self.cifar = cifar
            self.conv1 = nn.Conv2d(3, width, k, s, k // 2, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            cin = width
            for stage, blocks in enumerate((3, 4, 6, 3)):
                planes = width * 2**stage
                seq = []
                for b in range(blocks):
                    seq.append(Bottleneck(cin, planes, 2 if stage and not b else 1))
                    cin = planes * 4
                setattr(self, f'layer{stage + 1}', nn.Sequential(*seq))
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            if not self.cifar:
                x = nn.functional.max_pool2d(x, 3, 2, 1)
            for stage in range(4):
                x = getattr(self, f'layer{stage + 1}')(x)
            return self.fc(x.mean((2, 3)))

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, t):
            super().__init__()
            hidden = int(round(cin * t))
            seq = [conv_bn(cin, hidden, 1)] if t != 1 else []
            seq += [conv_bn(hidden, hidden, 3, stride, hidden)]
            seq += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*seq)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self, width, num_classes, cifar):
            super().__init__()
            cin = mobilenet.make_divisible(32 * width)
            feats = [conv_bn(3, cin, 3, 1 if cifar else 2)]
            for t, c, n, s in mobilenet.SETTING:
                s = 1 if cifar and c == 24 else s
                for i in range(n):
                    cout = mobilenet.make_divisible(c * width)
                    feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                    cin = cout
            last = mobilenet.make_divisible(1280 * max(1.0, width))
            self.features = nn.Sequential(*feats, conv_bn(cin, last, 1))
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

        def forward(self, x):
            return self.classifier(self.features(x).mean((2, 3)))

    return ResNet50, MobileNetV2


@pytest.mark.parametrize(
    'name, width, size',
    [
        ('resnet50', 0.25, 64),
        ('cifar_resnet50', 0.125, 32),
        ('mobilenet_v2', 0.35, 64),
        ('cifar_mobilenet_v2', 0.25, 32),
    ],
)
def test_forward_matches_pytorch(name, width, size):
    torch = pytest.importorskip('torch', reason='torch is not installed')
    resnet, mobilenetv2 = _torch_nets(torch)
    torch.manual_seed(0)
    cls = resnet if name.endswith('resnet50') else mobilenetv2
    channels = max(1, round(64 * width)) if cls is resnet else width
    net = cls(channels, 10, name.startswith('cifar_')).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    state_dict = {k: v.numpy() for k, v in net.state_dict().items()}
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith('num_batches_tracked')}
    model, abstract = _abstract(name, 10, width, size)
    assert set(state_dicts.variables_to_state_dict(_zeros(abstract))) == set(state_dict)
    variables = state_dicts.state_dict_to_variables(state_dict, abstract)
    x = np.random.default_rng(3).standard_normal((2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(model.apply(variables, x, train=False))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_validation_knows_the_models_and_width():
    from nrnp.configs import default
    from nrnp.pipeline import validation

    assert validation.CHOICES['teacher.model'] == choices.MODEL_NAMES
    for name in choices.MODEL_NAMES:  # every name validation accepts builds a network
        width = 0.5 if name in choices.WIDTH_MODELS else None
        assert isinstance(models.build_model(name, 10, width_mult=width), nn.Module)
    with pytest.raises(ValueError, match='no width multiplier'):
        models.build_model('resnet18', 10, width_mult=0.5)
    c = default.get_config()
    c.teacher.width = 0.5  # smallcnn has no multiplier
    c.kernels.pointwise = 'packed'
    found = validation.problems(c, style='library')
    assert any(p.startswith('teacher__width=0.5: only resnet50') for p in found), found
    assert any("kernels__pointwise='packed': must be one of 'grouped'" in p for p in found)


@pytest.mark.slow
def test_cli_compresses_a_mobilenet_with_every_kind(tmp_path):
    """c10_mobilenetv2:tiny through the CLI's job on a generated image folder (a random-weight
    teacher from an orbax dir: training one is the recipe's own, slower, check): pointwise and
    depthwise weights are represented and reported, the artefact rebuilds the network."""
    from PIL import Image

    import nrnp
    from nrnp.configs import c10_mobilenetv2
    from nrnp.nets import loading
    from nrnp.pipeline import job

    rng = np.random.default_rng(0)
    for split, count in (('train', 8), ('test', 4)):
        for label, colour in enumerate(((200, 40, 40), (40, 40, 200))):
            folder = tmp_path / 'imgs' / split / f'c{label}'
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(colour, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f'{i}.png')
    c = c10_mobilenetv2.get_config('tiny')
    c.data.image_folder, c.data.image_size, c.data.num_classes = str(tmp_path / 'imgs'), 16, 2
    c.teacher.width, c.teacher.checkpoint = 0.1, str(tmp_path / 'teacher')
    c.data.test_limit, c.distill.steps, c.reconstruct.steps = 0, 0, 3
    _, abstract = _abstract('cifar_mobilenet_v2', 2, 0.1, 16)
    loading.save_variables(c.teacher.checkpoint, _random(abstract))
    report = job.run(c, str(tmp_path / 'run'), echo=lambda s: None)
    kinds = report['represented_by_kind']
    assert kinds['pointwise'] > 0 and kinds['depthwise'] > 0 and kinds['3x3'] == 3 * 3 * 3 * 8
    assert kinds['large'] == kinds['dense'] == 0
    assert kinds['3x3'] + kinds['depthwise'] + kinds['pointwise'] == report['represented_params']
    assert report['num_kernels'] < report['represented_params'] / 5  # grouped 1x1 rows
    loaded = nrnp.load(report['artifact'])
    assert sum(layer.kind == 'depthwise' for layer in loaded.layout.layers) == 17
    assert loaded.minimum_version() == 4  # an int6 predictor
    settings = {**loaded.predictor_settings, 'quantize': 'none'}
    floats = dataclasses.replace(
        loaded,
        predictor_settings=settings,
        predictor_storage=None,
        leaves=[dataclasses.replace(x, stored='') for x in loaded.leaves],
    )
    assert floats.minimum_version() == 3  # grouped 1x1 rows alone

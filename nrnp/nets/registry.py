"""Well-known public checkpoints by name: where they are, what they are, how to feed them.

  entry = registry.get('cifar100_resnet56')     # url, arch, shortcut, mean/std, published top-1
  --config.teacher.checkpoint=cifar100_resnet56   # nets.loading downloads, verifies, loads it

Entries were read from the repositories' source: chenyaofo/pytorch-cifar-models (option B
ResNets, inputs /255 then Normalize(mean, std) with the CIFAR statistics, plain state
dicts, projection `downsample`, head `fc`: layout 'chenyaofo') and
akamaster/pytorch_resnet_cifar10 (CIFAR-10, option A, ImageNet mean/std,
`{'state_dict': {'module.' + key}, 'best_prec1'}`: nrnp's own names). The sha256 prefixes
are torch hub's file-name convention; only akamaster resnet20/56 were checked against the
bytes (their sha256 start with 12fca82f / 4bfd9763). Every download is checked against its
prefix, so a wrong one fails naming the digest found. `top1` is the published figure.
torchvision's ImageNet ResNet50 and MobileNetV2 (IMAGENET1K_V1 and _V2 weights, URLs,
hashes and top-1 from torchvision's `ResNet50_Weights` / `MobileNet_V2_Weights`; V2 is
evaluated on a 232-pixel resize, crop 224) use nrnp's own names (layout 'nrnp').
"""

from __future__ import annotations

import dataclasses

from nrnp.errors import CheckpointError

_CHENYAOFO = 'https://github.com/chenyaofo/pytorch-cifar-models/releases/download/resnet/'
_AKAMASTER = 'https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/'
_C10 = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
_C100 = ((0.5070, 0.4865, 0.4409), (0.2673, 0.2564, 0.2761))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_TORCHVISION = 'https://download.pytorch.org/models/'


@dataclasses.dataclass(frozen=True)
class Entry:
    """One published checkpoint.

    Attributes:
      name: the registry name (`teacher.checkpoint=<name>`).
      url: where the file is.
      sha256_prefix: the leading hex digits of its sha256 (from its file name).
      arch: nrnp model name ('resnet20', ... 'resnet110', 'resnet50', 'mobilenet_v2').
      shortcut: 'A' (zero-pad) or 'B' (1x1 conv + BN projection); '' for nets without
        that choice.
      num_classes: 10, 100 or 1000.
      dataset: 'cifar10', 'cifar100' or 'imagenet2012' (the TFDS / archive name nrnp reads).
      mean, std: the input normalisation it was trained with, per RGB channel.
      top1: published top-1 accuracy (percent) on the dataset's test split.
      layout: its key layout (`nets.layouts.LAYOUTS`).
      source: the repository it comes from.
      crop_fraction: the evaluation crop side over the resized shorter side it was
        published with (torchvision V1: 224 / 256, V2: 224 / 232); None for CIFAR.
    """

    name: str
    url: str
    sha256_prefix: str
    arch: str
    shortcut: str
    num_classes: int
    dataset: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    top1: float
    layout: str
    source: str
    crop_fraction: float | None = None

    def describe(self) -> str:
        """One line for logs and reports: name, source, architecture, published top-1."""
        option = f' option {self.shortcut}' if self.shortcut else ''
        return (
            f'{self.name} ({self.source}: {self.arch}{option}, '
            f'{self.num_classes} classes, published top-1 {self.top1:.2f} %)'
        )


def _chenyaofo(dataset: str, depth: int, sha256_prefix: str, top1: float) -> Entry:
    name = f'{dataset}_resnet{depth}'
    mean, std = _C10 if dataset == 'cifar10' else _C100
    return Entry(
        name,
        f'{_CHENYAOFO}{name}-{sha256_prefix}.pt',
        sha256_prefix,
        f'resnet{depth}',
        'B',
        10 if dataset == 'cifar10' else 100,
        dataset,
        mean,
        std,
        top1,
        'chenyaofo',
        'chenyaofo/pytorch-cifar-models',
    )


def _akamaster(depth: int, sha256_prefix: str, top1: float) -> Entry:
    return Entry(
        f'akamaster_resnet{depth}',
        f'{_AKAMASTER}resnet{depth}-{sha256_prefix}.th',
        sha256_prefix,
        f'resnet{depth}',
        'A',
        10,
        'cifar10',
        *_IMAGENET,
        top1,
        'akamaster',
        'akamaster/pytorch_resnet_cifar10',
    )


def _torchvision(arch: str, file: str, weights: str, sha256_prefix: str, top1: float) -> Entry:
    return Entry(
        f'{arch}_imagenet1k_{weights}',
        f'{_TORCHVISION}{file}-{sha256_prefix}.pth',
        sha256_prefix,
        arch,
        '',
        1000,
        'imagenet2012',
        *_IMAGENET,
        top1,
        'nrnp',
        'pytorch/vision',
        224 / 256 if weights == 'v1' else 224 / 232,
    )


ENTRIES: dict[str, Entry] = {
    e.name: e
    for e in (
        _chenyaofo('cifar10', 20, '4118986f', 92.60),
        _chenyaofo('cifar10', 32, 'ef93fc4d', 93.53),
        _chenyaofo('cifar10', 44, '2a3cabcb', 94.01),
        _chenyaofo('cifar10', 56, '187c023a', 94.37),
        _chenyaofo('cifar100', 20, '23dac2f1', 68.83),
        _chenyaofo('cifar100', 32, '84213ce6', 70.16),
        _chenyaofo('cifar100', 44, 'ffe32858', 71.63),
        _chenyaofo('cifar100', 56, 'f2eff4c8', 72.63),
        _akamaster(20, '12fca82f', 91.73),
        _akamaster(32, 'd509ac18', 92.63),
        _akamaster(44, '014dd654', 93.10),
        _akamaster(56, '4bfd9763', 93.39),
        _akamaster(110, '1d1ed7c2', 93.68),
        _torchvision('resnet50', 'resnet50', 'v1', '0676ba61', 76.130),
        _torchvision('resnet50', 'resnet50', 'v2', '11ad3fa6', 80.858),
        _torchvision('mobilenet_v2', 'mobilenet_v2', 'v1', 'b0353104', 71.878),
        _torchvision('mobilenet_v2', 'mobilenet_v2', 'v2', '7ebf99e0', 72.154),
    )
}


def names() -> list[str]:
    """The registered names, sorted."""
    return sorted(ENTRIES)


def get(name: str) -> Entry:
    """The entry called `name`.

    Raises:
      CheckpointError: no such entry, listing the known names.
    """
    if name not in ENTRIES:
        raise CheckpointError(f'no registered checkpoint {name!r}; known: {", ".join(names())}')
    return ENTRIES[name]

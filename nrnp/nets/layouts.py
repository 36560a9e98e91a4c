"""What a PyTorch state dict's keys say: its key layout, and the architecture it was saved from.

  state_dict = from_layout(read_state_dict('cifar100_resnet56-f2eff4c8.pt'), 'chenyaofo')
  arch = describe({k: v.shape for k, v in state_dict.items()})   # resnet56, 'B', 100 classes
  hint(arch, describe(expected_shapes))   # 'looks like resnet56 (...): set --config...'

nrnp's CIFAR ResNets use akamaster's names (projection `shortcut.0/.1`, head `linear`);
chenyaofo/pytorch-cifar-models names the projection `downsample.0/.1` and the head `fc`
(the names torchvision's ImageNet ResNets use, which nrnp keeps for those). A layout is a
key translation to and from nrnp's names; nothing else about the tensors differs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from nrnp import choices

LAYOUTS = ('nrnp', 'akamaster', 'chenyaofo')
# The config fields a hint sets, for the target (teacher.*) or distill.teacher_checkpoint.
TEACHER_FLAGS = {'model': 'teacher.model', 'shortcut': 'teacher.shortcut', 'width': 'teacher.width'}
DISTILL_TEACHER_FLAGS = {'model': 'distill.teacher_model', 'shortcut': 'distill.teacher_shortcut'}
_CLASSES_FLAG = 'data.num_classes'

_TO_NRNP = {
    'chenyaofo': ((r'^(layer\d+\.\d+)\.downsample\.', r'\1.shortcut.'), (r'^fc\.', 'linear.')),
}
_FROM_NRNP = {
    'chenyaofo': ((r'^(layer\d+\.\d+)\.shortcut\.', r'\1.downsample.'), (r'^linear\.', 'fc.')),
}


def _rename(state_dict: Mapping, rules) -> dict:
    out = {}
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def _check(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f'unknown key layout {layout!r}; known: {", ".join(LAYOUTS)}')


def from_layout(state_dict: Mapping, layout: str) -> dict:
    """`state_dict` with `layout`'s keys renamed to nrnp's (values untouched)."""
    _check(layout)
    return _rename(state_dict, _TO_NRNP.get(layout, ()))


def to_layout(state_dict: Mapping, layout: str) -> dict:
    """An nrnp-named state dict with its keys renamed to `layout`'s (values untouched)."""
    _check(layout)
    return _rename(state_dict, _FROM_NRNP.get(layout, ()))


def detect_layout(keys, expected_keys) -> str:
    """'chenyaofo' when a CIFAR ResNet (head `linear`) is given `fc`/`downsample` keys.

    Args:
      keys: the checkpoint's keys.
      expected_keys: the model's keys in nrnp's names (`variables_to_state_dict`).
    """
    keys, expected = set(keys), set(expected_keys)
    if 'linear.weight' in expected and 'fc.weight' in keys and 'linear.weight' not in keys:
        return 'chenyaofo'
    return 'nrnp'


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a state dict's keys and shapes reveal (None where they do not say)."""

    model: str | None  # 'resnet56', 'resnet18', ...
    shortcut: str | None  # CIFAR ResNets: 'A' (no projection keys) or 'B'
    num_classes: int | None
    blocks: tuple[int, ...]  # blocks per stage

    def __str__(self) -> str:
        details = [f'option {self.shortcut}'] if self.shortcut else []
        details += [f'{self.num_classes} classes'] if self.num_classes else []
        return f'{self.model or "an unknown ResNet"} ({", ".join(details)})'


def describe(shapes: Mapping[str, tuple[int, ...]]) -> Architecture | None:
    """The ResNet a state dict was saved from, from its keys and shapes (torch layout).

    Args:
      shapes: {torch key: shape}, in nrnp's names or chenyaofo's.

    Returns:
      The architecture, or None when the keys are not a ResNet's (`layer<s>.<b>.` blocks).
    """
    stages: dict[int, set[int]] = {}
    for key in shapes:
        if match := re.match(r'^layer(\d+)\.(\d+)\.', key):
            stages.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    if not stages:
        return _describe_mobilenet(shapes)
    blocks = tuple(len(stages[s]) for s in sorted(stages))
    head = shapes.get('linear.weight', shapes.get('fc.weight'))
    num_classes = int(head[0]) if head is not None and len(head) == 2 else None
    bottleneck = any(re.match(r'^layer\d+\.\d+\.conv3\.', k) for k in shapes)
    model = shortcut = None
    if len(blocks) == 3 and len(set(blocks)) == 1 and not bottleneck:
        model = f'resnet{6 * blocks[0] + 2}'
        projection = any(re.search(r'\.(shortcut|downsample)\.0\.weight$', k) for k in shapes)
        shortcut = 'B' if projection else 'A'
    elif not bottleneck:
        model = {(2, 2, 2, 2): 'resnet18', (3, 4, 6, 3): 'resnet34'}.get(blocks)
    elif blocks == (3, 4, 6, 3):  # torchvision's 7x7 stem, or the 32x32 variant's 3x3
        model = (
            'resnet50' if tuple(shapes.get('conv1.weight', ()))[-1:] == (7,) else 'cifar_resnet50'
        )
    return Architecture(model, shortcut, num_classes, blocks)


def _describe_mobilenet(shapes: Mapping[str, tuple[int, ...]]) -> Architecture | None:
    """MobileNetV2 (torchvision's keys: `features.<i>.conv.`, head `classifier.1`), or None.

    Its 224 and 32 pixel variants have the same keys and shapes: both are 'mobilenet_v2'.
    """
    if not any(re.match(r'^features\.\d+\.conv\.', k) for k in shapes):
        return None
    head = shapes.get('classifier.1.weight')
    num_classes = int(head[0]) if head is not None and len(head) == 2 else None
    return Architecture('mobilenet_v2', None, num_classes, ())


def hint(found: Architecture | None, expected: Architecture | None, flags=None) -> str:
    """'looks like resnet56 (option B, 100 classes): set --config...' or '' when unknown.

    Args:
      found: the checkpoint's architecture (`describe`).
      expected: the model's (None: a network `describe` cannot read).
      flags: {'model': field, 'shortcut': field} to set (default `TEACHER_FLAGS`).
    """
    if found is None or found.model is None:
        return ''
    flags = flags or TEACHER_FLAGS
    expected = expected or Architecture(None, None, None, ())  # a network it cannot read
    sets = []
    if found.model != expected.model:
        model = found.model + (' (or cifar_mobilenet_v2)' if found.model == 'mobilenet_v2' else '')
        sets.append(f'--config.{flags["model"]}={model}')
    if found.shortcut and found.shortcut != expected.shortcut:
        sets.append(f'--config.{flags["shortcut"]}={found.shortcut}')
    if found.num_classes and found.num_classes != expected.num_classes:
        sets.append(f'--config.{_CLASSES_FLAG}={found.num_classes}')
    return f'looks like {found}: set {" ".join(sets)}' if sets else ''


def width_hint(mismatches: list[tuple[tuple, tuple]], expected: Architecture | None, flags=None):
    """'the checkpoint's channels are 0.5x the model's ...: set --config.teacher.width' when
    (nearly) every shape mismatch is one factor in the channels, else ''.

    Args:
      mismatches: (checkpoint shape, expected shape) of each mismatching leaf.
      expected: the model's architecture; only the width-scalable families get a hint.
      flags: the fields to name (`TEACHER_FLAGS`: the teacher has a width).
    """
    field = (flags or TEACHER_FLAGS).get('width')
    scalable = expected is not None and expected.model in choices.WIDTH_MODELS
    if not (field and scalable and mismatches):
        return ''
    ratios = []
    for got, wanted in mismatches:
        if len(got) != len(wanted):
            return ''
        ratios += [g / w for g, w in zip(got, wanted) if g != w and w]
    common = max(set(ratios), key=ratios.count, default=None)
    if common is None or ratios.count(common) < 0.9 * len(ratios):
        return ''
    return (
        f"the checkpoint's channels are {common:g}x the model's in {len(mismatches)} "
        f'shape mismatches: it was saved at another width; set --config.{field} to '
        f'{common:g} times its value here'
    )

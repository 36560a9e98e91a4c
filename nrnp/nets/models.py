"""Target networks by name (CIFAR/ImageNet ResNets, ResNet50, MobileNetV2, a digits CNN).

  model = build_model('resnet20', num_classes=10)
  variables = init_variables(model, (1, 32, 32, 3))
  logits, features = apply_with_features(model, variables, images)

Parameter names mirror the PyTorch reference implementations (akamaster CIFAR
ResNets, torchvision ResNets) so that importing a checkpoint is a mechanical
rename: flax ``layer1_0/conv1`` is torch ``layer1.0.conv1``. Every module takes
NHWC float32 inputs that are already normalised, and is applied functionally as
``model.apply({'params': p, 'batch_stats': s}, x, train=False)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nrnp.core import kernels
from nrnp.nets import bottleneck, layers, mobilenet

_PAD3 = ((1, 1), (1, 1))  # torch padding=1: stride-2 convs pad every side, unlike 'SAME'
_conv = layers.conv
_batch_norm = layers.batch_norm


class CifarBasicBlock(nn.Module):
    """Two 3x3 convs with a residual; option 'A' (zero-pad) or 'B' (1x1 conv) shortcut.

    Attributes:
      planes: output channels.
      stride: stride of ``conv1`` and of the shortcut.
      shortcut: 'A' (parameter-free, akamaster) or 'B' (projection ``shortcut_conv``).
    """

    planes: int
    stride: int = 1
    shortcut: str = 'A'

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps ``x: [B, H, W, C]`` to ``[B, H / stride, W / stride, planes]``."""
        out = _conv(self.planes, 3, self.stride, 'conv1')(x)
        out = _batch_norm(train, 'bn1')(out)
        self.sow('intermediates', 'bn1_out', out)
        out = nn.relu(out)
        out = _conv(self.planes, 3, 1, 'conv2')(out)
        out = _batch_norm(train, 'bn2')(out)
        residual = x
        if self.stride != 1 or x.shape[-1] != self.planes:
            if self.shortcut == 'A':
                residual = x[:, :: self.stride, :: self.stride, :]
                pad = self.planes // 4
                residual = jnp.pad(residual, ((0, 0), (0, 0), (0, 0), (pad, pad)))
            elif self.shortcut == 'B':
                residual = _conv(self.planes, 1, self.stride, 'shortcut_conv')(x)
                residual = _batch_norm(train, 'shortcut_bn')(residual)
            else:
                raise ValueError(f"shortcut must be 'A' or 'B', got {self.shortcut!r}")
        out = out + residual
        self.sow('intermediates', 'sum', out)
        return nn.relu(out)


class CifarResNet(nn.Module):
    """He et al. (2016) CIFAR ResNet of depth 6n+2 with 3 stages of n basic blocks.

    Attributes:
      depth: 20, 32, 44, 56, 110 (any 6n+2).
      num_classes: size of the ``linear`` head.
      shortcut: 'A' (zero-padded identity, as in the akamaster nets) or 'B' (1x1 conv + BN).
      width: channels of the first stage; the stages use width, 2*width, 4*width.
    """

    depth: int
    num_classes: int = 10
    shortcut: str = 'A'
    width: int = 16

    def __post_init__(self):
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f'depth must be 6n+2 (20, 32, 44, 56, 110), got {self.depth}')
        if self.shortcut not in ('A', 'B'):
            raise ValueError(f"shortcut must be 'A' or 'B', got {self.shortcut!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps images ``x: [B, H, W, 3]`` to logits ``[B, num_classes]``."""
        blocks = (self.depth - 2) // 6
        x = _conv(self.width, 3, 1, 'conv1')(x)
        x = _batch_norm(train, 'bn1')(x)
        self.sow('intermediates', 'stem', x)
        x = nn.relu(x)
        for stage in range(3):
            planes = self.width * 2**stage
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = CifarBasicBlock(
                    planes, stride, self.shortcut, name=f'layer{stage + 1}_{block}'
                )(x, train)
        x = jnp.mean(x, axis=(1, 2))  # [B, 4 * width]
        return nn.Dense(self.num_classes, name='linear')(x)


class ImageNetBasicBlock(nn.Module):
    """torchvision BasicBlock (stride on conv1) with an optional ``downsample`` projection.

    Attributes:
      planes: output channels.
      stride: stride of ``conv1`` and of ``downsample_conv``.
    """

    planes: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps ``x: [B, H, W, C]`` to ``[B, H / stride, W / stride, planes]``."""
        out = _conv(self.planes, 3, self.stride, 'conv1')(x)
        out = _batch_norm(train, 'bn1')(out)
        self.sow('intermediates', 'bn1_out', out)
        out = nn.relu(out)
        out = _conv(self.planes, 3, 1, 'conv2')(out)
        out = _batch_norm(train, 'bn2')(out)
        residual = x
        if self.stride != 1 or x.shape[-1] != self.planes:
            residual = _conv(self.planes, 1, self.stride, 'downsample_conv')(x)
            residual = _batch_norm(train, 'downsample_bn')(residual)
        out = out + residual
        self.sow('intermediates', 'sum', out)
        return nn.relu(out)


class ImageNetResNet(nn.Module):
    """torchvision-style ResNet with basic blocks (ResNet-18/34).

    Attributes:
      stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
      num_classes: size of the ``fc`` head.
    """

    stage_sizes: Sequence[int]
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps images ``x: [B, H, W, 3]`` to logits ``[B, num_classes]``."""
        x = _conv(64, 7, 2, 'conv1', padding=((3, 3), (3, 3)))(x)
        x = _batch_norm(train, 'bn1')(x)
        self.sow('intermediates', 'stem', x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_PAD3)
        for stage, num_blocks in enumerate(self.stage_sizes):
            planes = 64 * 2**stage
            for block in range(num_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = ImageNetBasicBlock(planes, stride, name=f'layer{stage + 1}_{block}')(x, train)
        x = jnp.mean(x, axis=(1, 2))  # [B, 512]
        return nn.Dense(self.num_classes, name='fc')(x)


def resnet18(num_classes: int = 1000) -> ImageNetResNet:
    """ResNet-18 with torchvision parameter names."""
    return ImageNetResNet(stage_sizes=(2, 2, 2, 2), num_classes=num_classes)


def resnet34(num_classes: int = 1000) -> ImageNetResNet:
    """ResNet-34 with torchvision parameter names."""
    return ImageNetResNet(stage_sizes=(3, 4, 6, 3), num_classes=num_classes)


class SmallCNN(nn.Module):
    """Tiny three-conv teacher for 8x8 grayscale digits.

    Attributes:
      num_classes: size of the ``linear`` head.
      widths: channels of conv1, conv2, conv3 (conv3 has stride 2).
    """

    num_classes: int = 10
    widths: Sequence[int] = (32, 64, 64)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps images ``x: [B, H, W, C]`` to logits ``[B, num_classes]``."""
        for i, (features, stride) in enumerate(zip(self.widths, (1, 1, 2), strict=True)):
            x = _conv(features, 3, stride, f'conv{i + 1}')(x)
            x = _batch_norm(train, f'bn{i + 1}')(x)
            self.sow('intermediates', f'bn{i + 1}_out', x)
            x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))  # [B, widths[-1]]
        return nn.Dense(self.num_classes, name='linear')(x)


_CIFAR_DEPTHS = {'resnet20': 20, 'resnet32': 32, 'resnet44': 44, 'resnet56': 56, 'resnet110': 110}
# torchvision's ResNet50 and MobileNetV2, and their 32x32 variants (`cifar_` prefix).
_SCALABLE = ('resnet50', 'mobilenet_v2', 'cifar_resnet50', 'cifar_mobilenet_v2')
MODEL_NAMES = (*_CIFAR_DEPTHS, 'resnet18', 'resnet34', *_SCALABLE, 'smallcnn')


def build_model(
    name: str,
    num_classes: int,
    *,
    shortcut: str | None = None,
    width_mult: float | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Builds a target network by name.

    Args:
      name: one of ``MODEL_NAMES``.
      num_classes: size of the classifier head.
      shortcut: the CIFAR ResNets' 'A' or 'B' (None: the module default); ignored by
        the networks without that choice, so a config's `teacher.shortcut` can always
        be passed.
      width_mult: channel multiplier of the ResNet50 and MobileNetV2 families
        (torchvision's `width_mult`; None or 1.0: full width); other networks take only
        None or 1.0.
      **kwargs: extra module attributes: ``width`` for the CIFAR ResNets, ``widths``
        for 'smallcnn'.

    Returns:
      The (unbound) Linen module.

    Raises:
      ValueError: for an unknown name, or a width multiplier for a net without one.
    """
    if name in _SCALABLE:
        mult = 1.0 if width_mult is None else float(width_mult)
        cifar = name.startswith('cifar_')
        if name.endswith('resnet50'):
            return bottleneck.resnet50(num_classes, mult, cifar)
        return mobilenet.MobileNetV2(num_classes, mult, cifar)
    if width_mult not in (None, 1.0):
        raise ValueError(f'{name} has no width multiplier (got {width_mult}); {_SCALABLE} do')
    if name in _CIFAR_DEPTHS:
        if shortcut is not None:
            kwargs['shortcut'] = shortcut
        return CifarResNet(depth=_CIFAR_DEPTHS[name], num_classes=num_classes, **kwargs)
    if name == 'resnet18':
        return resnet18(num_classes, **kwargs)
    if name == 'resnet34':
        return resnet34(num_classes, **kwargs)
    if name == 'smallcnn':
        return SmallCNN(num_classes=num_classes, **kwargs)
    raise ValueError(f'unknown model {name!r}; valid names: {", ".join(MODEL_NAMES)}')


def init_variables(model: nn.Module, input_shape: Sequence[int], seed: int = 0) -> dict:
    """Initialises a model's variables under jit.

    Args:
      model: a module from ``build_model``.
      input_shape: NHWC input shape, e.g. ``(1, 32, 32, 3)``.
      seed: PRNG seed for the initialisers.

    Returns:
      ``{'params': ..., 'batch_stats': ...}`` (float32 leaves).
    """

    @jax.jit
    def init(key):
        variables = model.init(key, jnp.zeros(input_shape, jnp.float32), train=False)
        return {k: variables[k] for k in ('params', 'batch_stats')}

    return init(jax.random.key(seed))


def apply_with_features(
    model: nn.Module, variables: dict, x: jax.Array, train: bool = False
) -> tuple[jax.Array, list[jax.Array]]:
    """Runs the model and returns its logits and sown feature maps in network order.

    The order is: maps sown by the top module itself (the stem, or SmallCNN's BN
    outputs) first, then the per-block maps, each group natural-sorted by path
    (``layer1_9/sum`` before ``layer1_10/bn1_out``; ``bn1_out`` before ``sum`` in a block).
    Sown names carry an ``_out`` suffix where a plain name would clash with the
    BatchNorm submodule of the same name (Flax scopes share one namespace).

    Args:
      model: a module from ``build_model``.
      variables: ``{'params', 'batch_stats'}``.
      x: ``[B, H, W, C]`` float32 normalised images.
      train: batch statistics mode; updated ``batch_stats`` are discarded.

    Returns:
      ``(logits [B, num_classes], features)`` where each feature is ``[B, h, w, c]``;
      for the ResNets there are ``1 + 2 * num_blocks`` of them.
    """
    mutable = ['intermediates', 'batch_stats'] if train else ['intermediates']
    logits, state = model.apply(variables, x, train=train, mutable=mutable)
    leaves = jax.tree.leaves_with_path(
        state.get('intermediates', {}), is_leaf=lambda node: isinstance(node, tuple)
    )
    named = [(jax.tree_util.keystr(p, simple=True, separator='/'), value) for p, value in leaves]
    named.sort(key=lambda item: ('/' in item[0], kernels.natural_key(tuple(item[0].split('/')))))
    return logits, [value[0] for _, value in named]

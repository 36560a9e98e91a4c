"""Target networks by name: CIFAR ResNets (here), torchvision's ResNets (`resnet`),
MobileNetV2 (`mobilenet`) and a digits CNN.

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

from nrnp import choices
from nrnp.core import kernels
from nrnp.nets import layers, mobilenet, resnet


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
        x = layers.conv(self.width, 3, 1, 'conv1')(x)
        x = layers.batch_norm(train, 'bn1')(x)
        self.sow('intermediates', 'stem', x)
        x = nn.relu(x)
        x = resnet.stages(x, train, ((self.depth - 2) // 6,) * 3, self.width, self._block)
        x = jnp.mean(x, axis=(1, 2))  # [B, 4 * width]
        return nn.Dense(self.num_classes, name='linear')(x)

    def _block(self, planes: int, stride: int, name: str) -> nn.Module:
        return resnet.BasicBlock(planes, stride, self.shortcut, name=name)


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
            x = layers.conv(features, 3, stride, f'conv{i + 1}')(x)
            x = layers.batch_norm(train, f'bn{i + 1}')(x)
            self.sow('intermediates', f'bn{i + 1}_out', x)
            x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))  # [B, widths[-1]]
        return nn.Dense(self.num_classes, name='linear')(x)


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
      name: one of ``choices.MODEL_NAMES``.
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
    if name in choices.WIDTH_MODELS:
        mult = 1.0 if width_mult is None else float(width_mult)
        cifar = name.startswith('cifar_')
        if name.endswith('resnet50'):
            return resnet.imagenet_resnet('resnet50', num_classes, mult, cifar)
        return mobilenet.MobileNetV2(num_classes, mult, cifar)
    if width_mult not in (None, 1.0):
        raise ValueError(
            f'{name} has no width multiplier (got {width_mult}); {choices.WIDTH_MODELS} do'
        )
    if name in choices.CIFAR_RESNET_DEPTHS:
        if shortcut is not None:
            kwargs['shortcut'] = shortcut
        return CifarResNet(
            depth=choices.CIFAR_RESNET_DEPTHS[name], num_classes=num_classes, **kwargs
        )
    if name in resnet.ARCHITECTURES:
        return resnet.imagenet_resnet(name, num_classes, **kwargs)
    if name == 'smallcnn':
        return SmallCNN(num_classes=num_classes, **kwargs)
    raise ValueError(f'unknown model {name!r}; valid names: {", ".join(choices.MODEL_NAMES)}')


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

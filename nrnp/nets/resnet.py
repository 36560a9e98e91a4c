"""ResNets with torchvision's parameter names: one `ResNet` whose `block_cls` makes it a
ResNet18/34 (`BasicBlock`) or a ResNet50 (`Bottleneck`), and the blocks the CIFAR ResNets share.

  model = ResNet((2, 2, 2, 2), BasicBlock, num_classes=1000)          # torchvision resnet18
  model = ResNet((3, 4, 6, 3), Bottleneck, 10, width=16, cifar=True)  # 32x32, 1/4 width
  model = imagenet_resnet('resnet50', num_classes=1000, width_mult=1.0)

Flax `layer2_0/downsample_conv` is torch `layer2.0.downsample.0`; the blocks sow their
feature maps ('bn1_out', 'sum') for distillation. torchvision's Bottleneck (ResNet v1.5)
carries the stride on its 3x3 `conv2`; most of a ResNet50's weights are in its 1x1 convs
(11.2 M of 23.5 M), computed as matmuls (`layers.Pointwise`).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nrnp.nets.layers import Pointwise, batch_norm, conv

EXPANSION = 4  # a Bottleneck's output channels per inner channel


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual (the stride on `conv1`): torchvision's BasicBlock, and
    the CIFAR ResNets' block.

    Attributes:
      planes: output channels.
      stride: stride of `conv1` and of the shortcut.
      shortcut: where the shape changes: 'downsample' (torchvision: 1x1 conv + BN named
        `downsample_*`), 'B' (the same named `shortcut_*`, CIFAR option B) or 'A'
        (parameter-free zero padding, akamaster's CIFAR option A).
    """

    planes: int
    stride: int = 1
    shortcut: str = 'downsample'

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps `x: [B, H, W, C]` to `[B, H / stride, W / stride, planes]`."""
        out = conv(self.planes, 3, self.stride, 'conv1')(x)
        out = batch_norm(train, 'bn1')(out)
        self.sow('intermediates', 'bn1_out', out)
        out = nn.relu(out)
        out = conv(self.planes, 3, 1, 'conv2')(out)
        out = batch_norm(train, 'bn2')(out)
        out = out + self._residual(x, train)
        self.sow('intermediates', 'sum', out)
        return nn.relu(out)

    def _residual(self, x: jax.Array, train: bool) -> jax.Array:
        if self.stride == 1 and x.shape[-1] == self.planes:
            return x
        if self.shortcut == 'A':
            pad = self.planes // 4
            x = x[:, :: self.stride, :: self.stride, :]
            return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad, pad)))
        if self.shortcut not in ('B', 'downsample'):
            raise ValueError(f"shortcut must be 'A', 'B' or 'downsample', got {self.shortcut!r}")
        name = 'shortcut' if self.shortcut == 'B' else 'downsample'
        x = conv(self.planes, 1, self.stride, f'{name}_conv')(x)
        return batch_norm(train, f'{name}_bn')(x)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck block: 1x1 `conv1`, 3x3 `conv2` (the stride), 1x1 `conv3`
    expanding `EXPANSION`x, each followed by BatchNorm; a 1x1 `downsample` where the shape changes.

    Attributes:
      planes: channels of the two inner convs; the block outputs `EXPANSION * planes`.
      stride: stride of `conv2` and of the `downsample` projection.
    """

    planes: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps `x: [B, H, W, C]` to `[B, H / stride, W / stride, EXPANSION * planes]`."""
        out = Pointwise(self.planes, name='conv1')(x)
        out = batch_norm(train, 'bn1')(out)
        self.sow('intermediates', 'bn1_out', out)
        out = nn.relu(out)
        out = conv(self.planes, 3, self.stride, 'conv2')(out)
        out = nn.relu(batch_norm(train, 'bn2')(out))
        out = Pointwise(self.planes * EXPANSION, name='conv3')(out)
        out = batch_norm(train, 'bn3')(out)
        residual = x
        if self.stride != 1 or x.shape[-1] != self.planes * EXPANSION:
            residual = Pointwise(self.planes * EXPANSION, self.stride, name='downsample_conv')(x)
            residual = batch_norm(train, 'downsample_bn')(residual)
        out = out + residual
        self.sow('intermediates', 'sum', out)
        return nn.relu(out)


def stages(x: jax.Array, train: bool, stage_sizes: Sequence[int], width: int, block) -> jax.Array:
    """The residual stages inside a ResNet's compact `__call__`: stage s has
    `stage_sizes[s]` blocks `layer{s + 1}_{b}` of `width * 2**s` planes, the first of each
    stage after the first striding by 2. `block(planes, stride, name)` makes one block."""
    for stage, num_blocks in enumerate(stage_sizes):
        for index in range(num_blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            x = block(width * 2**stage, stride, f'layer{stage + 1}_{index}')(x, train)
    return x


class ResNet(nn.Module):
    """torchvision's ResNet: 7x7 stride-2 stem and max-pool, stages of `block_cls`, `fc`.

    Attributes:
      stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet18, (3, 4, 6, 3) for 34/50.
      block_cls: `BasicBlock` (ResNet18/34) or `Bottleneck` (ResNet50).
      num_classes: size of the `fc` head.
      width: channels of the stem and of the first stage's blocks (torchvision: 64).
      cifar: the 32x32 variant: a 3x3 stride-1 stem and no max-pool.
    """

    stage_sizes: Sequence[int]
    block_cls: type[nn.Module] = BasicBlock
    num_classes: int = 1000
    width: int = 64
    cifar: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps images `x: [B, H, W, 3]` to logits `[B, num_classes]`."""
        x = conv(self.width, 3, 1, 'conv1')(x) if self.cifar else conv(self.width, 7, 2, 'conv1')(x)
        x = batch_norm(train, 'bn1')(x)
        self.sow('intermediates', 'stem', x)
        x = nn.relu(x)
        if not self.cifar:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        x = stages(x, train, self.stage_sizes, self.width, self._block)
        x = jnp.mean(x, axis=(1, 2))  # [B, channels of the last stage]
        return nn.Dense(self.num_classes, name='fc')(x)

    def _block(self, planes: int, stride: int, name: str) -> nn.Module:
        return self.block_cls(planes, stride, name=name)


# torchvision's ImageNet ResNets (`choices.IMAGENET_RESNETS`): blocks per stage, the block.
ARCHITECTURES = {
    'resnet18': ((2, 2, 2, 2), BasicBlock),
    'resnet34': ((3, 4, 6, 3), BasicBlock),
    'resnet50': ((3, 4, 6, 3), Bottleneck),
}


def imagenet_resnet(
    name: str, num_classes: int = 1000, width_mult: float = 1.0, cifar: bool = False
) -> ResNet:
    """torchvision's `name` (an `ARCHITECTURES` key); `width_mult` scales every channel
    count (1.0: the 64-channel base; `choices.WIDTH_MODELS` say which take one)."""
    stage_sizes, block = ARCHITECTURES[name]
    return ResNet(stage_sizes, block, num_classes, max(1, round(64 * width_mult)), cifar)

"""Bottleneck ResNets (torchvision's ResNet50 and a 32x32 variant) with torchvision's names.

  model = BottleneckResNet((3, 4, 6, 3), num_classes=1000)           # torchvision resnet50
  model = BottleneckResNet((3, 4, 6, 3), 10, width=16, cifar=True)   # CIFAR-sized, 1/4 width

torchvision's Bottleneck (ResNet v1.5): 1x1 `conv1` -> 3x3 `conv2` carrying the stride ->
1x1 `conv3` expanding 4x, each followed by BatchNorm; a 1x1 `downsample` projection + BN
where the shape changes. Flax `layer2_0/downsample_conv` is torch `layer2.0.downsample.0`.
Most of the weights are in the 1x1 convs (ResNet50: 11.2 M of its 23.5 M conv weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nrnp.nets.layers import Pointwise, batch_norm, conv

EXPANSION = 4


class Bottleneck(nn.Module):
    """torchvision's Bottleneck block (stride on the 3x3 `conv2`).

    Attributes:
      planes: channels of the two inner convs; the block outputs `4 * planes`.
      stride: stride of `conv2` and of the `downsample` projection.
    """

    planes: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps `x: [B, H, W, C]` to `[B, H / stride, W / stride, 4 * planes]`."""
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


class BottleneckResNet(nn.Module):
    """torchvision's bottleneck ResNet (ResNet50: stages (3, 4, 6, 3)).

    Attributes:
      stage_sizes: blocks per stage.
      num_classes: size of the `fc` head.
      width: channels of the stem and of the first stage's inner convs (torchvision: 64);
        stage s uses `width * 2**s` inner and `4 * width * 2**s` output channels.
      cifar: the 32x32 variant: a 3x3 stride-1 `conv1` stem and no max-pool (stages at
        32, 16, 8 and 4 pixels), instead of the 7x7 stride-2 stem and 3x3 stride-2 max-pool.
    """

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    num_classes: int = 1000
    width: int = 64
    cifar: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps images `x: [B, H, W, 3]` to logits `[B, num_classes]`."""
        if self.cifar:
            x = conv(self.width, 3, 1, 'conv1')(x)
        else:
            x = conv(self.width, 7, 2, 'conv1')(x)
        x = batch_norm(train, 'bn1')(x)
        self.sow('intermediates', 'stem', x)
        x = nn.relu(x)
        if not self.cifar:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, num_blocks in enumerate(self.stage_sizes):
            planes = self.width * 2**stage
            for block in range(num_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = Bottleneck(planes, stride, name=f'layer{stage + 1}_{block}')(x, train)
        x = jnp.mean(x, axis=(1, 2))  # [B, 4 * width * 2**(stages - 1)]
        return nn.Dense(self.num_classes, name='fc')(x)


def resnet50(num_classes: int = 1000, width: float = 1.0, cifar: bool = False):
    """ResNet-50 with torchvision names; `width` scales every channel count (1.0: 64 base)."""
    return BottleneckResNet((3, 4, 6, 3), num_classes, max(1, round(64 * width)), cifar)

"""MobileNetV2 (torchvision's, and a 32x32 variant) with torchvision's parameter names.

  model = MobileNetV2(num_classes=1000)                        # torchvision mobilenet_v2
  model = MobileNetV2(num_classes=10, width=0.5, cifar=True)   # CIFAR-sized, half width

Inverted residual blocks: a 1x1 expand conv (omitted when the expansion is 1), a 3x3
depthwise conv (`feature_group_count` = channels) and a linear 1x1 project conv, each
followed by BatchNorm, ReLU6 after the first two. Flax names mirror torch's with '_' for
'.': `features_2/conv_1_0` is torch `features.2.conv.1.0` (the depthwise conv of block 2),
`classifier_1` is `classifier.1` (torchvision's Dropout(0.2) before it is not modelled:
it is the identity at evaluation, and teachers trained here train without it).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nrnp.nets.layers import Depthwise, Pointwise, batch_norm, conv

# torchvision's inverted_residual_setting: expansion t, channels c, blocks n, stride s.
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
SETTING += ((6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's `_make_divisible`: the nearest multiple of `divisor`, at most 10 % down."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """torchvision's InvertedResidual block.

    Attributes:
      features: output channels.
      stride: stride of the depthwise conv.
      expand_ratio: hidden channels = round(input channels * expand_ratio).
    """

    features: int
    stride: int
    expand_ratio: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps `x: [B, H, W, C]` to `[B, H / stride, W / stride, features]`."""
        channels = x.shape[-1]
        hidden = int(round(channels * self.expand_ratio))
        out, index = x, 0
        if self.expand_ratio != 1:
            out = Pointwise(hidden, name='conv_0_0')(out)
            out = nn.relu6(batch_norm(train, 'conv_0_1')(out))
            index = 1
        out = Depthwise(3, self.stride, name=f'conv_{index}_0')(out)
        out = nn.relu6(batch_norm(train, f'conv_{index}_1')(out))
        out = Pointwise(self.features, name=f'conv_{index + 1}')(out)
        out = batch_norm(train, f'conv_{index + 2}')(out)
        if self.stride == 1 and channels == self.features:
            out = x + out
        self.sow('intermediates', 'out', out)
        return out


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2.

    Attributes:
      num_classes: size of the `classifier_1` head.
      width: torchvision's `width_mult`: channels `make_divisible(c * width)`; the last
        conv keeps 1280 channels below 1.0.
      cifar: the 32x32 variant (as commonly trained on CIFAR, e.g. kuangliu/pytorch-cifar):
        a stride-1 stem and a stride-1 second stage (24 channels), so the net downsamples
        8x (32 -> 4 pixels) instead of 32x.
    """

    num_classes: int = 1000
    width: float = 1.0
    cifar: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps images `x: [B, H, W, 3]` to logits `[B, num_classes]`."""
        x = conv(make_divisible(32 * self.width), 3, 1 if self.cifar else 2, 'features_0_0')(x)
        x = batch_norm(train, 'features_0_1')(x)
        self.sow('intermediates', 'stem', x)
        x = nn.relu6(x)
        index = 1
        for t, c, n, s in SETTING:
            stride = 1 if self.cifar and c == 24 else s
            for i in range(n):
                block = InvertedResidual(
                    make_divisible(c * self.width),
                    stride if i == 0 else 1,
                    t,
                    name=f'features_{index}',
                )
                x = block(x, train)
                index += 1
        last = make_divisible(1280 * max(1.0, self.width))
        x = Pointwise(last, name=f'features_{index}_0')(x)
        x = nn.relu6(batch_norm(train, f'features_{index}_1')(x))
        x = jnp.mean(x, axis=(1, 2))  # [B, last]
        return nn.Dense(self.num_classes, name='classifier_1')(x)

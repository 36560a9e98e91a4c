"""Building blocks the target networks share: torch-style convs and BatchNorm, and conv groups.

  x = conv(64, 3, stride=2, name='conv1')(x)        # bias-free, torch padding k // 2
  x = batch_norm(train, 'bn1')(x)                   # torch BatchNorm2d defaults
  paths = depthwise_kernels(model, variables, (1, 32, 32, 3))   # {(..., 'kernel'), ...}

Every conv pads `kernel // 2` on every side as torch's `padding=k // 2` does (stride-2
convs included, unlike Flax's 'SAME', which pads the bottom/right only).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def batch_norm(train: bool, name: str) -> nn.BatchNorm:
    """BatchNorm matching torch.nn.BatchNorm2d defaults (torch momentum 0.1 = flax 0.9)."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


def conv(
    features: int, kernel: int, stride: int, name: str, padding=None, groups: int = 1
) -> nn.Conv:
    """Bias-free conv with torch-style explicit padding (kernel // 2 on every side).

    Args:
      features: output channels.
      kernel: square kernel size.
      stride: stride in both directions.
      name: the module name (torch's, with '.' written '_').
      padding: explicit padding; None: `kernel // 2` on every side.
      groups: torch's `groups` (`feature_group_count`); the input channels for depthwise.
    """
    if padding is None:
        padding = ((kernel // 2, kernel // 2),) * 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=padding,
        feature_group_count=groups,
        use_bias=False,
        name=name,
    )


class Pointwise(nn.Module):
    """A bias-free 1x1 conv computed as a matmul (`kernel: [1, 1, in, features]`, as nn.Conv's).

    The same function and parameter as `conv(features, 1, stride)`; XLA:CPU computes the
    matmul's weight gradient ~4x faster than the conv's (batch 128, 32x32, 48 -> 16).

    Attributes:
      features: output channels.
      stride: takes every stride-th pixel first (torch's 1x1 stride-s conv, padding 0).
    """

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C] -> [B, ceil(H / stride), ceil(W / stride), features]`."""
        shape = (1, 1, x.shape[-1], self.features)
        kernel = self.param('kernel', nn.initializers.lecun_normal(), shape, jnp.float32)
        x = x[:, :: self.stride, :: self.stride, :]
        return jnp.einsum('bhwc,co->bhwo', x, kernel[0, 0])


class Depthwise(nn.Module):
    """A bias-free depthwise conv as k*k shifted multiply-adds (`kernel: [k, k, 1, C]`).

    The same function and parameter as `conv(C, k, stride, groups=C)` (torch's padding
    k // 2); XLA:CPU computes its gradients ~6x faster than the grouped conv's.

    Attributes:
      kernel_size: k (odd).
      stride: stride in both directions.
    """

    kernel_size: int = 3
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C] -> [B, H', W', C]`, H' = (H - 1) // stride + 1."""
        k, s = self.kernel_size, self.stride
        shape = (k, k, 1, x.shape[-1])
        kernel = self.param('kernel', nn.initializers.lecun_normal(), shape, jnp.float32)
        height, width = (x.shape[1] - 1) // s + 1, (x.shape[2] - 1) // s + 1
        padded = jnp.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
        out = jnp.zeros((x.shape[0], height, width, x.shape[-1]), x.dtype)
        for i in range(k):
            for j in range(k):
                window = padded[
                    :, i : i + s * (height - 1) + 1 : s, j : j + s * (width - 1) + 1 : s
                ]
                out = out + window * kernel[i, j, 0]
        return out


def depthwise_kernels(model: nn.Module, variables: dict, input_shape: Sequence[int]) -> set:
    """Paths of the `kernel` leaves of grouped convs with one input channel per group.

    A depthwise kernel `[k, k, 1, C]` has the shape of a conv over a single-channel input
    (a grey-scale stem); only the module's `feature_group_count` tells them apart, so the
    model is traced (`jax.eval_shape`, nothing computed) and every `nn.Conv` and
    `Depthwise` call inspected.

    Args:
      model: a Linen module.
      variables: its variables (arrays or `ShapeDtypeStruct`s).
      input_shape: an NHWC input shape it accepts, e.g. `(1, 32, 32, 3)`.

    Returns:
      `{('features_2', 'conv_1_0', 'kernel'), ...}`: paths inside 'params'.
    """
    found = set()

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == '__call__':
            groups = getattr(module, 'feature_group_count', 0) if isinstance(module, nn.Conv) else 0
            if isinstance(module, Depthwise) or (groups > 1 and args[0].shape[-1] == groups):
                found.add((*module.path, 'kernel'))
        return next_fun(*args, **kwargs)

    def apply(v):
        with nn.intercept_methods(interceptor):
            return model.apply(v, jnp.zeros(input_shape, jnp.float32), train=False)

    jax.eval_shape(apply, variables)
    return found

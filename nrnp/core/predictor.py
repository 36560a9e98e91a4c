"""The predictor: an MLP from an encoded kernel coordinate to that kernel's 3x3 weights.

  model = Predictor(hidden=180, layers=5)
  pparams = init_predictor(model, input_dim=240, seed=0)
  table = predict(model, pparams, encoded)   # [num_kernels, 9]

`reconstruct` maps predictor params and encoded coordinates to the target's params
pytree; it is pure and jittable, so the same function trains and rebuilds.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from nrnp.core import kernel_rows, kernels


def torch_uniform_init(fan_in: int):
    """PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Predictor(nn.Module):
    """NeRN's predictor: `layers` Dense layers, in -> h -> ... -> h -> 9, ReLU between.

    Attributes:
      hidden: width h of the hidden layers.
      layers: number of Dense layers in total (NeRN's `num_blocks`, 5).
      outputs: entries per predicted kernel (9 for 3x3).
      initializer: 'torch' (U(+-1/sqrt(fan_in)) on weights and biases, as NeRN) or 'lecun'.
      residual: add skip connections around the hidden h -> h layers.
    """

    hidden: int
    layers: int = 5
    outputs: int = kernel_rows.ROW
    initializer: str = 'torch'
    residual: bool = False

    @nn.compact
    def __call__(self, x):
        """x: [N, input_dim] float32 -> [N, outputs] float32."""
        if self.layers < 2:
            raise ValueError(f'predictor needs at least 2 layers, got {self.layers}')
        if self.initializer not in ('torch', 'lecun'):
            raise ValueError(f"predictor init must be 'torch' or 'lecun', got {self.initializer!r}")
        widths = [self.hidden] * (self.layers - 1) + [self.outputs]
        for i, width in enumerate(widths):
            fan_in = x.shape[-1]
            if self.initializer == 'torch':
                dense = nn.Dense(
                    width,
                    kernel_init=torch_uniform_init(fan_in),
                    bias_init=torch_uniform_init(fan_in),
                    name=f'dense{i}',
                )
            else:
                dense = nn.Dense(width, name=f'dense{i}')
            y = dense(x)
            if i < len(widths) - 1:
                y = nn.relu(y)
                if self.residual and 0 < i:
                    y = y + x
            x = y
        return x


def num_params(hidden: int, input_dim: int, layers: int = 5, outputs: int = kernel_rows.ROW) -> int:
    """Parameter count of a `Predictor` (NeRN, 240 inputs, 5 layers: 3h^2 + 253h + 9)."""
    total = (input_dim + 1) * hidden + (layers - 2) * (hidden + 1) * hidden
    return total + (hidden + 1) * outputs


def init_predictor(model: Predictor, input_dim: int, seed):
    """Predictor params for inputs of width `input_dim`, from an int seed or a PRNG key."""
    x = jnp.zeros((1, input_dim), jnp.float32)
    key = seed if isinstance(seed, jax.Array) else jax.random.key(seed)
    return jax.jit(model.init)(key, x)['params']


@functools.partial(jax.jit, static_argnums=0)
def predict(model: Predictor, pparams, encoded):
    """Kernel rows for encoded coordinates: `[N, input_dim] -> [N, 9]` float32."""
    return model.apply({'params': pparams}, encoded)


@functools.partial(jax.jit, static_argnums=(0, 1))
def reconstruct(model: Predictor, layout: kernel_rows.KernelLayout, pparams, encoded, params):
    """The target params with every represented kernel predicted.

    Args:
      model: the predictor module (static).
      layout: the kernel table layout (static).
      pparams: predictor params.
      encoded: `[layout.num_kernels, input_dim]` float32, row i the encoding of the
        coordinate assigned to kernel slot i (orderings move inputs, not outputs).
      params: the target's params pytree; non-represented leaves are kept.

    Returns:
      The target params pytree, same structure, shapes and dtypes as `params`.
    """
    return kernels.scatter(layout, predict(model, pparams, encoded), params)

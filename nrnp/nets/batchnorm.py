"""BatchNorm statistics of a network measured on images, and BatchNorm on batch statistics.

  moments = batch_moments(model, variables, images)    # like batch_stats: {'mean', 'var'} [C]
  total = combine(total, moments, count)                # exact pooling over batches
  stats = estimated_stats(stored, rebuilt, original, 'relative')   # a new 'batch_stats'
  with batch_statistics():                              # every nn.BatchNorm normalises with
      logits = model.apply(variables, x, train=False)   # the batch's own statistics

Every `flax.linen.BatchNorm` of the model is intercepted (`nn.intercept_methods`), so any
Linen network applied as `model.apply(variables, x, train=False)` works unchanged: the
mean and (population) variance of each BatchNorm's input over its reduction axes are
sown into the `MOMENTS` collection, which mirrors the `batch_stats` tree (`mean`, `var`
per BatchNorm), and with `normalise=True` the BatchNorm normalises with them (train
mode) instead of its running statistics, without updating them.

Pooling is exact: moments of several batches combine as one pass over all their
elements (Chan et al.'s parallel update of mean and sum of squared deviations), not as
a momentum average. Inside the forward pass each batch is still normalised with its
own statistics, as in training.
"""

from __future__ import annotations

import contextlib
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from nrnp import choices

MOMENTS = 'nrnp_moments'


def has_batchnorm(variables: dict) -> bool:
    """Whether `variables` hold any BatchNorm running statistics."""
    return bool(jax.tree.leaves(variables.get('batch_stats', {})))


def _feature_axes(module: nn.BatchNorm, ndim: int) -> tuple[int, ...]:
    axes = module.axis if isinstance(module.axis, tuple) else (module.axis,)
    return tuple(a % ndim for a in axes)


def _interceptor(normalise: bool, record: bool):
    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if not isinstance(module, nn.BatchNorm) or context.method_name != '__call__':
            return next_fun(*args, **kwargs)
        x = args[0]
        features = _feature_axes(module, x.ndim)
        reduce = tuple(a for a in range(x.ndim) if a not in features)
        shape = tuple(x.shape[a] if a in features else 1 for a in range(x.ndim))
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, reduce)  # [C]
        var = jnp.mean(jnp.square(x32 - mean.reshape(shape)), reduce)  # [C], two-pass
        if record:
            module.sow(MOMENTS, 'mean', mean)
            module.sow(MOMENTS, 'var', var)
        if not normalise:
            return next_fun(*args, **kwargs)
        y = (x32 - mean.reshape(shape)) * jax.lax.rsqrt(var.reshape(shape) + module.epsilon)
        if module.use_scale:
            y = y * module.get_variable('params', 'scale').reshape(shape)
        if module.use_bias:
            y = y + module.get_variable('params', 'bias').reshape(shape)
        return y.astype(module.dtype or x.dtype)

    return intercept


@contextlib.contextmanager
def batch_statistics(normalise: bool = True, record: bool = False):
    """Within it, every `nn.BatchNorm` normalises with its input batch's statistics
    (`normalise`) and/or sows them into `MOMENTS` (`record`; apply with `mutable=[MOMENTS]`).
    """
    with nn.intercept_methods(_interceptor(normalise, record)):
        yield


def _pool_calls(sown) -> jax.Array:
    """A BatchNorm called several times in one pass: its calls' moments pooled (equal sizes)."""
    return sum(sown) / len(sown)


def batch_moments(model, variables: dict, images, normalise: bool = True) -> dict:
    """Per-BatchNorm input moments of one batch of images.

    Args:
      model: a Linen network applied as `model.apply(variables, x, train=False)`.
      variables: its {'params', 'batch_stats', ...}.
      images: `[B, ...]` float32, normalised as the network expects.
      normalise: each BatchNorm normalises with the batch's statistics (train mode); False:
        with its running statistics (eval mode; the moments are still the batch's).

    Returns:
      A tree like `variables['batch_stats']` with `mean` and `var` leaves, float32.

    Raises:
      ValueError: a BatchNorm's running statistics were not reached by the forward pass.
    """
    with batch_statistics(normalise=normalise, record=True):
        _, state = model.apply(variables, images, train=False, mutable=[MOMENTS])
    moments = jax.tree.map(
        _pool_calls, state.get(MOMENTS, {}), is_leaf=lambda x: isinstance(x, tuple)
    )
    stored = jax.tree.structure(variables.get('batch_stats', {}))
    if jax.tree.structure(moments) != stored:
        raise ValueError(
            'the forward pass did not reach every BatchNorm with running statistics: '
            f'found {jax.tree.structure(moments)}, expected {stored}'
        )
    return moments


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Pooled:
    """Moments pooled over `count` batches of equal size (exact, see `combine`).

    Attributes:
      count: float32 scalar, batches pooled so far.
      mean: a `batch_stats`-like tree of per-channel means.
      m2: the same tree of per-channel mean squared deviations times `count`.
    """

    count: jax.Array
    mean: dict
    m2: dict

    @property
    def variance(self) -> dict:
        return jax.tree.map(lambda m2: m2 / jnp.maximum(self.count, 1.0), self.m2)

    def as_stats(self) -> dict:
        """`{'mean', 'var'}` leaves of the pooled set, like `batch_stats`."""
        return _merge(self.mean, self.variance)


def _split(moments: dict) -> tuple[dict, dict]:
    """A moments tree's (means, variances), each a tree like it with one kind of leaf."""
    return _select(moments, 'mean'), _select(moments, 'var')


def _select(tree: dict, name: str) -> dict:
    return {
        k: (_select(v, name) if isinstance(v, dict) and name not in v else v[name])
        for k, v in tree.items()
    }


def _merge(means: dict, variances: dict) -> dict:
    return {
        k: (_merge(v, variances[k]) if isinstance(v, dict) else {'mean': v, 'var': variances[k]})
        for k, v in means.items()
    }


def empty(moments_like: dict) -> Pooled:
    """No batches pooled yet (shapes from a moments or batch_stats tree)."""
    mean, _ = _split(moments_like)
    zeros = jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32), mean)
    return Pooled(jnp.zeros([], jnp.float32), zeros, zeros)


def combine(pooled: Pooled, moments: dict) -> Pooled:
    """`pooled` plus one more batch (the same number of elements per channel as each of
    the others): the mean and variance of all their elements, as one pass would give."""
    mean_b, var_b = _split(moments)
    count = pooled.count + 1.0

    def update(mean, m2, mb, vb):
        delta = mb - mean
        return mean + delta / count, m2 + vb + jnp.square(delta) * (count - 1.0) / count

    both = jax.tree.map(update, pooled.mean, pooled.m2, mean_b, var_b)
    is_pair = lambda x: isinstance(x, tuple)
    new_mean = jax.tree.map(lambda p: p[0], both, is_leaf=is_pair)
    new_m2 = jax.tree.map(lambda p: p[1], both, is_leaf=is_pair)
    return Pooled(count, new_mean, new_m2)


RELATIVE_RANGE = 4.0  # variance ratios beyond which a channel takes the plain estimate


def estimated_stats(stored: dict, rebuilt: dict, original: dict | None, mode: str) -> dict:
    """New running statistics from pooled moments (`{'mean', 'var'}` trees).

    Args:
      stored: the original network's `batch_stats`.
      rebuilt: the rebuilt network's pooled moments.
      original: the original network's pooled moments on the same images ('relative').
      mode: 'plain': the rebuilt network's moments; 'relative': the stored statistics moved
        by the shift the rebuilt weights cause (mean: stored + rebuilt - original;
        variance: stored x (rebuilt + eps) / (original + eps), eps = 1e-5), so the
        original network gets its stored statistics back exactly. A channel whose variance
        ratio leaves [1 / RELATIVE_RANGE, RELATIVE_RANGE] takes the plain estimate: there
        the additive mean and multiplicative variance disagree (a magnitude-pruned
        ResNet20 gains most from the rule, nrnp's rebuilt nets keep the relative estimate;
        docs/results.md, "BatchNorm re-estimation").

    Returns:
      A tree like `stored`.
    """
    if mode == 'plain':
        return jax.tree.map(lambda s, r: r.astype(s.dtype), stored, rebuilt)
    if mode != 'relative':
        raise ValueError(f'mode must be one of {choices.RECALIBRATE_MODES}, got {mode!r}')
    if original is None:
        raise ValueError("mode 'relative' needs the original network's moments")

    def move(s, r, o):  # one BatchNorm's {'mean', 'var'}
        ratio = (r['var'] + 1e-5) / (o['var'] + 1e-5)
        near = (ratio <= RELATIVE_RANGE) & (ratio >= 1 / RELATIVE_RANGE)
        mean = jnp.where(near, s['mean'] + (r['mean'] - o['mean']), r['mean'])
        var = jnp.where(near, s['var'] * ratio, r['var'])
        return {'mean': mean.astype(s['mean'].dtype), 'var': var.astype(s['var'].dtype)}

    one = lambda x: isinstance(x, dict) and set(x) == {'mean', 'var'}
    return jax.tree.map(move, stored, rebuilt, original, is_leaf=one)

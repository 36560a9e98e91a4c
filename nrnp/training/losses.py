"""Losses of the two phases: reconstruction RMSE, knowledge distillation, feature maps.

rec = reconstruction_loss(pred, target, mask)            # pooled RMSE
kd = kd_loss(teacher_logits, student_logits, temperature=1.0, stable=True)
fm = feature_map_loss(teacher_maps, student_maps)
norm = safe_norm(rows)                                   # [B, D] -> [B, 1], NaN-free gradient
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def reconstruction_loss(pred, target, mask, weights=None):
    """One RMSE pooled over all real weights: sqrt(sum w m (W - What)^2 / sum w m).

    Args:
      pred: `[N, 9]` predicted kernel rows.
      target: `[N, 9]` target kernel rows.
      mask: `[N, 9]` 1 where an entry is a real weight (a 1x1 kernel has one).
      weights: optional `[N]` row multiplicities (a row drawn m times counts m times).

    Returns:
      Scalar float32.
    """
    m = mask if weights is None else mask * weights[:, None]
    sq = jnp.sum(m * jnp.square(pred - target))
    # max(): sqrt has an infinite slope at 0, and a loss of exactly 0 happens (a round
    # that starts by fitting its own predictor's output); there the gradient is 0, not NaN.
    return jnp.sqrt(jnp.maximum(sq / jnp.maximum(jnp.sum(m), 1.0), 1e-30))


def kd_loss(teacher_logits, student_logits, temperature: float = 1.0, stable: bool = True):
    """KL(p_T || p_S), batch mean.

    Args:
      teacher_logits: `[B, classes]`.
      student_logits: `[B, classes]`.
      temperature: T; the loss is scaled by T^2 (standard KD; 1 at T=1).
      stable: NeRN's form, log(p_S + 1e-4) instead of log p_S (only at T=1 in NeRN).

    Returns:
      Scalar float32.
    """
    t = temperature
    p_t = jax.nn.softmax(teacher_logits / t, axis=-1)
    log_p_t = jax.nn.log_softmax(teacher_logits / t, axis=-1)
    if stable:
        log_p_s = jnp.log(jax.nn.softmax(student_logits / t, axis=-1) + 1e-4)
    else:
        log_p_s = jax.nn.log_softmax(student_logits / t, axis=-1)
    kl = jnp.sum(p_t * (log_p_t - log_p_s), axis=-1)
    return jnp.mean(kl) * t * t


def feature_map_loss(teacher_maps, student_maps):
    """NeRN's normalised feature-map loss.

    Each map `[B, H, W, C]` is L2-normalised per sample over H*W*C (A / (|A| + 1e-3));
    the squared distances are summed over maps and elements, averaged over the batch. A map
    that is exactly zero (a fresh network's BatchNorm on a blank image) gives a finite loss
    and a zero gradient through its norm (`safe_norm`).
    """
    if len(teacher_maps) != len(student_maps):
        raise ValueError(f'{len(teacher_maps)} teacher maps vs {len(student_maps)} student maps')
    total = 0.0
    for a, b in zip(teacher_maps, student_maps):
        if a.shape != b.shape:
            raise ValueError(f'feature map shapes differ: teacher {a.shape}, student {b.shape}')
        a = a.reshape(a.shape[0], -1)  # [B, H*W*C]
        b = b.reshape(b.shape[0], -1)
        a = a / (safe_norm(a) + 1e-3)
        b = b / (safe_norm(b) + 1e-3)
        total = total + jnp.sum(jnp.square(a - b)) / a.shape[0]
    return total


def safe_norm(x):
    """Per-row L2 norm `[B, D] -> [B, 1]` whose gradient is 0, not NaN, at a zero row.

    `jnp.linalg.norm`'s gradient x / |x| is 0/0 at x = 0; the inner `where` keeps the
    sqrt away from 0 so that no NaN enters the backward pass, the outer one gives 0 there.
    """
    squared = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)

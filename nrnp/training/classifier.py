"""Training a classifier from scratch: the teacher of runs that have no checkpoint.

variables = train_classifier(model, init_variables, dataset, steps=600, batch_size=128,
                             learning_rate=3e-3, seed=0, mean=MEAN, std=STD)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from nrnp.data import batching
from nrnp.data.dataset import Dataset
from nrnp.reporting import progress as progress_lines


def _train_step(state, images, labels, *, model, tx):
    params, batch_stats, opt_state = state

    def loss_fn(p):
        logits, updates = model.apply(
            {'params': p, 'batch_stats': batch_stats}, images, train=True, mutable=['batch_stats']
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates['batch_stats']

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss


def train_classifier(
    model,
    variables,
    dataset: Dataset,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    mean,
    std,
    augment: str = 'none',
    image_size: int | None = None,
    log=print,
) -> dict:
    """Trains `model` from `variables` with Adam + cross-entropy; returns new variables."""
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    state = (variables['params'], variables['batch_stats'], tx.init(variables['params']))
    step_fn = jax.jit(functools.partial(_train_step, model=model, tx=tx), donate_argnums=0)
    batches = batching.train_batches(
        dataset,
        batch_size=min(batch_size, len(dataset)),
        seed=seed,
        augment=augment,
        mean=mean,
        std=std,
        image_size=image_size,
    )
    progress = progress_lines.Progress(steps, 'teacher training', log, every=max(steps // 5, 1))
    for step in range(1, steps + 1):
        images, labels = next(batches)
        state, loss = step_fn(state, jnp.asarray(images), jnp.asarray(labels))
        progress.update(step, {'loss': loss})
    return {'params': state[0], 'batch_stats': state[1]}

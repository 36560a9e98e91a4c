"""Getting the target network: load a checkpoint, or train a small one when there is none.

  variables = load_or_train(model, input_shape, checkpoint='', train=dataset, ...)

Training exists for the embedded default (a small CNN on scikit-learn's digits,
trained in seconds): the trained variables are cached under the workdir, so a
rerun, or a resumed run, compresses exactly the same network.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nrnp import data, importers, models, report


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
    dataset: data.Dataset,
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
    batches = data.train_batches(
        dataset,
        batch_size=min(batch_size, len(dataset)),
        seed=seed,
        augment=augment,
        mean=mean,
        std=std,
        image_size=image_size,
    )
    progress = report.Progress(steps, 'teacher training', log, every=max(steps // 5, 1))
    for step in range(1, steps + 1):
        images, labels = next(batches)
        state, loss = step_fn(state, jnp.asarray(images), jnp.asarray(labels))
        progress.update(step, {'loss': loss})
    return {'params': state[0], 'batch_stats': state[1]}


def load_or_train(
    model,
    input_shape,
    *,
    checkpoint: str,
    workdir: str,
    train_data_fn,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    mean,
    std,
    augment: str = 'none',
    image_size: int | None = None,
    log=print,
) -> tuple[dict, str]:
    """The target's variables and where they came from.

    Args:
      model: the target module.
      input_shape: e.g. (1, 32, 32, 3), for the variables template.
      checkpoint: a state dict file or orbax directory; '' trains a teacher instead.
      workdir: the run's directory; a trained teacher is cached in `workdir/teacher`.
      train_data_fn: zero-argument callable returning the training `data.Dataset`.
      steps, batch_size, learning_rate: teacher training settings.
      seed: training seed.
      mean, std: input normalisation.
      augment, image_size: the training augmentation (`data.train_batches`); images of
        several sizes need 'random_resized_crop' with image_size.
      log: progress sink.

    Returns:
      (variables, source description).
    """
    if checkpoint:
        return importers.load_target(checkpoint, model, input_shape), checkpoint
    cache = os.path.join(os.path.abspath(workdir), 'teacher')
    if os.path.isdir(cache):
        log(f'teacher: loading the network trained earlier from {cache}')
        template = jax.eval_shape(lambda: models.init_variables(model, input_shape, seed=seed))
        return importers.load_variables(cache, template), cache
    if steps <= 0:
        raise ValueError(
            'teacher.checkpoint is empty and teacher.train_steps is 0: give a '
            'checkpoint (--config.teacher.checkpoint=PATH) or steps to train one'
        )
    log(f'teacher: no checkpoint given, training {model.__class__.__name__} for {steps} steps')
    variables = train_classifier(
        model,
        models.init_variables(model, input_shape, seed=seed),
        train_data_fn(),
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        mean=mean,
        std=std,
        augment=augment,
        image_size=image_size,
        log=log,
    )
    variables = jax.tree.map(np.asarray, variables)
    importers.save_variables(cache, variables)
    return variables, f'trained here ({steps} steps), cached in {cache}'

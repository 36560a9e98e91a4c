"""Getting the target network: load a checkpoint, or train a small one when there is none.

  variables = load_or_train(model, input_shape, checkpoint='', train=dataset, ...)

Training exists for the embedded default (a small CNN on scikit-learn's digits,
trained in seconds): the trained variables are cached under the workdir, so a
rerun, or a resumed run, compresses exactly the same network.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from nrnp.nets import checkpoint_files, loading, models
from nrnp.training import classifier


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
    checkpoint_sha256: str = '',
    download: bool = True,
) -> tuple[dict, str]:
    """The target's variables and where they came from.

    Args:
      model: the target module.
      input_shape: e.g. (1, 32, 32, 3), for the variables template.
      checkpoint: a state dict file, orbax directory, http(s) URL or registry name
        (`nets.checkpoint_files.resolve_checkpoint`); '' trains a teacher instead.
      workdir: the run's directory; a trained teacher is cached in `workdir/teacher`.
      train_data_fn: zero-argument callable returning the training `data.Dataset`.
      steps, batch_size, learning_rate: teacher training settings.
      seed: training seed.
      mean, std: input normalisation.
      augment, image_size: the training augmentation (`data.train_batches`); images of
        several sizes need 'random_resized_crop' with image_size.
      log: progress sink.
      checkpoint_sha256: the expected sha256 of a checkpoint URL ('' = none).
      download: False never downloads a checkpoint URL or registry entry.

    Returns:
      (variables, source description: the local path as given, or for a URL or registry
      name what it is, the URL, its sha256 and the cached file).
    """
    if checkpoint:
        source = checkpoint_files.resolve_checkpoint(
            checkpoint, sha256=checkpoint_sha256, download=download, log=log
        )
        return loading.load_target(source, model, input_shape), source.describe()
    cache = os.path.join(os.path.abspath(workdir), 'teacher')
    if os.path.isdir(cache):
        log(f'teacher: loading the network trained earlier from {cache}')
        template = jax.eval_shape(lambda: models.init_variables(model, input_shape, seed=seed))
        return loading.load_variables(cache, template), cache
    if steps <= 0:
        raise ValueError(
            'teacher.checkpoint is empty and teacher.train_steps is 0: give a '
            'checkpoint (--config.teacher.checkpoint=PATH) or steps to train one'
        )
    log(f'teacher: no checkpoint given, training {model.__class__.__name__} for {steps} steps')
    variables = classifier.train_classifier(
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
    loading.save_variables(cache, variables)
    return variables, f'trained here ({steps} steps), cached in {cache}'

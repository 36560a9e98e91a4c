"""Getting the target network: load a checkpoint, or train one when there is none.

  variables, source = load_or_train(config, model, input_shape, workdir=W,
                                    train_data_fn=..., test_top1=..., test_images=N)

With `teacher.checkpoint=''` and `teacher.train_steps > 0` a classifier is trained from
scratch (`training.classifier`, checkpointed in `W/teacher_checkpoints`, resumable), its
top-1 on the test split measured once, and the result cached in `W/teacher` (orbax, with
the sha256 of its files in `W/teacher/nrnp_checksums.json`) and `W/teacher.json` beside
it: the training config (model, data, recipe) and that top-1. A rerun, or a resumed run,
reuses the cache only when its training config matches (another one is refused naming
the differing fields, never silently retrained or reused) and its files match their
checksums: a damaged cache (or one without checksums) is set aside with one warning and
trained again, which the final training checkpoint makes quick.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax

from nrnp import errors, files
from nrnp.errors import ConfigError, WorkdirError
from nrnp.nets import checkpoint_files, loading, models
from nrnp.training import classifier, sharding


def recipe_from_config(config) -> classifier.Recipe:
    """The teacher training recipe of `config.teacher` (and the data augmentation settings)."""
    t = config.teacher
    augment = t.train_augment
    if not augment:  # follow the data: mixed sizes need random_resized_crop
        augment = 'random_resized_crop' if config.data.augment == 'random_resized_crop' else 'none'
    resized = augment == 'random_resized_crop'
    return classifier.Recipe(
        optimizer=t.train_optimizer,
        learning_rate=float(t.train_learning_rate),
        schedule=t.train_schedule,
        weight_decay=float(t.train_weight_decay),
        steps=int(t.train_steps),
        batch_size=int(t.train_batch_size),
        seed=int(config.seed),
        augment=augment,
        pad=int(config.data.pad),
        image_size=int(config.data.image_size) if resized else None,
    )


def training_config(config, input_shape, recipe: classifier.Recipe) -> dict:
    """Everything that shapes a trained teacher (JSON types): the cache's key."""
    d = config.data
    where = os.path.abspath(d.image_folder) if d.image_folder else d.name
    fingerprint = {
        'model': config.teacher.model,
        'shortcut': config.teacher.shortcut,
        # Only when set, so caches written before the field existed still match.
        **({'width': config.teacher.width} if config.teacher.width != 1.0 else {}),
        'num_classes': config.data.num_classes,
        'input_shape': list(input_shape),
        'data': {
            'dataset': where,
            'data_dir': d.data_dir,
            'split': d.train_split,
            'mean': list(d.mean),
            'std': list(d.std),
        },
        'recipe': dataclasses.asdict(recipe),
    }
    return json.loads(json.dumps(fingerprint))


def _cached(cache: str, wanted: dict, model, input_shape, seed: int, log):
    """(variables, provenance) of the teacher cached in `cache`; None when it was damaged
    (set aside: the caller trains it again).

    Raises:
      WorkdirError: the cache has no training config, or another one than `wanted`.
    """
    meta_path = cache + '.json'
    if not os.path.exists(meta_path):
        raise WorkdirError(
            f'{cache} holds a teacher without {meta_path} (written by an older nrnp or an '
            f'interrupted run): its training config is unknown. Delete {cache} to train '
            f'again, or compress it as it is with --config.teacher.checkpoint={cache}'
        )
    try:
        with open(meta_path, **files.ENCODING) as f:
            meta = json.load(f)
        changed = files.differences(meta['training'], wanted)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return _set_aside(cache, f'{meta_path} is unreadable: {e}', log)
    if changed:
        raise WorkdirError(
            f'{cache} was trained with another teacher training config: '
            + '; '.join(changed)
            + f'. Use a new --workdir, delete {cache}, {meta_path} and '
            f'{cache}_checkpoints to retrain here, or set the old values'
        )
    problem = files.verify(cache)
    if problem:
        return _set_aside(cache, problem, log)
    log(f'teacher: reusing the network trained earlier in {cache}')
    template = jax.eval_shape(lambda: models.init_variables(model, input_shape, seed=seed))
    return loading.load_variables(cache, template), meta['source'] + f', cached in {cache}'


def _set_aside(cache: str, problem: str, log) -> None:
    """Renames a damaged cached teacher (process 0) and says so in one line."""
    aside = cache
    if jax.process_index() == 0:
        with errors.writing(cache, 'the damaged cached teacher'):
            aside = files.set_aside(cache)
    log(
        f'warning: the cached teacher {cache} is damaged ({problem}): set aside as {aside}; '
        f'training it again (from {cache}_checkpoints where they hold it)'
    )


def load_or_train(
    config,
    model,
    input_shape,
    *,
    workdir: str,
    train_data_fn,
    test_top1,
    test_images: int,
    log=print,
) -> tuple[dict, str]:
    """The target's variables and where they came from.

    Args:
      config: the run's ConfigDict (`teacher.*`, `data.*`, `seed`, `num_devices`).
      model: the target module.
      input_shape: e.g. (1, 32, 32, 3), for the variables template.
      workdir: the run's directory; a trained teacher is cached in `workdir/teacher`.
      train_data_fn: zero-argument callable returning the training split.
      test_top1: `mesh -> (variables -> top-1 percent)` on the test split.
      test_images: images in the test split (for the provenance).
      log: progress sink.

    Returns:
      (variables, provenance): a local `teacher.checkpoint` itself; for a URL or registry
      name what it is, the URL, its sha256 and the cached file; or e.g. 'trained: sgd lr 0.1
      momentum 0.9 wd 0.0005 cosine, 2000 steps of 128, crop_flip; top-1 NN.NN % on the
      10000 test images, cached in W/teacher'.

    Raises:
      ConfigError: no checkpoint and no training steps.
      WorkdirError: the workdir's teacher was trained with another training config.
    """
    if config.teacher.checkpoint:
        source = checkpoint_files.resolve_checkpoint(
            config.teacher.checkpoint,
            sha256=config.teacher.checkpoint_sha256,
            download=config.data.download,
            log=log,
        )
        return loading.load_target(source, model, input_shape), source.describe()
    if config.teacher.train_steps <= 0:
        raise ConfigError(
            'teacher.checkpoint is empty and teacher.train_steps is 0: give a checkpoint '
            '(--config.teacher.checkpoint=PATH) or steps to train one '
            '(--config.teacher.train_steps=N)'
        )
    recipe = recipe_from_config(config)
    wanted = training_config(config, input_shape, recipe)
    cache = os.path.join(os.path.abspath(workdir), 'teacher')
    if os.path.isdir(cache):
        cached = _cached(cache, wanted, model, input_shape, config.seed, log)
        if cached is not None:
            return cached
    log(f'teacher: no checkpoint given, training {config.teacher.model}: {recipe.describe()}')
    mesh = sharding.make_mesh(config.num_devices)
    variables = classifier.train_classifier(
        model,
        models.init_variables(model, input_shape, seed=config.seed),
        train_data_fn(),
        recipe,
        mean=tuple(config.data.mean),
        std=tuple(config.data.std),
        workdir=cache + '_checkpoints',
        fingerprint=wanted,
        mesh=mesh,
        checkpoint_every=config.teacher.train_checkpoint_every,
        log_every=config.log_every,
        log=log,
    )
    top1 = test_top1(mesh)(variables)
    split = f'{config.data.test_split!r}'
    source = f'trained: {recipe.describe()}; top-1 {top1:.2f} % on the {test_images} {split} images'
    log(f'teacher: eval/top1 {top1:.2f} % on the {test_images} {split} images')
    meta = {'training': wanted, 'top1': top1, 'test_images': test_images, 'source': source}
    _cache(cache, variables, meta)
    return variables, source + f', cached in {cache}'


def _cache(cache: str, variables: dict, meta: dict) -> None:
    """Writes the trained teacher to `cache` (sealed: verified on every reuse) and its
    training config to `cache.json`. The JSON first: a run killed between the two writes
    finds no `cache` directory, trains again from the final checkpoint (nothing left to do)
    and writes both."""
    with errors.writing(cache, 'the trained teacher'):
        if jax.process_index() == 0:
            files.atomic_write(cache + '.json', json.dumps(meta, indent=2) + '\n')
        loading.save_variables(cache, variables)
        if jax.process_index() == 0:
            files.seal(cache)

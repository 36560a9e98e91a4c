"""The nets and the JPEG CIFAR-10 of ../shared as the benchmarks load them (one loader).

  config, model, variables = cifar_targets.load_net(shared, 'resnet20')
  config, model, variables = cifar_targets.load_net(shared, recipe='c10_mobilenetv2',
                                                    checkpoint='W/teacher')
  x, y = cifar_targets.test_images(shared, cache, config)   # normalised as the config says
  train = cifar_targets.split(shared, 'train', cache)       # an nrnp Dataset, uint8
  batches = cifar_targets.calibration_batches(shared, cache, config, 'train')  # re-estimation

A pretrained akamaster net is measured with c10_r20's config (its normalisation, seed and
kernels section) and its own model name; a recipe's teacher (`--recipe`, `--checkpoint`:
an orbax `W/teacher` dir or a state-dict file) with that recipe's config.
"""

from __future__ import annotations

import os

import numpy as np

CHECKPOINTS = {
    'resnet20': 'weights/akamaster-cifar10/resnet20-12fca82f.th',
    'resnet56': 'weights/akamaster-cifar10/resnet56-4bfd9763.th',
}


def shared_dir() -> str | None:
    """../shared beside the checkout (or $NRNP_SHARED), or None after saying why a benchmark
    that needs it skips."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shared = os.environ.get('NRNP_SHARED', os.path.join(os.path.dirname(repo), 'shared'))
    if os.path.isdir(shared):
        return shared
    print(f'skipped: {shared} (pretrained weights and CIFAR-10) is absent; set NRNP_SHARED')
    return None


def load_net(shared: str, target: str = 'resnet20', recipe: str = '', checkpoint: str = ''):
    """(config, model, {'params', 'batch_stats'}) of a ../shared net or a recipe's teacher."""
    from nrnp.configs import c10_r20, catalog
    from nrnp.nets import loading, models

    if recipe:
        config = catalog.load(catalog.resolve_config_flag([f'--config={recipe}'])[1])
        path = checkpoint
    else:
        config = c10_r20.get_config()
        config.teacher.model = target
        path = os.path.join(shared, CHECKPOINTS[target])
    t = config.teacher
    model = models.build_model(t.model, 10, shortcut=t.shortcut, width_mult=t.width)
    variables = loading.load_target(path, model, (1, 32, 32, 3), log=lambda m: None)
    return config, model, {k: variables[k] for k in ('params', 'batch_stats')}


def split(shared: str, name: str, cache: str):
    """The `name` split ('train' or 'test') of ../shared's JPEG CIFAR-10, decoded once."""
    from nrnp.data import sources

    return sources.load_dataset(
        name='cifar10',
        split=name,
        image_folder=os.path.join(shared, 'data/cifar10-jpeg'),
        cache_dir=cache,
        image_size=32,
        channels=3,
        log=lambda message: None,
    )


def test_images(shared: str, cache: str, config, test_limit: int = 0):
    """Normalised test images [N, 32, 32, 3] and labels [N]; `test_limit` N: the CLI's
    seeded class-balanced subset."""
    from nrnp.data import batching
    from nrnp.data.dataset import balanced_subset

    test = split(shared, 'test', cache)
    if test_limit:
        test = balanced_subset(test, test_limit, config.seed)
    images, labels = test.read(np.arange(len(test)))
    mean, std = tuple(config.data.mean), tuple(config.data.std)
    return batching.normalise(np.stack(images), mean, std), np.asarray(labels)


def calibration_batches(
    shared: str, cache: str, config, source: str, count=256, batch=256, net=None, train=None
) -> list:
    """The CLI's re-estimation images (`pipeline.calibration`): `count` of them from `source`
    ('train': the seeded training subset; 'noise'; 'synthetic': needs `net`, the
    (model, variables) they are matched to) in equal batches of at most `batch`."""
    from nrnp.pipeline import calibration

    batches, size = calibration.batch_plan(count, batch, None, None)
    images = None
    if source == 'train':
        train = train if train is not None else split(shared, 'train', cache)
        images = calibration.split_images(config, train)
    model, variables = net or (None, None)
    return calibration.calibration_images(
        source,
        batches,
        size,
        (32, 32, 3),
        config.seed,
        train_images=images,
        model=model,
        variables=variables,
    )

"""The command line's data, from the config: the splits, how accuracy is measured, the
distillation images, and what the run reads (for its fingerprint).

  test = load_split(config, 'test', workdir, crops=False)
  top1 = test_top1(config, test, model, mesh)            # variables -> percent
  batches, device = distillation_images(config, train, mesh)   # host iterator or on-device

CIFAR-sized data held in memory goes to the device once (`data.on_device`: 'auto' when it
fits a quarter of the device's free memory, 'true', 'false'): the distillation step then
samples, crops, flips and normalises on the device and evaluation runs there too, so per
step the host only dispatches. Streamed data and other augmentations use the host
pipeline (`data.batching`).
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from nrnp.data import batching, grain_loader, image_cache, sources, threads
from nrnp.data.dataset import Dataset
from nrnp.errors import ConfigError
from nrnp.pipeline import workdirs
from nrnp.training import device_data, evaluation


def dataset_label(config) -> str:
    """The data source as the logs and the report name it."""
    if config.data.image_folder:
        return f'image folder {config.data.image_folder}'
    return config.data.name


def how_held(config) -> str:
    """'streamed' or 'in memory' (`data.streaming`), for the logs."""
    return 'streamed' if config.data.streaming else 'in memory'


def load_split(config, split: str, workdir: str, crops: bool, log=print):
    """One split of the configured dataset: streamed (data.streaming) or held in memory.

    In memory, image folders are decoded once and cached for every workdir
    (`data.image_cache`, in $NRNP_CACHE/images); streamed, the
    split is only listed/opened and each batch's images are decoded when it is drawn.
    Images are resized to data.image_size on reading unless `crops` (the split goes
    through random_resized_crop or the centre crop, which resize each image themselves).
    """
    kw = dict(
        name=config.data.name,
        split=split,
        data_dir=config.data.data_dir or None,
        image_folder=config.data.image_folder or None,
        image_size=None if crops else config.data.image_size,
        channels=config.data.channels if config.data.channels in (1, 3) else 3,
        download=config.data.download,
        download_url=config.data.download_url,
        download_sha256=config.data.download_sha256,
        log=log,
    )
    if config.data.streaming:
        return sources.open_dataset(**kw)
    return sources.load_dataset(**kw, cache_dir=image_cache.default_dir())  # shared, issue 25


def use_device(config, dataset) -> bool:
    """Whether `dataset` is drawn from on the device (`data.on_device`)."""
    mode = config.data.on_device
    held = isinstance(dataset, Dataset) and not config.data.streaming
    supported = config.data.augment in ('crop_flip', 'none') and config.data.eval_crop == 'none'
    if mode == 'false':
        return False
    if mode == 'true':
        if not (held and supported):
            raise ConfigError(
                "--config.data.on_device='true' needs in-memory data (data.streaming=False) "
                "with data.augment 'crop_flip' or 'none' and data.eval_crop 'none'; use 'auto'"
            )
        return True
    return held and supported and device_data.fits(dataset)


def test_top1(config, test, model, mesh):
    """`variables -> top-1 percent` on the test split, on the device or over host batches."""
    mean, std = tuple(config.data.mean), tuple(config.data.std)
    batch_size = evaluation.round_batch(min(config.data.eval_batch_size, len(test)), mesh)
    if use_device(config, test):
        split = device_data.place(test, mesh, pad_to=batch_size)
        return functools.partial(
            device_data.top1,
            model,
            split=split,
            batch_size=batch_size,
            mean=mean,
            std=std,
            mesh=mesh,
        )

    settings = dict(
        mean=mean,
        std=std,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        crop=config.data.eval_crop,
        image_size=config.data.image_size,
        crop_fraction=config.data.crop_fraction,
    )

    def batches():
        if _grain(config):
            return grain_loader.eval_batches(
                test, workers=_workers(config), batch_size=batch_size, **settings
            )
        return threads.prefetch(batching.eval_batches(test, batch_size, **settings))

    return lambda variables: evaluation.top1_batches(model, variables, batches(), mesh)


def _grain(config) -> bool:
    return config.data.streaming and config.data.loader == 'grain'


def _workers(config) -> int:
    return config.data.workers or grain_loader.default_workers()


DATA_STREAM = 7919  # the distillation images' random stream, apart from the seed's others


def data_seed(seed: int, cycle: int) -> int:
    """The numpy seed of cycle `cycle`'s host batches: (seed, stream, cycle) hashed by
    numpy's SeedSequence, the host counterpart of `jax.random.fold_in`."""
    return int(np.random.SeedSequence([seed, DATA_STREAM, cycle]).generate_state(1)[0])


def distillation_batches(config, train_data, start_step: int, cycle: int):
    """Augmented, normalised training images of one distillation phase from `start_step`
    (through grain's worker processes for streamed data, unless data.loader='threads')."""
    settings = dict(
        batch_size=config.distill.batch_size,
        seed=data_seed(config.seed, cycle),
        augment=config.data.augment,
        mean=tuple(config.data.mean),
        std=tuple(config.data.std),
        pad=config.data.pad,
        image_size=config.data.image_size if config.data.augment == 'random_resized_crop' else None,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    if _grain(config):
        return grain_loader.train_batches(
            train_data, start_step=start_step, workers=_workers(config), **settings
        )
    return batching.train_batches(train_data, start_step=start_step, **settings)


def distillation_images(config, train, mesh):
    """(host batches `(start_step, cycle) -> iterator`, None) or (None, DeviceBatches)."""
    if use_device(config, train):
        device = device_data.DeviceBatches(
            split=device_data.place(train, mesh),
            batch_size=config.distill.batch_size,
            augment=config.data.augment,
            pad=config.data.pad,
            mean=tuple(config.data.mean),
            std=tuple(config.data.std),
            seed=config.seed,
        )
        return None, device
    return functools.partial(distillation_batches, config, train), None


def input_identities(config) -> dict:
    """What the run reads, for the workdir fingerprint: the teacher and the data source."""
    t, data = config.teacher, config.data
    if not t.checkpoint:
        teacher = 'trained in the workdir (its training config is in the fingerprint)'
    elif os.path.exists(os.path.expanduser(t.checkpoint)):
        teacher = workdirs.file_identity(t.checkpoint)
    else:
        teacher = t.checkpoint  # a URL or registry name, pinned by its hash when downloaded
    if data.image_folder:
        source = f'image folder {os.path.abspath(data.image_folder)}: '
        source += workdirs.folder_identity(data.image_folder)
    else:
        source = f'{data.name} in {data.data_dir or "the default data dir"}'
    out = {'teacher': teacher, 'data': source}
    spec = config.distill.teacher_checkpoint
    if spec:  # a local file, or a URL or registry name as given (pinned when downloaded)
        local = os.path.exists(os.path.expanduser(spec))
        out['distill_teacher'] = workdirs.file_identity(spec) if local else spec
    return out

"""Which dataset a run reads: the config's data fields resolved to a source.

  ds = load_dataset(name='cifar10', split='train', image_folder='/data/cifar10-jpeg')  # in memory
  ds = load_dataset(name='cifar100', split='test')      # binary archive, fetched when missing
  src = open_dataset(name='imagenet2012', split='train', data_dir='/data/tfds')       # streamed

`image_folder` wins when set; 'digits' is scikit-learn's bundled set; 'cifar10'/'cifar100'
are a prepared TFDS ArrayRecord copy in `data_dir` when there is one, else the official
binary archive (`cifar.locate_archive`: found in, or downloaded into, `data_dir`, which
defaults to `nrnp.files.cache_dir()/datasets`); any other name is a prepared TFDS dataset.
"""

from __future__ import annotations

from nrnp.data import cifar, folders, tfds_reader
from nrnp.data.dataset import Dataset, load_digits, resize


def _cifar_from_archive(name, split, data_dir, download, download_url, download_sha256, log):
    """`name`'s split from its binary archive; None when a prepared TFDS copy takes precedence."""
    if name not in cifar.NAMES or tfds_reader.is_prepared(name, data_dir):
        return None
    archive = cifar.locate_archive(
        name, data_dir, download=download, url=download_url, sha256=download_sha256, log=log
    )
    return cifar.load_cifar(name, split, archive, log=log)


def load_dataset(
    *,
    name: str,
    split: str,
    data_dir: str | None = None,
    image_folder: str | None = None,
    cache_dir: str | None = None,
    image_size: int | None = None,
    channels: int = 3,
    download: bool = True,
    download_url: str = '',
    download_sha256: str = '',
    log=print,
) -> Dataset:
    """Loads a dataset from the config's data fields.

    `image_folder` wins when set; name 'digits' gives `load_digits`; 'cifar10'/'cifar100'
    without a prepared TFDS copy in `data_dir` read the binary archive (downloaded unless
    `download` is False; `download_url`/`download_sha256` name a mirror or another
    archive); any other name is a prepared TFDS dataset in `data_dir`. `image_size` resizes
    whichever source is used; `channels` (1 or 3) is what image folders decode to (TFDS,
    CIFAR and digits keep theirs).
    """
    if image_folder:
        return folders.load_image_folder(
            image_folder,
            split,
            image_size=image_size,
            cache_dir=cache_dir,
            channels=channels,
            log=log,
        )
    if name == 'digits':
        dataset = load_digits(split)
    else:
        dataset = _cifar_from_archive(
            name, split, data_dir, download, download_url, download_sha256, log
        ) or tfds_reader.load_tfds(name, split, data_dir)
    return resize(dataset, image_size) if image_size else dataset


def open_dataset(
    *,
    name: str,
    split: str,
    data_dir: str | None = None,
    image_folder: str | None = None,
    image_size: int | None = None,
    channels: int = 3,
    download: bool = True,
    download_url: str = '',
    download_sha256: str = '',
    log=print,
) -> folders.FolderSource | tfds_reader.TfdsSource | Dataset:
    """Opens a dataset for streaming: `FolderSource` or `TfdsSource`, nothing decoded yet.

    Same fields and precedence as `load_dataset`; 'digits' and CIFAR binary archives
    (small) are loaded.
    """
    if image_folder:
        return folders.FolderSource(image_folder, split, image_size=image_size, channels=channels)
    if name == 'digits' or (name in cifar.NAMES and not tfds_reader.is_prepared(name, data_dir)):
        return load_dataset(
            name=name,
            split=split,
            data_dir=data_dir,
            image_size=image_size,
            download=download,
            download_url=download_url,
            download_sha256=download_sha256,
            log=log,
        )
    return tfds_reader.TfdsSource(name, split, data_dir, image_size=image_size)

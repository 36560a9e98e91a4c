"""Which dataset a run reads: the config's data fields resolved to a source.

  ds = load_dataset(name='cifar10', split='train', image_folder='/data/cifar10-jpeg')  # in memory
  src = open_dataset(name='imagenet2012', split='train', data_dir='/data/tfds')       # streamed

`image_folder` wins when set; 'digits' is scikit-learn's bundled set; any other name is a
prepared TFDS dataset in `data_dir`.
"""

from __future__ import annotations

from nrnp.data import folders, tfds_reader
from nrnp.data.dataset import Dataset, load_digits, resize


def load_dataset(
    *,
    name: str,
    split: str,
    data_dir: str | None = None,
    image_folder: str | None = None,
    cache_dir: str | None = None,
    image_size: int | None = None,
    channels: int = 3,
) -> Dataset:
    """Loads a dataset from the config's data fields.

    `image_folder` wins when set; name 'digits' gives `load_digits`; any other name is a
    prepared TFDS dataset in `data_dir`. `image_size` resizes whichever source is used;
    `channels` (1 or 3) is what image folders decode to (TFDS and digits keep theirs).
    """
    if image_folder:
        return folders.load_image_folder(
            image_folder, split, image_size=image_size, cache_dir=cache_dir, channels=channels
        )
    dataset = (
        load_digits(split) if name == 'digits' else tfds_reader.load_tfds(name, split, data_dir)
    )
    return resize(dataset, image_size) if image_size else dataset


def open_dataset(
    *,
    name: str,
    split: str,
    data_dir: str | None = None,
    image_folder: str | None = None,
    image_size: int | None = None,
    channels: int = 3,
) -> folders.FolderSource | tfds_reader.TfdsSource | Dataset:
    """Opens a dataset for streaming: `FolderSource` or `TfdsSource`, nothing decoded yet.

    Same fields and precedence as `load_dataset`; 'digits' (tiny, bundled) is loaded.
    """
    if image_folder:
        return folders.FolderSource(image_folder, split, image_size=image_size, channels=channels)
    if name == 'digits':
        return load_dataset(name=name, split=split, image_size=image_size)
    return tfds_reader.TfdsSource(name, split, data_dir, image_size=image_size)

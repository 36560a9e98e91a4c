"""Prepared TFDS ArrayRecord datasets, read through `tfds.data_source` (no TensorFlow).

  ds = load_tfds('cifar10', 'train', data_dir='/data/tfds')              # a Dataset in memory
  src = TfdsSource('imagenet2012', 'train', data_dir='/data/tfds')       # streamed
  images, labels = src.read(np.array([5, 17, 3]))

The dataset must already be prepared in `data_dir`: a missing one fails at once saying
how to provide it (nrnp never runs TFDS's own download).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from nrnp.data import threads
from nrnp.data.dataset import Dataset, _check_process, _resize_one, process_split
from nrnp.errors import DataError


def _tfds_is_mocked() -> bool:
    """True inside `tfds.testing.mock_data`, which patches `as_data_source`."""
    from tensorflow_datasets.core import dataset_builder

    fn = dataset_builder.DatasetBuilder.as_data_source
    return getattr(fn, '__module__', '').startswith('tensorflow_datasets.testing')


def is_prepared(name: str, data_dir: str | None) -> bool:
    """True when TFDS has `name` prepared in `data_dir` (None: TFDS's default) or is mocked.

    Looks at the local files only (no network); False when tensorflow_datasets is absent.
    TFDS is imported only when a folder of that name exists (or TFDS is already loaded,
    as under `mock_data`): the common "not prepared" answer costs no import.
    """
    default = os.environ.get('TFDS_DATA_DIR') or os.path.expanduser('~/tensorflow_datasets')
    root = data_dir or default
    if 'tensorflow_datasets' not in sys.modules and not os.path.isdir(os.path.join(root, name)):
        return False
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return False
    if _tfds_is_mocked():
        return True
    root = data_dir or str(tfds.core.constants.DATA_DIR)
    if not os.path.isdir(os.path.join(root, name)):
        return False  # (and spares the user TFDS's warning about an empty variant folder)
    try:
        return tfds.builder(name, data_dir=data_dir, file_format='array_record').is_prepared()
    except tfds.core.registered.DatasetNotFoundError:
        return False


def _not_prepared(name: str, builder, data_dir: str | None) -> str:
    """What to do when `name` is not prepared in `data_dir` (ImageNet: the manual steps)."""
    root = getattr(builder, '_data_dir_root', None) or data_dir or '<data_dir>'
    manual = os.path.join(str(root), 'downloads', 'manual')
    where = f'TFDS dataset {name!r} is not prepared in data_dir {str(builder.data_dir)!r}'
    if name.split('/')[0] == 'imagenet2012':
        return (
            f'{where}, and nrnp never downloads ImageNet (it needs an account). Fix, either:\n'
            '  1. get ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from '
            'https://image-net.org/download-images (after registering and accepting the '
            f'terms) and put them in {manual!r};\n'
            '  2. on a machine with tensorflow installed, prepare ArrayRecord files: '
            f"tfds.builder('imagenet2012', data_dir={str(root)!r}, "
            "file_format='array_record').download_and_prepare();\n"
            '  3. run with --config.data.data_dir=THAT_DIR;\n'
            '  or set --config.data.image_folder=DIR holding DIR/{train,validation}/<class>/'
            '*.JPEG (the split names of data.train_split and data.test_split).'
        )
    return (
        f'{where} and this machine cannot download it. Fix: point data.data_dir at a '
        'prepared ArrayRecord data dir (prepare it elsewhere with builder_kwargs='
        '{"file_format": "array_record"}); or, for CIFAR-100, put cifar-100-binary.tar.gz '
        f'under {manual!r} and prepare it; or set data.image_folder to an image folder.'
    )


def _open_tfds(name: str, split: str, data_dir: str | None, label_key: str, num_classes):
    """(tfds data_source, num_classes, class_names) after checking the data is here."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format='array_record')
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DataError(f'TFDS has no dataset named {name!r}; check data.name') from e
    if not _tfds_is_mocked():
        if not builder.is_prepared():
            raise DataError(_not_prepared(name, builder, data_dir))
        file_format = getattr(builder.info, 'file_format', None)
        file_format = str(getattr(file_format, 'value', file_format) or '').lower()
        if file_format and 'array_record' not in file_format:
            raise DataError(
                f'{str(builder.data_dir)!r} holds {file_format} files but data_source '
                'reads only ArrayRecord; re-prepare with builder_kwargs='
                '{"file_format": "array_record"}'
            )
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    feature = builder.info.features[label_key] if label_key in builder.info.features else None
    if getattr(feature, 'num_classes', None):
        return source, int(feature.num_classes), tuple(feature.names)
    if num_classes is None:
        raise DataError(f'feature {label_key!r} of {name!r} does not give num_classes; pass it')
    return source, num_classes, tuple(str(i) for i in range(num_classes))


def _image(record: dict, image_key: str) -> np.ndarray:
    image = np.asarray(record[image_key], np.uint8)
    return image[..., None] if image.ndim == 2 else image  # [H, W, C]


def load_tfds(
    name: str,
    split: str,
    data_dir: str | None = None,
    image_key: str = 'image',
    label_key: str = 'label',
    num_classes: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Dataset:
    """Loads a prepared TFDS ArrayRecord dataset into memory via `tfds.data_source`.

    No TensorFlow and no network: the dataset must already be prepared in `data_dir`
    (works under `tfds.testing.mock_data`, too). With process_count > 1 only this process's
    contiguous share of the split is read (`process_split`, the semantics of
    `tfds.split_for_jax_process` applied to the resolved split).

    Args:
      name: TFDS name, e.g. 'cifar10' or 'cifar100'.
      split: TFDS split, e.g. 'train' or 'test[:10%]'.
      data_dir: TFDS data dir holding the prepared ArrayRecord files.
      image_key: feature holding [H, W, C] or [H, W] uint8 images (all of one size).
      label_key: feature holding the integer label.
      num_classes: used when the label feature does not say.
      process_index, process_count: read only share `process_index` of `process_count`.

    Returns:
      Dataset with images [N, H, W, C] uint8 and labels [N] int32 (N: this share's size).

    Raises:
      DataError: the dataset is not prepared here, saying how to provide it.
    """
    _check_process(process_index, process_count)
    source = TfdsSource(name, split, data_dir, image_key, label_key, num_classes)
    share = process_split(len(source), process_index, process_count)
    if share.start == share.stop:
        raise DataError(
            f'TFDS split {name}:{split} in {data_dir!r} has {len(source)} examples, none for '
            f'process {process_index} of {process_count}'
        )
    images, labels = source.read(np.arange(share.start, share.stop))  # [N] x [H, W, C], [N]
    if len({x.shape for x in images}) > 1:
        raise DataError(
            f'TFDS {name}:{split} has images of several sizes ({images[0].shape}, ...) and '
            'cannot be held as one array; stream it (data.streaming=True) or resize it '
            '(data.image_size)'
        )
    return Dataset(np.stack(images), labels, source.num_classes, source.class_names)


class TfdsSource:
    """A prepared TFDS ArrayRecord split read on demand through `tfds.data_source`.

    `read` fetches and decodes the requested records in the shared thread pool; nothing
    else is held in memory. Same checks and errors as `load_tfds`.
    """

    def __init__(
        self,
        name: str,
        split: str,
        data_dir: str | None = None,
        image_key: str = 'image',
        label_key: str = 'label',
        num_classes: int | None = None,
        image_size: int | None = None,
    ):
        self.name, self.split, self.image_size = name, split, image_size
        self.image_key, self.label_key = image_key, label_key
        self.source, self.num_classes, self.class_names = _open_tfds(
            name, split, data_dir, label_key, num_classes
        )

    def __len__(self) -> int:
        return len(self.source)

    def _record(self, i: int) -> tuple[np.ndarray, int]:
        record = self.source[int(i)]
        image = _image(record, self.image_key)
        if self.image_size is not None and image.shape[:2] != (self.image_size,) * 2:
            image = _resize_one(image, self.image_size)
        return image, int(record[self.label_key])

    def read(self, index: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """(n images [H_i, W_i, C] uint8, labels [n] int32) of the records at index [n]."""
        pairs = threads.map(self._record, list(np.asarray(index, np.int64)))
        return [p[0] for p in pairs], np.array([p[1] for p in pairs], np.int32).reshape(-1)

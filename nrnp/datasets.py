"""Image datasets: in memory (`Dataset`) or read on demand (`FolderSource`, `TfdsSource`).

  ds = load_dataset(name='cifar10', split='train', data_dir='/data/tfds')       # in memory
  src = open_dataset(name='imagenet2012', split='train', data_dir='/data/tfds')  # streamed
  images, labels = src.read(np.array([5, 17, 3]))  # 3 images [H_i, W_i, 3] uint8, [3] int32

Both kinds answer `len()`, `num_classes`, `class_names` and `read(index)`, which is all
`data.train_batches` and `data.eval_batches` use: batches are drawn from global indices and
each JAX process reads only its own rows. CIFAR-sized data is fastest held in memory as one
uint8 array; ImageNet-sized data is streamed, decoding each batch's images in a thread pool
(PIL and ArrayRecord release the GIL). Everything here returns numpy, never JAX arrays.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Sequence

import numpy as np
from PIL import Image

from nrnp import threads

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
_PIL_FORMATS = ('JPEG', 'PNG', 'BMP')  # skips probing every other plugin (~15% faster)


class DataError(ValueError):
    """Input data is missing or malformed; the message names the path and the fix."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset held in memory.

    Attributes:
      images: [N, H, W, C] uint8.
      labels: [N] int32, in [0, num_classes).
      num_classes: number of classes.
      class_names: [num_classes] names, index = label.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise DataError(
                f'images must be [N, H, W, C] uint8, got {self.images.shape} {self.images.dtype}'
            )
        if self.labels.shape != self.images.shape[:1]:
            raise DataError(f'labels {self.labels.shape} do not match images {self.images.shape}')

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images [n, H, W, C] uint8, labels [n] int32) of the examples at index [n]."""
        return self.images[index], self.labels[index]


# ---------------------------------------------------------------- image folders


def _subdirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith('.'))


def _list_image_folder(root: str, split: str) -> tuple[list[str], list[str], np.ndarray]:
    """Returns (class_names, file paths, labels [N] int32) of `<root>/<split>/<class>/*`."""
    if not os.path.isdir(root):
        raise DataError(
            f'image folder root {root!r} does not exist; point data.image_folder at '
            'a directory laid out as <root>/<split>/<class>/*.jpg'
        )
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise DataError(
            f'split folder {split_dir!r} not found; splits found under {root!r}: '
            f'{_subdirs(root)}; use one of them or add <root>/{split}/<class>/'
        )
    class_names = _subdirs(split_dir)
    if not class_names:
        raise DataError(
            f'{split_dir!r} has no class folders; expected '
            f'{split_dir}/<class>/*{{{",".join(IMAGE_EXTENSIONS)}}}'
        )
    paths, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(split_dir, name)
        files = sorted(
            e.name
            for e in os.scandir(class_dir)
            if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise DataError(
                f'class folder {class_dir!r} contains no images '
                f'({", ".join(IMAGE_EXTENSIONS)}); add images or remove the folder'
            )
        paths.extend(os.path.join(class_dir, f) for f in files)
        labels.extend([label] * len(files))
    return class_names, paths, np.asarray(labels, np.int32)


def check_same_classes(
    a: tuple[str, Sequence[str]], b: tuple[str, Sequence[str]], where: str
) -> None:
    """Raises DataError unless two splits, (split name, class names), name the same classes
    in the same order (a label means the same class in both).

    `where` starts the message, e.g. "class folders differ between 'r/train' and 'r/test'".
    """
    (split_a, names_a), (split_b, names_b) = a, b
    if tuple(names_a) == tuple(names_b):
        return
    only_a = sorted(set(names_a) - set(names_b))[:10]
    only_b = sorted(set(names_b) - set(names_a))[:10]
    order = '' if only_a or only_b else ', the same names in another order'
    raise DataError(
        f'{where}: only in {split_a}: {only_a}, only in {split_b}: {only_b}{order}; labels '
        'would not agree, make the class folders match'
    )


def check_splits(root: str, splits: Sequence[str] = ('train', 'test')) -> tuple[str, ...]:
    """Checks that every split of an image folder has the same class folders.

    Args:
      root: image folder root, laid out as `<root>/<split>/<class>/*.jpg`.
      splits: the splits to compare.

    Returns:
      The shared sorted class names.

    Raises:
      DataError: a split is missing or the class sets differ (naming the differences).
    """
    found = {s: _list_image_folder(root, s)[0] for s in splits}
    first = splits[0]
    for split, names in found.items():
        check_same_classes(
            (first, found[first]),
            (split, names),
            f'class folders differ between {os.path.join(root, first)!r} and '
            f'{os.path.join(root, split)!r}',
        )
    return tuple(found[first])


_MODES = {1: 'L', 3: 'RGB'}  # channels -> PIL mode


def _check_channels(channels: int) -> str:
    if channels not in _MODES:
        raise DataError(f'image folders decode to 1 (grey) or 3 (RGB) channels, not {channels}')
    return _MODES[channels]


def _decode(path: str, image_size: int | None, channels: int = 3) -> np.ndarray:
    """Decodes one image to [H, W, channels] uint8 (RGB or grey), resized to image_size."""
    mode = _check_channels(channels)
    try:
        with Image.open(path, formats=_PIL_FORMATS) as img:
            img = img.convert(mode) if img.mode != mode else img
            if image_size is not None and img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(img, np.uint8).reshape(img.size[1], img.size[0], channels)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f'cannot decode image {path!r} ({e}); delete or replace the file') from e


def _cache_path(
    cache_dir: str, root: str, split: str, paths: list[str], image_size: int | None, channels: int
) -> str:
    key = (os.path.abspath(root), split, image_size, channels, len(paths))
    digest = hashlib.sha256(repr(key).encode())
    for p in paths:
        st = os.stat(p)
        digest.update(f'{p}\0{st.st_mtime_ns}\0{st.st_size}\n'.encode())
    base = os.path.basename(os.path.normpath(root)) or 'root'
    return os.path.join(cache_dir, f'imagefolder-{base}-{split}-{digest.hexdigest()[:16]}.npz')


def load_image_folder(
    root: str,
    split: str,
    image_size: int | None = None,
    cache_dir: str | None = None,
    channels: int = 3,
) -> Dataset:
    """Loads `<root>/<split>/<class>/*.{jpg,jpeg,png,bmp}` into memory.

    Labels are indices into the sorted class folder names. Images are decoded with PIL
    to RGB (or grey with channels=1) on the shared `nrnp.threads` pool.

    Args:
      root: image folder root.
      split: split folder name, e.g. 'train' or 'test'.
      image_size: resize every image to [image_size, image_size]; None requires all
        images to share one size.
      cache_dir: when set, the decoded arrays are cached there as `.npz`, keyed on the
        root, split, image_size, channels, file count and every file's mtime and size.
      channels: 3 (RGB) or 1 (grey).

    Returns:
      Dataset with images [N, H, W, channels] uint8.

    Raises:
      DataError: naming the offending path and the fix.
    """
    class_names, paths, labels = _list_image_folder(root, split)
    cache_file = None
    if cache_dir is not None:
        cache_file = _cache_path(cache_dir, root, split, paths, image_size, channels)
        if os.path.exists(cache_file):
            try:
                with np.load(cache_file) as z:
                    return Dataset(z['images'], z['labels'], len(class_names), tuple(class_names))
            except (OSError, ValueError, KeyError):
                pass  # Corrupt or foreign file: rebuild it below.

    first = _decode(paths[0], image_size, channels)
    images = np.empty((len(paths),) + first.shape, np.uint8)  # [N, H, W, 3]

    def decode_chunk(start: int, stop: int) -> None:
        for i in range(start, stop):
            img = _decode(paths[i], image_size, channels)
            if img.shape != first.shape:
                raise DataError(
                    f'image {paths[i]!r} is {img.shape[1]}x{img.shape[0]} but {paths[0]!r} is '
                    f'{first.shape[1]}x{first.shape[0]}; pass image_size (data.image_size) to '
                    'resize all images to one size, or stream them (data.streaming=True) with '
                    "augment='random_resized_crop' and eval_crop='center'"
                )
            images[i] = img

    threads.for_ranges(decode_chunk, len(paths), chunk=256)

    if cache_file is not None:
        os.makedirs(cache_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix='.npz.tmp')
        try:
            with os.fdopen(fd, 'wb') as f:
                np.savez(f, images=images, labels=labels)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is meant to be shared
            os.replace(tmp, cache_file)  # Atomic: concurrent readers never see half a file.
        except BaseException:
            os.unlink(tmp)
            raise
    return Dataset(images, labels, len(class_names), tuple(class_names))


class FolderSource:
    """An image folder read on demand: `<root>/<split>/<class>/*`, nothing held in memory.

    Lists the files once (sorted classes, sorted files: labels as `load_image_folder`);
    `read` decodes the requested images in the shared thread pool.

    Attributes:
      root, split: the folder.
      paths: [N] file paths; labels: [N] int32.
      num_classes, class_names: from the class folder names.
      image_size: when set, every image is resized to [image_size, image_size] on reading.
      channels: 3 (RGB) or 1 (grey), what every image is converted to.
    """

    def __init__(self, root: str, split: str, image_size: int | None = None, channels: int = 3):
        _check_channels(channels)
        self.root, self.split, self.image_size, self.channels = root, split, image_size, channels
        names, self.paths, self.labels = _list_image_folder(root, split)
        self.class_names = tuple(names)
        self.num_classes = len(names)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """(n images [H_i, W_i, channels] uint8, labels [n] int32) of the files at index [n]."""
        index = np.asarray(index, np.int64)
        images = threads.map(
            lambda i: _decode(self.paths[i], self.image_size, self.channels), list(index)
        )
        return images, self.labels[index]


# ---------------------------------------------------------------- TFDS and digits


def _tfds_is_mocked() -> bool:
    """True inside `tfds.testing.mock_data`, which patches `as_data_source`."""
    from tensorflow_datasets.core import dataset_builder

    fn = dataset_builder.DatasetBuilder.as_data_source
    return getattr(fn, '__module__', '').startswith('tensorflow_datasets.testing')


def _open_tfds(name: str, split: str, data_dir: str | None, label_key: str, num_classes):
    """(tfds data_source, num_classes, class_names) after checking the data is here."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format='array_record')
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DataError(f'TFDS has no dataset named {name!r}; check data.name') from e
    if not _tfds_is_mocked():
        if not builder.is_prepared():
            root = getattr(builder, '_data_dir_root', None) or data_dir or '<data_dir>'
            manual = os.path.join(str(root), 'downloads', 'manual')
            raise DataError(
                f'TFDS dataset {name!r} is not prepared in data_dir {str(builder.data_dir)!r} and '
                'this machine cannot download it. Fix: point data.data_dir at a prepared '
                'ArrayRecord data dir (prepare it elsewhere with builder_kwargs={"file_format": '
                '"array_record"}); or, for CIFAR-100, put cifar-100-binary.tar.gz under '
                f'{manual!r} and prepare it; or set data.image_folder to an image folder.'
            )
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


def load_digits(split: str, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download).

    Args:
      split: 'train' or 'test', a seeded stratified split.
      test_fraction: fraction of the images in 'test'.
      seed: split seed.

    Returns:
      Dataset with images [N, 8, 8, 1] uint8 in 0..255 and 10 classes.
    """
    from sklearn import datasets, model_selection

    if split not in ('train', 'test'):
        raise DataError(f'digits has splits "train" and "test", not {split!r}')
    digits = datasets.load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # [N, 8, 8, 1]
    index = np.arange(len(images))
    train, test = model_selection.train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    index = np.sort(train if split == 'train' else test)
    return Dataset(
        images[index], digits.target[index].astype(np.int32), 10, tuple(str(i) for i in range(10))
    )


def _resize_one(image: np.ndarray, image_size: int) -> np.ndarray:
    """[H, W, C] uint8 -> [image_size, image_size, C] uint8, bilinear."""
    channels = image.shape[-1]
    out = Image.fromarray(image[..., 0] if channels == 1 else image).resize(
        (image_size, image_size), Image.BILINEAR
    )
    return np.asarray(out).reshape(image_size, image_size, channels)


def resize(dataset: Dataset, image_size: int) -> Dataset:
    """Returns the dataset with images resized (bilinear) to [image_size, image_size]."""
    if dataset.images.shape[1:3] == (image_size, image_size):
        return dataset
    out = np.stack(threads.map(lambda x: _resize_one(x, image_size), dataset.images, 256))
    return dataclasses.replace(dataset, images=out)


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
        return load_image_folder(
            image_folder, split, image_size=image_size, cache_dir=cache_dir, channels=channels
        )
    dataset = load_digits(split) if name == 'digits' else load_tfds(name, split, data_dir)
    return resize(dataset, image_size) if image_size else dataset


def open_dataset(
    *,
    name: str,
    split: str,
    data_dir: str | None = None,
    image_folder: str | None = None,
    image_size: int | None = None,
    channels: int = 3,
) -> FolderSource | TfdsSource | Dataset:
    """Opens a dataset for streaming: `FolderSource` or `TfdsSource`, nothing decoded yet.

    Same fields and precedence as `load_dataset`; 'digits' (tiny, bundled) is loaded.
    """
    if image_folder:
        return FolderSource(image_folder, split, image_size=image_size, channels=channels)
    if name == 'digits':
        return load_dataset(name=name, split=split, image_size=image_size)
    return TfdsSource(name, split, data_dir, image_size=image_size)


class _Head:
    """The first n examples of a streamed source."""

    def __init__(self, source, n: int):
        self.source, self.n = source, n
        self.num_classes, self.class_names = source.num_classes, source.class_names

    def __len__(self) -> int:
        return self.n

    def read(self, index: np.ndarray):
        index = np.asarray(index, np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.n):
            raise IndexError(f'index outside the first {self.n} examples')
        return self.source.read(index)


def head(dataset, n: int):
    """The first n examples (all when n >= len): a `Dataset` slice, or a view of a source."""
    if n >= len(dataset):
        return dataset
    if isinstance(dataset, Dataset):
        return dataclasses.replace(dataset, images=dataset.images[:n], labels=dataset.labels[:n])
    return _Head(dataset, n)


def process_split(num_examples: int, process_index: int, process_count: int) -> slice:
    """The contiguous share of `num_examples` that process `process_index` reads.

    Same as `tfds.split_for_jax_process(split, drop_remainder=False)` on a single split:
    shares differ by at most one example and the first `num_examples % process_count`
    processes take one extra (11 examples over 3 processes: [0:4], [4:8], [8:11]).

    Returns:
      slice(start, stop) into [0, num_examples).
    """
    _check_process(process_index, process_count)
    per, extra = divmod(num_examples, process_count)
    start = per * process_index + min(process_index, extra)
    stop = per * (process_index + 1) + min(process_index + 1, extra)
    return slice(start, stop)


def _check_process(process_index: int, process_count: int) -> None:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise DataError(
            f'process_index {process_index} must be in [0, process_count={process_count})'
        )

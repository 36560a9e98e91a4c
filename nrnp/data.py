"""In-memory image datasets (image folders, TFDS ArrayRecord, sklearn digits) and batch iterators.

  ds = load_dataset(name='cifar10', split='train', data_dir='/data/tfds')
  batches = train_batches(ds, 128, seed=0, start_step=step, mean=MEAN, std=STD)
  images, labels = next(batches)  # [128, 32, 32, 3] float32, [128] int32
  # several JAX processes: process_index=jax.process_index(), process_count=jax.process_count()
  # yields this process's [128 / P] rows of the same global batch

Datasets of CIFAR size are held in memory as uint8 numpy arrays; everything here returns
numpy, never JAX arrays, so the trainer decides placement and sharding.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

from nrnp.augment import _crop_flip, _crop_flip_draws, _crop_resize, _resized_crop_draws

# Moved to nrnp.augment; the redundant aliases re-export them as `data.augment_cifar` etc.
from nrnp.augment import augment_cifar as augment_cifar
from nrnp.augment import center_crop_resize as center_crop_resize
from nrnp.augment import random_resized_crop as random_resized_crop

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
_PIL_FORMATS = ('JPEG', 'PNG', 'BMP')  # skips probing every other plugin (~15% faster)
_AUGMENT_SALT = 1_000_003  # separates the augmentation streams from the permutation streams


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
        if names != found[first]:
            only_a = sorted(set(found[first]) - set(names))
            only_b = sorted(set(names) - set(found[first]))
            raise DataError(
                f'class folders differ between {os.path.join(root, first)!r} and '
                f'{os.path.join(root, split)!r}: only in {first}: {only_a}, only in '
                f'{split}: {only_b}; labels would not agree, make the folders match'
            )
    return tuple(found[first])


def _decode(path: str, image_size: int | None) -> np.ndarray:
    """Decodes one image to [H, W, 3] uint8 RGB, resized to image_size when given."""
    try:
        with Image.open(path, formats=_PIL_FORMATS) as img:
            img = img.convert('RGB') if img.mode != 'RGB' else img
            if image_size is not None and img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(img, np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f'cannot decode image {path!r} ({e}); delete or replace the file') from e


def _cache_path(
    cache_dir: str, root: str, split: str, paths: list[str], image_size: int | None
) -> str:
    digest = hashlib.sha256(repr((os.path.abspath(root), split, image_size, len(paths))).encode())
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
    num_threads: int | None = None,
) -> Dataset:
    """Loads `<root>/<split>/<class>/*.{jpg,jpeg,png,bmp}` into memory.

    Labels are indices into the sorted class folder names. Images are decoded with PIL
    to RGB in a thread pool (PIL releases the GIL while decoding).

    Args:
      root: image folder root.
      split: split folder name, e.g. 'train' or 'test'.
      image_size: resize every image to [image_size, image_size]; None requires all
        images to share one size.
      cache_dir: when set, the decoded arrays are cached there as `.npz`, keyed on the
        root, split, image_size, file count and every file's mtime and size.
      num_threads: decoding threads (default: min(32, cpu_count + 4)).

    Returns:
      Dataset with images [N, H, W, 3] uint8.

    Raises:
      DataError: naming the offending path and the fix.
    """
    class_names, paths, labels = _list_image_folder(root, split)
    cache_file = None
    if cache_dir is not None:
        cache_file = _cache_path(cache_dir, root, split, paths, image_size)
        if os.path.exists(cache_file):
            try:
                with np.load(cache_file) as z:
                    return Dataset(z['images'], z['labels'], len(class_names), tuple(class_names))
            except (OSError, ValueError, KeyError):
                pass  # Corrupt or foreign file: rebuild it below.

    first = _decode(paths[0], image_size)
    images = np.empty((len(paths),) + first.shape, np.uint8)  # [N, H, W, 3]

    def decode_chunk(start: int, stop: int) -> None:
        for i in range(start, stop):
            img = _decode(paths[i], image_size)
            if img.shape != first.shape:
                raise DataError(
                    f'image {paths[i]!r} is {img.shape[1]}x{img.shape[0]} but {paths[0]!r} is '
                    f'{first.shape[1]}x{first.shape[0]}; pass image_size (data.image_size) to '
                    'resize all images to one size'
                )
            images[i] = img

    chunk = 256
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        futures = [
            pool.submit(decode_chunk, s, min(s + chunk, len(paths)))
            for s in range(0, len(paths), chunk)
        ]
        for f in futures:
            f.result()

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


# ---------------------------------------------------------------- TFDS and digits


def _tfds_is_mocked() -> bool:
    """True inside `tfds.testing.mock_data`, which patches `as_data_source`."""
    from tensorflow_datasets.core import dataset_builder

    fn = dataset_builder.DatasetBuilder.as_data_source
    return getattr(fn, '__module__', '').startswith('tensorflow_datasets.testing')


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
      image_key: feature holding [H, W, C] or [H, W] uint8 images.
      label_key: feature holding the integer label.
      num_classes: used when the label feature does not say.
      process_index, process_count: read only share `process_index` of `process_count`.

    Returns:
      Dataset with images [N, H, W, C] uint8 and labels [N] int32 (N: this share's size).

    Raises:
      DataError: the dataset is not prepared here, saying how to provide it.
    """
    import tensorflow_datasets as tfds

    _check_process(process_index, process_count)
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
    share = process_split(len(source), process_index, process_count)
    records = [source[i] for i in range(share.start, share.stop)]
    if not records:
        raise DataError(
            f'TFDS split {name}:{split} in {data_dir!r} has {len(source)} examples, none for '
            f'process {process_index} of {process_count}'
        )
    images = np.stack([np.asarray(r[image_key], np.uint8) for r in records])
    if images.ndim == 3:
        images = images[..., None]  # [N, H, W, 1]
    labels = np.asarray([r[label_key] for r in records], np.int32)  # [N]

    feature = builder.info.features[label_key] if label_key in builder.info.features else None
    if getattr(feature, 'num_classes', None):
        num_classes = int(feature.num_classes)
        class_names = tuple(feature.names)
    elif num_classes is None:
        raise DataError(f'feature {label_key!r} of {name!r} does not give num_classes; pass it')
    else:
        class_names = tuple(str(i) for i in range(num_classes))
    return Dataset(images, labels, num_classes, class_names)


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


def resize(dataset: Dataset, image_size: int) -> Dataset:
    """Returns the dataset with images resized (bilinear) to [image_size, image_size]."""
    if dataset.images.shape[1:3] == (image_size, image_size):
        return dataset
    channels = dataset.images.shape[-1]
    out = np.stack(
        [
            np.asarray(
                Image.fromarray(img.squeeze(-1) if channels == 1 else img).resize(
                    (image_size, image_size), Image.BILINEAR
                )
            )
            for img in dataset.images
        ]
    )
    return dataclasses.replace(
        dataset, images=out.reshape(len(out), image_size, image_size, channels)
    )


def load_dataset(
    *,
    name: str,
    split: str,
    data_dir: str | None = None,
    image_folder: str | None = None,
    cache_dir: str | None = None,
    image_size: int | None = None,
) -> Dataset:
    """Loads a dataset from the config's data fields.

    `image_folder` wins when set; name 'digits' gives `load_digits`; any other name is a
    prepared TFDS dataset in `data_dir`. `image_size` resizes whichever source is used.
    """
    if image_folder:
        return load_image_folder(image_folder, split, image_size=image_size, cache_dir=cache_dir)
    dataset = load_digits(split) if name == 'digits' else load_tfds(name, split, data_dir)
    return resize(dataset, image_size) if image_size else dataset


# ---------------------------------------------------------------- batches


def normalise(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Maps uint8 images [..., C] to float32 (x / 255 - mean) / std, per channel.

    mean and std have length C or 1.
    """
    channels = images.shape[-1]
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    if mean.ndim != 1 or std.ndim != 1 or {len(mean), len(std)} - {1, channels}:
        raise DataError(
            f'mean {tuple(mean)} and std {tuple(std)} need length 1 or {channels} '
            f'(the channel count); fix data.mean / data.std'
        )
    out = np.empty(images.shape, np.float32)

    def rows(start: int, stop: int) -> None:  # in place: 3 fewer full-size temporaries
        part = out[start:stop]
        np.multiply(images[start:stop], np.float32(1 / 255), out=part, dtype=np.float32)
        part -= mean
        part /= std

    threads = min(os.cpu_count() or 1, 8)
    if images.ndim < 2 or threads < 2 or images.size < 1 << 22:  # threads pay from ~4M values
        rows(0, len(images))
        return out
    chunk = -(-len(images) // threads)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:  # numpy frees the GIL here
        for f in [pool.submit(rows, s, s + chunk) for s in range(0, len(images), chunk)]:
            f.result()
    return out


AUGMENTATIONS = ('crop_flip', 'random_resized_crop', 'none')


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


def _local_rows(batch_size: int, process_index: int, process_count: int) -> slice:
    """Rows [p * B / P, (p + 1) * B / P) of a global batch of B that process p produces."""
    _check_process(process_index, process_count)
    if batch_size % process_count:
        raise DataError(
            f'global batch_size {batch_size} is not divisible by process_count {process_count}; '
            'every process must get the same number of rows'
        )
    local = batch_size // process_count
    return slice(process_index * local, (process_index + 1) * local)


def train_batches(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    augment: str = 'crop_flip',
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    pad: int = 4,
    image_size: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Infinite shuffled training batches, a pure function of (seed, step).

    Epoch e is `np.random.default_rng([seed, e]).permutation(N)` cut into N // batch_size
    batches (remainder dropped); step s is batch s % steps_per_epoch of epoch
    s // steps_per_epoch, augmented with `np.random.default_rng([seed, 1_000_003, s])`.
    Starting at start_step=k yields exactly what an uninterrupted iterator yields from k.

    With several JAX processes each holds the whole (in-memory) dataset and yields only rows
    [p * B / P, (p + 1) * B / P) of the global batch: the augmentation draws are made for
    all B rows and sliced, so the processes' batches concatenated in process order equal
    the 1-process batch exactly, and only the local rows are gathered and augmented.

    Args:
      dataset: the training set.
      batch_size: examples per global batch B (divisible by process_count).
      seed: data seed.
      start_step: first global step to yield (for resume).
      augment: 'crop_flip' (`augment_cifar`, the CIFAR default), 'random_resized_crop'
        (`random_resized_crop`, ImageNet) or 'none'.
      mean, std: per-channel normalisation (see `normalise`).
      pad: crop padding for 'crop_flip'.
      image_size: output side S for 'random_resized_crop' (default: the dataset's H); the
        other augmentations keep [H, W].
      process_index: this process, `jax.process_index()`.
      process_count: number of processes P, `jax.process_count()`.

    Yields:
      (images [B / P, S, S, C] float32, labels [B / P] int32).
    """
    if augment not in AUGMENTATIONS:
        raise DataError(f'augment must be one of {AUGMENTATIONS}, got {augment!r}')
    rows = _local_rows(batch_size, process_index, process_count)
    n, height, width = dataset.images.shape[:3]
    if image_size is not None and augment != 'random_resized_crop' and image_size != height:
        raise DataError(
            f'image_size {image_size} differs from the images ({height}x{width}) but augment '
            f'{augment!r} does not resize; resize the dataset or use random_resized_crop'
        )
    steps_per_epoch = n // batch_size
    if steps_per_epoch == 0:
        raise DataError(f'batch_size {batch_size} exceeds the {n} training examples')
    epoch, perm = -1, None
    step = start_step
    while True:
        if step // steps_per_epoch != epoch:
            epoch = step // steps_per_epoch
            perm = np.random.default_rng([seed, epoch]).permutation(n)
        start = (step % steps_per_epoch) * batch_size
        index = perm[start + rows.start : start + rows.stop]  # [B / P]
        images = dataset.images[index]  # [B / P, H, W, C] uint8
        rng = np.random.default_rng([seed, _AUGMENT_SALT, step])
        if augment == 'crop_flip':
            offsets, flip = _crop_flip_draws(rng, batch_size, pad)
            images = _crop_flip(images, offsets[rows], flip[rows], pad)
        elif augment == 'random_resized_crop':
            boxes, flip = _resized_crop_draws(
                rng, batch_size, height, width, (0.08, 1.0), (3 / 4, 4 / 3)
            )
            images = _crop_resize(images, boxes[rows], flip[rows], image_size or height)
        yield normalise(images, mean, std), dataset.labels[index]
        step += 1


def eval_batches(
    dataset: Dataset,
    batch_size: int,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All examples in order, in fixed-shape batches (no recompilation for the last one).

    With several processes, each yields rows [p * B / P, (p + 1) * B / P) of every global
    batch, so all processes run the same number of batches and their rows together are
    the 1-process batch.

    Args:
      dataset: the evaluation set.
      batch_size: examples per global batch B (divisible by process_count).
      mean, std: per-channel normalisation (see `normalise`).
      process_index, process_count: this process and the number of processes P.

    Yields:
      (images [B / P, H, W, C] float32, labels [B / P] int32, mask [B / P] bool); rows
      past the end are zero images with label 0 where mask is False.
    """
    rows = _local_rows(batch_size, process_index, process_count)
    local = rows.stop - rows.start
    n = len(dataset)
    for start in range(0, n, batch_size):
        lo, hi = min(start + rows.start, n), min(start + rows.stop, n)
        images = dataset.images[lo:hi]
        labels = dataset.labels[lo:hi]
        valid = hi - lo
        mask = np.arange(local) < valid  # [B / P]
        if valid < local:
            images = np.concatenate(
                [images, np.zeros((local - valid,) + images.shape[1:], np.uint8)]
            )
            labels = np.concatenate([labels, np.zeros(local - valid, np.int32)])
        yield normalise(images, mean, std), labels, mask


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Runs `iterator` in a background thread, `size` items ahead (overlaps input and compute).

    Exceptions raised by the producer are re-raised in the consumer. Closing (or dropping)
    the returned generator stops the producer thread within ~0.1 s.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    class Failure:
        def __init__(self, error):
            self.error = error

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for item in iterator:
                if not put(item):
                    return
        except BaseException as e:  # re-raised in the consumer
            put(Failure(e))
            return
        put(done)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, Failure):
                raise item.error
            yield item
    finally:
        stop.set()

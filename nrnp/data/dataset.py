"""The in-memory labelled image dataset and what every data source shares.

  ds = Dataset(images, labels, num_classes=10, class_names=names)  # [N, H, W, C] uint8, [N]
  images, labels = ds.read(np.array([5, 17, 3]))                    # [3, H, W, C], [3]
  small = head(ds, 100); share = process_split(len(ds), jax.process_index(), jax.process_count())

Every source (`Dataset`, `folders.FolderSource`, `tfds_reader.TfdsSource`) answers `len()`,
`num_classes`, `class_names` and `read(index)`, which is all `batching.train_batches` and
`batching.eval_batches` use. Everything here returns numpy, never JAX arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image

from nrnp.data import threads
from nrnp.errors import DataError


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset held in memory.

    Attributes:
      images: [N, H, W, C] uint8 (or float32: images already normalised, from the library).
      labels: [N] int32, in [0, num_classes).
      num_classes: number of classes.
      class_names: [num_classes] names, index = label.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype not in (np.uint8, np.float32):
            raise DataError(
                f'images must be [N, H, W, C] uint8 (or float32), got {self.images.shape} '
                f'{self.images.dtype}'
            )
        if self.labels.shape != self.images.shape[:1]:
            raise DataError(f'labels {self.labels.shape} do not match images {self.images.shape}')

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images [n, H, W, C] uint8, labels [n] int32) of the examples at index [n]."""
        return self.images[index], self.labels[index]


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


class _Subset:
    """The examples at `index` [n] of a streamed source, as a source of its own."""

    def __init__(self, source, index: np.ndarray):
        self.source, self.index = source, np.asarray(index, np.int64)
        self.num_classes, self.class_names = source.num_classes, source.class_names
        labels = getattr(source, 'labels', None)
        if labels is not None:
            self.labels = np.asarray(labels)[self.index]

    def __len__(self) -> int:
        return len(self.index)

    def read(self, index: np.ndarray):
        return self.source.read(self.index[np.asarray(index, np.int64)])


def take(dataset, index: np.ndarray):
    """The examples at `index` [n]: a `Dataset` copy, or a view of a streamed source."""
    index = np.asarray(index, np.int64)
    if isinstance(dataset, Dataset):
        return dataclasses.replace(
            dataset, images=dataset.images[index], labels=dataset.labels[index]
        )
    return _Subset(dataset, index)


def head(dataset, n: int):
    """The first n examples (all when n >= len)."""
    return dataset if n >= len(dataset) else take(dataset, np.arange(n))


def balanced_subset(dataset, n: int, seed: int = 0):
    """A seeded subset of n examples with (nearly) equal counts per class, in split order.

    Class-sorted splits (image folders) make `head` useless for evaluation: the first 200
    CIFAR-10 test images are all airplanes. When the labels are known without decoding
    (in-memory datasets, image folders) each class gets n // C examples, and n % C
    classes, chosen by the seed, one more (fewer when a class runs out, the rest filled
    from the others); otherwise (TFDS streams) n examples are drawn uniformly.

    Returns:
      `take(dataset, index)` with index sorted ascending; the whole dataset when n >= len.
    """
    if n >= len(dataset):
        return dataset
    rng = np.random.default_rng([seed, 7])
    labels = getattr(dataset, 'labels', None)
    if labels is None:
        return take(dataset, np.sort(rng.permutation(len(dataset))[:n]))
    labels = np.asarray(labels)
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    quota = np.full(len(classes), n // len(classes))
    quota[rng.permutation(len(classes))[: n % len(classes)]] += 1
    chosen = [members[:q] for members, q in zip(per_class, quota)]
    missing = n - sum(len(c) for c in chosen)
    if missing:  # small classes ran out: fill from what is left, uniformly
        rest = np.concatenate([members[q:] for members, q in zip(per_class, quota)])
        chosen.append(rng.permutation(rest)[:missing])
    return take(dataset, np.sort(np.concatenate(chosen)))


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

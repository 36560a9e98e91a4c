"""Image folders, `<root>/<split>/<class>/*.jpg|png`: loaded into memory or read on demand.

  ds = load_image_folder('/data/cifar10-jpeg', 'train', cache_dir=image_cache.default_dir())
  src = FolderSource('/data/imagenet', 'train', image_size=None)               # streamed
  images, labels = src.read(np.array([5, 17, 3]))  # 3 images [H_i, W_i, 3] uint8, [3] int32

Labels are indices into the sorted class folder names; files are sorted within a class.
Decoding (PIL) runs on the shared `threads` pool, which PIL releases the GIL for. Every image
becomes 8-bit RGB (or grey): 16-bit images scaled (v * 255 / 65535), palettes expanded, an
alpha channel dropped (the colours under it kept, as torchvision's ImageFolder does).
"""

from __future__ import annotations

import os
import time

import numpy as np
from PIL import Image

from nrnp.data import image_cache, npz_cache, threads
from nrnp.data.dataset import Dataset
from nrnp.errors import DataError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')
_PIL_FORMATS = ('JPEG', 'PNG', 'BMP')  # skips probing every other plugin (~15% faster)


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


_MODES = {1: 'L', 3: 'RGB'}  # channels -> PIL mode


def _check_channels(channels: int) -> str:
    if channels not in _MODES:
        raise DataError(f'image folders decode to 1 (grey) or 3 (RGB) channels, not {channels}')
    return _MODES[channels]


def _eight_bits(img: Image.Image, path: str) -> Image.Image:
    """`img` with 8-bit channels: 16-bit grey scaled (v * 255 / 65535, rounded), a palette
    expanded to its colours (RGBA when it has a transparent entry); other modes as they are.

    Raises:
      DataError: integer values outside 16 bits or floating-point pixels (naming the file).
    """
    if img.mode.startswith('I'):  # 'I;16', 'I;16B', ... (16-bit PNG) or 'I' (32-bit)
        values = np.asarray(img)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(
                f'{path!r} holds {img.mode} pixels from {values.min()} to {values.max()}, '
                'beyond 16 bits; convert it to an 8- or 16-bit image'
            )
        scaled = (values.astype(np.uint32) * 255 + 32767) // 65535  # [H, W] in 0..255
        return Image.fromarray(scaled.astype(np.uint8), 'L')
    if img.mode == 'F':
        raise DataError(f'{path!r} holds floating-point pixels; convert it to an 8-bit image')
    if img.mode in ('P', 'PA'):
        return img.convert('RGBA' if 'transparency' in img.info or img.mode == 'PA' else 'RGB')
    return img


def _decode(path: str, image_size: int | None, channels: int = 3) -> np.ndarray:
    """Decodes one image to [H, W, channels] uint8 (RGB or grey), resized to image_size.

    16-bit images are scaled to 8 bits, palettes expanded, an alpha channel dropped (the
    colours under it kept, as torchvision's ImageFolder does).
    """
    mode = _check_channels(channels)
    try:
        with Image.open(path, formats=_PIL_FORMATS) as img:
            img = _eight_bits(img, path)
            img = img.convert(mode) if img.mode != mode else img
            if image_size is not None and img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(img, np.uint8).reshape(img.size[1], img.size[0], channels)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f'cannot decode image {path!r} ({e}); delete or replace the file') from e


def load_image_folder(
    root: str,
    split: str,
    image_size: int | None = None,
    cache_dir: str | None = None,
    channels: int = 3,
    log=print,
) -> Dataset:
    """Loads `<root>/<split>/<class>/*.{jpg,jpeg,png,bmp}` into memory.

    Labels are indices into the sorted class folder names. Images are decoded with PIL
    to RGB (or grey with channels=1) on the shared `nrnp.threads` pool.

    Args:
      root: image folder root.
      split: split folder name, e.g. 'train' or 'test'.
      image_size: resize every image to [image_size, image_size]; None requires all
        images to share one size.
      cache_dir: when set, the decoded arrays are cached there (`image_cache`; the
        command line uses the shared `image_cache.default_dir()`), keyed by the folder's
        content (every file's relative path, size and mtime) and the decoding settings,
        and verified on reading (`npz_cache`: a damaged file is set aside, with a warning).
      channels: 3 (RGB) or 1 (grey).
      log: sink of one line saying whether the images were decoded or read from the cache,
        and of the warning about a damaged or unwritable cache.

    Returns:
      Dataset with images [N, H, W, channels] uint8.

    Raises:
      DataError: naming the offending path and the fix.
    """
    class_names, paths, labels = _list_image_folder(root, split)
    where = os.path.join(root, split)
    cache_file = None
    if cache_dir is not None:
        cache_file = image_cache.entry(cache_dir, root, split, paths, image_size, channels)
        cached = npz_cache.read(cache_file, ('images', 'labels'), log)
        if cached is not None:
            log(f'{where}: {len(paths)} images reused from the decoded-image cache {cache_file}')
            return Dataset(cached['images'], cached['labels'], len(class_names), tuple(class_names))
    start = time.perf_counter()

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

    seconds = time.perf_counter() - start
    if cache_file is not None:
        if image_cache.store(cache_file, {'images': images, 'labels': labels}, log):
            log(f'{where}: {len(paths)} images decoded in {seconds:.1f} s, cached in {cache_file}')
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

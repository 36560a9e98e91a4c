"""Image augmentations on uint8 numpy batches: CIFAR crop + flip, ImageNet resized crops.

  images = augment_cifar(images, rng, pad=4)                  # [B, H, W, C] uint8
  images = random_resized_crop(images, rng, image_size=224)  # [B, 224, 224, C] uint8
  images = center_crop_resize(images, image_size=224)        # the evaluation transform

Each augmentation's random draws are a separate `_*_draws` function, so `batching.train_batches`
can draw for a whole global batch and apply them to this process's rows only.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from nrnp.data import threads
from nrnp.errors import DataError


def _crop_flip_draws(
    rng: np.random.Generator, batch: int, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draws (offsets [B, 2] int, flip [B] bool) for `augment_cifar`, in its documented order."""
    offsets = rng.integers(0, 2 * pad + 1, size=(batch, 2))
    flip = rng.random(batch) < 0.5
    return offsets, flip


def _crop_flip(images: np.ndarray, offsets: np.ndarray, flip: np.ndarray, pad: int) -> np.ndarray:
    """Crops [B, H, W, C] uint8 at offsets [B, 2] of the zero-padded images, flipping where flip."""
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # [B, H+2p, W+2p, C]
    rows = offsets[:, :1] + np.arange(h)  # [B, H]
    cols = offsets[:, 1:] + np.arange(w)  # [B, W]
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def augment_cifar(images: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Random crop from a zero-padded image plus random horizontal flip, vectorised.

    Draws, in this order: `rng.integers(0, 2 * pad + 1, (B, 2))` (row, column offsets into
    the padded image) and `rng.random(B) < 0.5` (flip).

    Args:
      images: [B, H, W, C] uint8.
      rng: numpy generator.
      pad: zero padding on every side before cropping back to [H, W].

    Returns:
      [B, H, W, C] uint8.
    """
    offsets, flip = _crop_flip_draws(rng, len(images), pad)
    return _crop_flip(images, offsets, flip, pad)


def _resized_crop_uniforms(
    rng: np.random.Generator,
    batch: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    attempts: int = 10,
) -> tuple[np.ndarray, ...]:
    """The random draws of `_resized_crop_draws`, independent of the images' sizes.

    Draws, in this order: area fractions `rng.uniform(*scale, (B, attempts))`, log aspect
    ratios `rng.uniform(log r0, log r1, (B, attempts))`, offsets `rng.random((B, 2))` and
    flips `rng.random(B) < 0.5`. A global batch draws for all its rows; each process then
    turns its own rows into boxes with `_resized_crop_boxes`, knowing only its images' sizes.

    Returns:
      (area fraction [B, attempts], aspect [B, attempts], where [B, 2], flip [B] bool).
    """
    fraction = rng.uniform(scale[0], scale[1], (batch, attempts))
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), (batch, attempts)))
    where = rng.random((batch, 2))
    flip = rng.random(batch) < 0.5
    return fraction, aspect, where, flip


def _resized_crop_boxes(
    fraction: np.ndarray,
    aspect: np.ndarray,
    where: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    ratio: tuple[float, float],
) -> np.ndarray:
    """Inception-style boxes (torchvision's `RandomResizedCrop.get_params`) from the draws.

    Each row takes its first attempt whose box fits its image; rows with none take the
    largest central crop with the aspect ratio clipped to `ratio`.

    Args:
      fraction, aspect: [b, attempts] from `_resized_crop_uniforms`.
      where: [b, 2] uniform offsets.
      heights, widths: [b] image sizes (each row its own).
      ratio: aspect ratio range, width / height.

    Returns:
      boxes [b, 4] int64 (top, left, crop height, crop width).
    """
    heights = np.asarray(heights, np.int64).reshape(-1)
    widths = np.asarray(widths, np.int64).reshape(-1)
    area = fraction * (heights * widths)[:, None].astype(np.float64)
    w = np.round(np.sqrt(area * aspect)).astype(np.int64)  # [b, attempts]
    h = np.round(np.sqrt(area / aspect)).astype(np.int64)  # [b, attempts]
    fits = (w > 0) & (w <= widths[:, None]) & (h > 0) & (h <= heights[:, None])
    first = np.argmax(fits, axis=1)  # [b]: the first attempt that fits (0 if none does)
    rows = np.arange(len(first))
    h, w = h[rows, first], w[rows, first]  # [b]
    image_ratio = widths / heights
    narrow, wide = image_ratio < ratio[0], image_ratio > ratio[1]
    fallback_h = np.where(narrow, np.round(widths / ratio[0]).astype(np.int64), heights)
    fallback_w = np.where(wide, np.round(heights * ratio[1]).astype(np.int64), widths)
    none = ~fits.any(axis=1)  # [b]
    h, w = np.where(none, fallback_h, h), np.where(none, fallback_w, w)
    # Free rows take a uniform offset; fallback rows are centred.
    top = np.where(none, (heights - h) // 2, np.floor(where[:, 0] * (heights - h + 1)))
    left = np.where(none, (widths - w) // 2, np.floor(where[:, 1] * (widths - w + 1)))
    return np.stack([top, left, h, w], axis=1).astype(np.int64)  # [b, 4]


def _resized_crop_draws(
    rng: np.random.Generator,
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    attempts: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws crop boxes for `batch` images of one size [height, width] (see the two above).

    Returns:
      boxes [B, 4] int64 (top, left, crop height, crop width); flip [B] bool.
    """
    fraction, aspect, where, flip = _resized_crop_uniforms(rng, batch, scale, ratio, attempts)
    sizes = np.full(batch, height), np.full(batch, width)
    return _resized_crop_boxes(fraction, aspect, where, *sizes, ratio), flip


def _sizes(images) -> tuple[np.ndarray, np.ndarray]:
    """([b] heights, [b] widths) of a [b, H, W, C] array or a list of [H_i, W_i, C] images."""
    if isinstance(images, np.ndarray):
        b, h, w = images.shape[:3]
        return np.full(b, h), np.full(b, w)
    return (
        np.array([img.shape[0] for img in images], np.int64),
        np.array([img.shape[1] for img in images], np.int64),
    )


def _crop_resize(
    images: np.ndarray, boxes: np.ndarray, flip: np.ndarray, image_size: int
) -> np.ndarray:
    """Crops boxes [B, 4] (top, left, h, w) out of [B, H, W, C] uint8 (or a list of B
    [H_i, W_i, C] images) and resizes (PIL bilinear, antialiased) to
    [B, image_size, image_size, C], mirroring rows where flip [B] is True."""
    b, c = len(images), images[0].shape[-1]
    out = np.empty((b, image_size, image_size, c), np.uint8)

    def crop_rows(start: int, stop: int) -> None:
        for k in range(start, stop):
            top, left, h, w = (int(v) for v in boxes[k])
            img = Image.fromarray(images[k][:, :, 0] if c == 1 else images[k])
            if (h, w) == (image_size, image_size):
                img = img.crop((left, top, left + w, top + h))  # exact copy, no resampling
            else:
                img = img.resize(
                    (image_size, image_size), Image.BILINEAR, box=(left, top, left + w, top + h)
                )
            pixels = np.asarray(img).reshape(image_size, image_size, c)
            out[k] = pixels[:, ::-1] if flip[k] else pixels

    parts = min(os.cpu_count() or 1, 16, b)
    if parts < 2 or b * image_size * image_size < 1 << 20:  # small batches: threads cost more
        crop_rows(0, b)
        return out
    threads.for_ranges(crop_rows, b, chunk=-(-b // parts))  # PIL resizes without the GIL
    return out


def random_resized_crop(
    images: np.ndarray,
    rng: np.random.Generator,
    image_size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """ImageNet training augmentation: Inception-style random resized crop + horizontal flip.

    A box covering `scale` of the image area with aspect ratio (w / h) in `ratio` (log-uniform)
    is cropped and resized to [image_size, image_size] (see `_resized_crop_draws` for the
    draws and their order), then mirrored with probability 1/2.

    Args:
      images: [B, H, W, C] uint8, or a list of B [H_i, W_i, C] uint8 images of any sizes.
      rng: numpy generator.
      image_size: output side S.
      scale: range of the crop's fraction of the image area.
      ratio: range of the crop's aspect ratio, width / height.

    Returns:
      [B, S, S, C] uint8.
    """
    fraction, aspect, where, flip = _resized_crop_uniforms(rng, len(images), scale, ratio)
    boxes = _resized_crop_boxes(fraction, aspect, where, *_sizes(images), ratio)
    return _crop_resize(images, boxes, flip, image_size)


def center_crop_resize(
    images: np.ndarray, image_size: int, crop_fraction: float = 0.875
) -> np.ndarray:
    """ImageNet evaluation transform: central square crop, resized to [image_size, image_size].

    The crop's side is `round(crop_fraction * min(H, W))` (0.875 = the usual 224 of 256).

    Args:
      images: [B, H, W, C] uint8, or a list of B [H_i, W_i, C] uint8 images of any sizes.
      image_size: output side S.
      crop_fraction: crop side over the shorter image side, in (0, 1].

    Returns:
      [B, S, S, C] uint8.
    """
    if not 0 < crop_fraction <= 1:
        raise DataError(f'crop_fraction must be in (0, 1], got {crop_fraction}')
    h, w = _sizes(images)  # [B] each
    side = np.maximum(1, np.round(crop_fraction * np.minimum(h, w))).astype(np.int64)
    boxes = np.stack([(h - side) // 2, (w - side) // 2, side, side], axis=1)  # [B, 4]
    return _crop_resize(images, boxes, np.zeros(len(images), bool), image_size)

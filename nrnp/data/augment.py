"""Image augmentations on uint8 numpy batches: CIFAR crop + flip, ImageNet resized crops.

  offsets, flip = crop_flip_draws(rng, batch, pad=4)          # for the whole global batch
  images = crop_flip(images, offsets[rows], flip[rows], pad=4)  # [b, H, W, C] uint8, its rows
  images = center_crop_resize(images, image_size=224)          # the evaluation transform

Each augmentation's random draws are a separate function (`crop_flip_draws`,
`resized_crop_uniforms`), so `batching.train_batch` can draw for a whole global batch and
apply them to this process's rows only (`crop_flip`, `resized_crop_boxes` + `crop_resize`).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from nrnp.data import threads
from nrnp.errors import DataError


def crop_flip_draws(
    rng: np.random.Generator, batch: int, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR's random crop + flip draws: `rng.integers(0, 2 * pad + 1, (B, 2))` (row, column
    offsets into the zero-padded images), then `rng.random(B) < 0.5` (flip).

    Returns:
      (offsets [B, 2] int, flip [B] bool), for `crop_flip`.
    """
    offsets = rng.integers(0, 2 * pad + 1, size=(batch, 2))
    flip = rng.random(batch) < 0.5
    return offsets, flip


def crop_flip(images: np.ndarray, offsets: np.ndarray, flip: np.ndarray, pad: int) -> np.ndarray:
    """Crops [B, H, W, C] uint8 at offsets [B, 2] of the zero-padded images, flipping where flip."""
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # [B, H+2p, W+2p, C]
    rows = offsets[:, :1] + np.arange(h)  # [B, H]
    cols = offsets[:, 1:] + np.arange(w)  # [B, W]
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def resized_crop_uniforms(
    rng: np.random.Generator,
    batch: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    attempts: int = 10,
) -> tuple[np.ndarray, ...]:
    """The random draws of an Inception-style random resized crop, independent of the images'
    sizes (the boxes cover `scale` of the area at aspect ratios w / h in `ratio`).

    Draws, in this order: area fractions `rng.uniform(*scale, (B, attempts))`, log aspect
    ratios `rng.uniform(log r0, log r1, (B, attempts))`, offsets `rng.random((B, 2))` and
    flips `rng.random(B) < 0.5`. A global batch draws for all its rows; each process then
    turns its own rows into boxes with `resized_crop_boxes`, knowing only its images' sizes.

    Returns:
      (area fraction [B, attempts], aspect [B, attempts], where [B, 2], flip [B] bool).
    """
    fraction = rng.uniform(scale[0], scale[1], (batch, attempts))
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), (batch, attempts)))
    where = rng.random((batch, 2))
    flip = rng.random(batch) < 0.5
    return fraction, aspect, where, flip


def resized_crop_boxes(
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
      fraction, aspect: [b, attempts] from `resized_crop_uniforms`.
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


def image_sizes(images) -> tuple[np.ndarray, np.ndarray]:
    """([b] heights, [b] widths) of a [b, H, W, C] array or a list of [H_i, W_i, C] images."""
    if isinstance(images, np.ndarray):
        b, h, w = images.shape[:3]
        return np.full(b, h), np.full(b, w)
    return (
        np.array([img.shape[0] for img in images], np.int64),
        np.array([img.shape[1] for img in images], np.int64),
    )


def crop_resize(
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
    h, w = image_sizes(images)  # [B] each
    side = np.maximum(1, np.round(crop_fraction * np.minimum(h, w))).astype(np.int64)
    boxes = np.stack([(h - side) // 2, (w - side) // 2, side, side], axis=1)  # [B, 4]
    return crop_resize(images, boxes, np.zeros(len(images), bool), image_size)

"""On-device data: epochs of disjoint batches, exact crops and flips, normalisation and
top-1 equal to the host pipeline's."""

import jax
import jax.numpy as jnp
import numpy as np

from nrnp.data import batching
from nrnp.data.dataset import Dataset
from nrnp.nets import models
from nrnp.training import device_data, evaluation


def _dataset(n=37, size=6, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return Dataset(images, (np.arange(n) % 4).astype(np.int32), 4, tuple('abcd'))


def test_batches_of_an_epoch_are_disjoint_cover_and_replay():
    key = jax.random.key(3)
    n, b = 37, 8
    epoch = [np.asarray(device_data.batch_indices(key, s, n, b)) for s in range(n // b)]
    flat = np.concatenate(epoch)
    assert len(set(flat.tolist())) == len(flat) == (n // b) * b  # no repeats within an epoch
    assert flat.min() >= 0 and flat.max() < n
    again = np.asarray(device_data.batch_indices(key, 2, n, b))
    np.testing.assert_array_equal(again, epoch[2])  # a function of (key, step): resumable
    next_epoch = np.asarray(device_data.batch_indices(key, n // b, n, b))
    assert not np.array_equal(next_epoch, epoch[0])


def test_crop_flip_gives_exact_crops_of_the_padded_image():
    images = _dataset(n=16).images
    pad = 2
    out = np.asarray(device_data.crop_flip(jax.random.key(0), jnp.asarray(images), pad))
    assert out.shape == images.shape and out.dtype == np.uint8
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def crop(i, oy, ox, flip):
        c = padded[i, oy : oy + 6, ox : ox + 6]
        return c[:, ::-1] if flip else c

    flips, offsets = 0, set()
    for i in range(len(images)):
        matches = [
            (oy, ox, flip)
            for oy in range(2 * pad + 1)
            for ox in range(2 * pad + 1)
            for flip in (False, True)
            if np.array_equal(out[i], crop(i, oy, ox, flip))
        ]
        assert matches, f'image {i} is no crop of its padded input'
        flips += matches[0][2]
        offsets.add(matches[0][:2])
    assert 0 < flips < len(images) and len(offsets) > 3  # random, not constant
    same = device_data.crop_flip(jax.random.key(0), jnp.asarray(images), 0)
    flipped_or_not = [
        np.array_equal(np.asarray(same)[i], images[i])
        or np.array_equal(np.asarray(same)[i], images[i][:, ::-1])
        for i in range(len(images))
    ]
    assert all(flipped_or_not)


def test_train_images_normalise_like_the_host_pipeline():
    ds = _dataset()
    split = device_data.place(ds)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    kw = dict(batch_size=8, augment='none', pad=0, mean=mean, std=std)
    key = jax.random.key(1)
    x = np.asarray(
        jax.jit(device_data.train_images, static_argnames=tuple(kw))(split, key, 3, **kw)
    )
    idx = np.asarray(device_data.batch_indices(key, 3, len(ds), 8))
    np.testing.assert_allclose(x, batching.normalise(ds.images[idx], mean, std), atol=1e-6)
    y = device_data.train_images(split, key, 4, **kw)
    assert not np.array_equal(x, np.asarray(y))


def test_top1_on_the_device_equals_the_host_evaluation():
    model = models.build_model('smallcnn', 4, widths=(4, 8, 8))
    ds = _dataset(n=37, size=8)
    ds = Dataset(ds.images[..., :1], ds.labels, 4, ds.class_names)  # grey, as smallcnn expects
    variables = models.init_variables(model, (1, 8, 8, 1))
    mean, std = (0.5,), (0.25,)
    split = device_data.place(ds, pad_to=10)  # 37 images in batches of 10: 3 padding rows
    assert split.size == 40 and int((np.asarray(split.labels) < 0).sum()) == 3
    on_device = device_data.top1(model, variables, split, batch_size=10, mean=mean, std=std)
    host = evaluation.top1(model, variables, batching.normalise(ds.images, mean, std), ds.labels)
    assert on_device == host


def test_fits_follows_the_device_memory():
    small, big = _dataset(n=2), _dataset(n=2)
    assert device_data.fits(small)
    assert not device_data.fits(big, unknown_limit=10)  # CPU: no memory stats, the limit rules

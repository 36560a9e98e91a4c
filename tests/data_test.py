"""Tests for nrnp.data: loaders (image folder, TFDS mock, digits), errors and batch iterators."""

import glob
import io
import os
import re
import shutil
import threading
import time

import numpy as np
import pytest
from PIL import Image

from nrnp import errors
from nrnp.data import augment, batching, dataset, folders, sources, tfds_reader, threads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get('NRNP_SHARED') or os.path.join(REPO, '..', 'shared')
CIFAR10_JPEG = os.path.join(SHARED, 'data', 'cifar10-jpeg')


def _write_folder(
    root, split='train', classes=('cat', 'ant', 'bee'), per_class=3, size=(6, 5), seed=0
):
    """Writes random RGB PNGs; returns {path: [H, W, 3] uint8}."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in classes:
        os.makedirs(os.path.join(root, split, name), exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            path = os.path.join(root, split, name, f'{i:03d}.png')
            Image.fromarray(img).save(path)
            written[path] = img
    return written


def _tiny(n=10, h=4, w=4, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return dataset.Dataset(
        rng.integers(0, 256, (n, h, w, c), dtype=np.uint8),
        np.arange(n, dtype=np.int32) % 3,
        3,
        ('a', 'b', 'c'),
    )


# ---------------------------------------------------------------- image folders


def test_image_folder_round_trip_and_labels(tmp_path):
    root = str(tmp_path / 'imgs')
    written = _write_folder(root)
    ds = folders.load_image_folder(root, 'train')
    assert ds.class_names == ('ant', 'bee', 'cat')
    assert ds.num_classes == 3
    assert ds.images.shape == (9, 5, 6, 3) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int32
    np.testing.assert_array_equal(ds.labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    order = sorted(written)  # class folders and file names sort the same way here
    np.testing.assert_array_equal(ds.images, np.stack([written[p] for p in order]))


def test_image_folder_grayscale_and_resize(tmp_path):
    root = tmp_path / 'g'
    os.makedirs(root / 'test' / 'x')
    Image.fromarray(np.full((7, 9), 200, np.uint8), mode='L').save(root / 'test' / 'x' / 'a.png')
    Image.fromarray(np.full((3, 3, 3), 10, np.uint8)).save(root / 'test' / 'x' / 'b.bmp')
    ds = folders.load_image_folder(str(root), 'test', image_size=4)
    assert ds.images.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(ds.images[0], 200)
    np.testing.assert_array_equal(ds.images[1], 10)
    grey = folders.load_image_folder(str(root), 'test', image_size=4, channels=1)
    assert grey.images.shape == (2, 4, 4, 1)
    np.testing.assert_array_equal(grey.images[0], 200)
    np.testing.assert_array_equal(grey.images[1], 10)  # grey of (10, 10, 10)
    images, _ = folders.FolderSource(str(root), 'test', channels=1).read(np.arange(2))
    assert [x.shape for x in images] == [(7, 9, 1), (3, 3, 1)]
    with pytest.raises(errors.DataError, match='1 \\(grey\\) or 3 \\(RGB\\) channels, not 2'):
        folders.FolderSource(str(root), 'test', channels=2)


def _png16(path, values):
    """A 16-bit PNG of `values` [H, W, C] uint16 (C: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA),
    written by hand: PIL writes no 16-bit colour PNGs."""
    import struct
    import zlib

    h, w, c = values.shape
    raw = b''.join(b'\0' + values[y].astype('>u2').tobytes() for y in range(h))

    def chunk(kind, data):
        crc = struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack('>I', len(data)) + kind + data + crc

    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    header = struct.pack('>IIBBBBB', w, h, 16, colour, 0, 0, 0)
    path.write_bytes(
        b'\x89PNG\r\n\x1a\n'
        + chunk(b'IHDR', header)
        + chunk(b'IDAT', zlib.compress(raw))
        + chunk(b'IEND', b'')
    )


def test_high_bit_depth_palette_and_alpha_images_decode_faithfully(tmp_path):
    root = tmp_path / 'odd'
    os.makedirs(root / 'test' / 'x')
    grey = np.linspace(35, 65522, 32 * 32).astype(np.uint16).reshape(32, 32)
    Image.fromarray(grey).save(root / 'test' / 'x' / 'a_grey16.png')  # PIL mode I;16
    rgb = np.stack([grey, 65535 - grey, np.full_like(grey, 40000)], axis=-1)
    _png16(root / 'test' / 'x' / 'b_rgb16.png', rgb)
    colours = np.zeros((32, 32, 3), np.uint8)
    colours[:, 16:] = (10, 200, 30)
    palette = Image.fromarray(colours).convert('P', palette=Image.ADAPTIVE, colors=2)
    palette.save(root / 'test' / 'x' / 'c_palette.png', transparency=0)  # black: transparent
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (120, 60, 250), 0  # fully transparent: colour kept
    Image.fromarray(rgba, 'RGBA').save(root / 'test' / 'x' / 'd_rgba.png')
    ds = folders.load_image_folder(str(root), 'test', cache_dir=str(tmp_path / 'cache'))
    expected_grey = np.round(grey / 257.0)  # v * 255 / 65535
    np.testing.assert_array_equal(ds.images[0], np.repeat(expected_grey[..., None], 3, -1))
    assert (ds.images[0] == 255).mean() < 0.01  # not the almost white image of a clipping
    np.testing.assert_allclose(ds.images[1], rgb / 257.0, atol=1)  # PIL keeps the high byte
    np.testing.assert_array_equal(ds.images[2], colours)
    np.testing.assert_array_equal(ds.images[3], np.broadcast_to((120, 60, 250), (32, 32, 3)))
    single = folders.load_image_folder(str(root), 'test', channels=1)
    np.testing.assert_array_equal(single.images[0, ..., 0], expected_grey)


def test_an_interrupted_cache_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    root, cache = str(tmp_path / 'imgs'), tmp_path / 'cache'
    _write_folder(root)

    def interrupted(f, **arrays):
        f.write(b'half an npz')
        raise KeyboardInterrupt  # what SIGTERM raises under the command line

    monkeypatch.setattr(np, 'savez', interrupted)
    with pytest.raises(KeyboardInterrupt):
        folders.load_image_folder(root, 'train', cache_dir=str(cache))
    assert os.listdir(cache) == []


def test_image_folder_cache(tmp_path):
    root = str(tmp_path / 'imgs')
    cache = str(tmp_path / 'cache')
    _write_folder(root)
    a = folders.load_image_folder(root, 'train', cache_dir=cache)
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].endswith('.npz')  # no temp file left behind
    b = folders.load_image_folder(root, 'train', cache_dir=cache)
    assert os.listdir(cache) == files
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.class_names == b.class_names and a.num_classes == b.num_classes
    # A changed mtime or a different image_size is a different key.
    os.utime(os.path.join(root, 'train', 'bee', '000.png'), ns=(1, 1))
    folders.load_image_folder(root, 'train', cache_dir=cache)
    folders.load_image_folder(root, 'train', cache_dir=cache, image_size=3)
    assert len(os.listdir(cache)) == 3


def _flip_middle_byte(path):
    data = bytearray(open(path, 'rb').read())
    data[len(data) // 2] ^= 1
    open(path, 'wb').write(bytes(data))


@pytest.mark.parametrize('damage', ['flipped byte', 'no checksum'])
def test_a_damaged_image_cache_is_set_aside_and_decoded_again(tmp_path, damage):
    root, cache = str(tmp_path / 'imgs'), tmp_path / 'cache'
    _write_folder(root)
    first = folders.load_image_folder(root, 'train', cache_dir=str(cache))
    (name,) = os.listdir(cache)
    if damage == 'flipped byte':
        _flip_middle_byte(cache / name)
    else:  # as an older nrnp wrote it: arrays without their digest
        np.savez(cache / name, images=first.images, labels=first.labels)
    logs = []
    again = folders.load_image_folder(root, 'train', cache_dir=str(cache), log=logs.append)
    np.testing.assert_array_equal(again.images, first.images)
    assert len(logs) == 2 and f'decoded-image cache {cache / name} is damaged' in logs[0], logs
    expected = 'no checksum' if damage == 'no checksum' else 'do not match|unreadable'
    assert re.search(expected, logs[0]), logs
    assert 'images decoded in' in logs[1] and str(cache / name) in logs[1], logs
    assert sorted(os.listdir(cache))[0] == name  # rebuilt, verified from now on
    assert len(glob.glob(f'{cache}/{name}.corrupt-*')) == 1  # the damaged one kept aside
    logs.clear()
    folders.load_image_folder(root, 'train', cache_dir=str(cache), log=logs.append)
    assert logs == [f'{root}/train: 9 images reused from the decoded-image cache {cache / name}']


def test_image_folder_cache_hit_skips_decoding(tmp_path, monkeypatch):
    root = str(tmp_path / 'imgs')
    cache = str(tmp_path / 'cache')
    _write_folder(root)
    a = folders.load_image_folder(root, 'train', cache_dir=cache)

    def fail(*args):
        raise AssertionError('decoded despite cache')

    monkeypatch.setattr(folders, '_decode', fail)
    b = folders.load_image_folder(root, 'train', cache_dir=cache)
    np.testing.assert_array_equal(a.images, b.images)


def test_image_folder_errors_name_the_path(tmp_path):
    missing = str(tmp_path / 'nope')
    with pytest.raises(errors.DataError, match='nope'):
        folders.load_image_folder(missing, 'train')

    root = tmp_path / 'r'
    _write_folder(str(root), split='train')
    with pytest.raises(errors.DataError, match=r"(?s)r/test.*\['train'\]"):
        folders.load_image_folder(str(root), 'test')

    os.makedirs(root / 'empty')
    with pytest.raises(errors.DataError, match='empty.*no class folders'):
        folders.load_image_folder(str(root), 'empty')

    os.makedirs(root / 'train' / 'dog')
    (root / 'train' / 'dog' / 'notes.txt').write_text('x')
    with pytest.raises(errors.DataError, match='train/dog.*no images'):
        folders.load_image_folder(str(root), 'train')
    shutil.rmtree(root / 'train' / 'dog')

    bad = root / 'train' / 'ant' / 'zzz.jpg'
    bad.write_bytes(b'not an image')
    with pytest.raises(errors.DataError, match='zzz.jpg.*cannot decode|cannot decode.*zzz.jpg'):
        folders.load_image_folder(str(root), 'train')
    bad.unlink()

    jpeg = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(jpeg, 'JPEG')
    bad.write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])  # truncated
    with pytest.raises(errors.DataError, match='(?i)zzz.jpg.*truncated'):
        folders.load_image_folder(str(root), 'train')
    bad.unlink()

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / 'train' / 'cat' / 'zzz.png')
    with pytest.raises(errors.DataError, match=r'zzz.png.*8x8.*6x5'):
        folders.load_image_folder(str(root), 'train')
    assert folders.load_image_folder(str(root), 'train', image_size=4).images.shape == (10, 4, 4, 3)


def test_splits_with_different_classes(tmp_path):
    """What the command line checks once it holds both splits of an image folder."""
    root = str(tmp_path / 'r')

    def check():
        train, test = (folders.load_image_folder(root, s) for s in ('train', 'test'))
        where = 'r: the splits have different classes'
        dataset.check_same_classes(('train', train.class_names), ('test', test.class_names), where)

    _write_folder(root, 'train', classes=('a', 'b'))
    _write_folder(root, 'test', classes=('a', 'b'))
    check()
    _write_folder(root, 'test', classes=('c',))
    with pytest.raises(
        errors.DataError, match=r"(?s)splits have.*only in train: \[\].*only in test: \['c'\]"
    ):
        check()


def test_load_dataset_prefers_image_folder(tmp_path):
    root = str(tmp_path / 'r')
    _write_folder(root, 'test', classes=('a',), per_class=2)
    ds = sources.load_dataset(name='cifar10', split='test', image_folder=root)
    assert ds.images.shape == (2, 5, 6, 3)
    ds = sources.load_dataset(name='digits', split='test', image_size=16)
    assert ds.images.shape == (360, 16, 16, 1)


# ---------------------------------------------------------------- TFDS and digits


@pytest.mark.parametrize('name,num_classes', [('cifar10', 10), ('cifar100', 100)])
def test_tfds_mock(name, num_classes, tmp_path):
    tfds = pytest.importorskip('tensorflow_datasets')
    with tfds.testing.mock_data(num_examples=12):
        ds = tfds_reader.load_tfds(name, 'train', data_dir=str(tmp_path))
        via_config = sources.load_dataset(name=name, split='test', data_dir=str(tmp_path))
    assert ds.images.shape == (12, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (12,) and ds.labels.dtype == np.int32
    assert ds.num_classes == num_classes and len(ds.class_names) == num_classes
    assert 0 <= ds.labels.min() and ds.labels.max() < num_classes
    assert via_config.images.shape == (12, 32, 32, 3)


def test_tfds_process_shares(tmp_path):
    tfds = pytest.importorskip('tensorflow_datasets')
    with tfds.testing.mock_data(num_examples=11):
        whole = tfds_reader.load_tfds('cifar10', 'train', data_dir=str(tmp_path))
        shares = [
            tfds_reader.load_tfds(
                'cifar10', 'train', data_dir=str(tmp_path), process_index=p, process_count=3
            )
            for p in range(3)
        ]
    assert [len(s) for s in shares] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate([s.images for s in shares]), whole.images)
    np.testing.assert_array_equal(np.concatenate([s.labels for s in shares]), whole.labels)


def test_process_split():
    assert [dataset.process_split(11, p, 3) for p in range(3)] == [
        slice(0, 4),
        slice(4, 8),
        slice(8, 11),
    ]
    for n, count in [(0, 2), (5, 8), (12, 4), (1000, 7)]:
        covered = np.concatenate(
            [np.arange(n)[dataset.process_split(n, p, count)] for p in range(count)]
        )
        np.testing.assert_array_equal(covered, np.arange(n))  # disjoint, contiguous, in order
        sizes = [len(range(n)[dataset.process_split(n, p, count)]) for p in range(count)]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(errors.DataError, match='process_index 3'):
        dataset.process_split(10, 3, 3)


def test_tfds_not_prepared_fails_fast(tmp_path):
    pytest.importorskip('tensorflow_datasets')
    start = time.time()
    with pytest.raises(
        errors.DataError,
        match=r'(?s)cifar100.*cannot download.*array_record'
        r'.*downloads/manual.*image_folder',
    ):
        tfds_reader.load_tfds('cifar100', 'test', data_dir=str(tmp_path))
    assert time.time() - start < 5
    with pytest.raises(errors.DataError, match='no dataset named'):
        tfds_reader.load_tfds('no_such_dataset_xyz', 'test', data_dir=str(tmp_path))


def test_digits():
    train = dataset.load_digits('train')
    test = dataset.load_digits('test')
    assert len(train) == 1437 and len(test) == 360
    assert train.images.shape == (1437, 8, 8, 1) and train.images.dtype == np.uint8
    assert train.images.min() == 0 and train.images.max() == 255
    assert set(np.unique(test.labels)) == set(range(10))
    np.testing.assert_array_equal(dataset.load_digits('test').images, test.images)
    with pytest.raises(errors.DataError):
        dataset.load_digits('validation')


# ---------------------------------------------------------------- batches


def test_normalise():
    x = np.array([[0, 255, 51]], np.uint8)  # [1, 3]
    y = batching.normalise(x, (0.0, 0.5, 0.2), (1.0, 0.5, 0.1))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[0.0, 1.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(batching.normalise(x, (0.5,), (0.5,)), [[-1, 1, -0.6]], atol=1e-6)
    with pytest.raises(errors.DataError, match='length 1 or 3'):
        batching.normalise(x, (0.1, 0.2), (1.0,))


def _crop_flip(images, rng, pad):
    """Crop + flip of a whole batch, as `batching.train_batch` composes it."""
    return augment.crop_flip(images, *augment.crop_flip_draws(rng, len(images), pad), pad)


def _resized_crop(images, rng, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Random resized crop + flip of a whole batch, as `batching.train_batch` composes it."""
    fraction, aspect, where, flip = augment.resized_crop_uniforms(rng, len(images), scale, ratio)
    sizes = augment.image_sizes(images)
    return augment.crop_resize(
        images, augment.resized_crop_boxes(fraction, aspect, where, *sizes, ratio), flip, size
    )


def _resized_crop_draws(rng, batch, height, width, scale, ratio):
    """(boxes [B, 4], flip [B]) for `batch` images of one size."""
    fraction, aspect, where, flip = augment.resized_crop_uniforms(rng, batch, scale, ratio)
    sizes = np.full(batch, height), np.full(batch, width)
    return augment.resized_crop_boxes(fraction, aspect, where, *sizes, ratio), flip


def test_augment_hand_made():
    img = np.arange(2 * 3 * 3 * 1, dtype=np.uint8).reshape(2, 3, 3, 1) + 1  # no zeros
    rng = np.random.default_rng(5)
    out = _crop_flip(img, rng, pad=0)  # crop of the whole image: flip only
    assert out.shape == img.shape and out.dtype == np.uint8
    flips = np.random.default_rng(5)
    flips.integers(0, 1, (2, 2))
    flip = flips.random(2) < 0.5
    for b in range(2):
        np.testing.assert_array_equal(out[b], img[b, :, ::-1] if flip[b] else img[b])


class _FixedDraws:
    """Stands in for np.random.Generator with chosen offsets and flip draws."""

    def __init__(self, offsets, uniforms):
        self.offsets, self.uniforms = np.asarray(offsets), np.asarray(uniforms)

    def integers(self, low, high, size):
        assert (low, high, size) == (0, 3, self.offsets.shape)
        return self.offsets

    def random(self, size):
        return self.uniforms


def test_augment_crop_flip_pixels():
    one = np.array([[1, 2], [3, 4]], np.uint8)[None, :, :, None]  # [1, 2, 2, 1]
    images = np.repeat(one, 3, axis=0)  # [3, 2, 2, 1]
    # Padded (pad=1): [[0,0,0,0],[0,1,2,0],[0,3,4,0],[0,0,0,0]].
    rng = _FixedDraws([[0, 0], [1, 2], [2, 1]], [0.9, 0.1, 0.7])
    out = _crop_flip(images, rng, pad=1)[..., 0]
    np.testing.assert_array_equal(out[0], [[0, 0], [0, 1]])  # top-left crop
    np.testing.assert_array_equal(out[1], [[0, 2], [0, 4]])  # [[2, 0], [4, 0]] flipped
    np.testing.assert_array_equal(out[2], [[3, 4], [0, 0]])  # bottom crop, no flip


def test_augment_matches_loop():
    images = np.random.default_rng(0).integers(1, 256, (16, 8, 8, 3), dtype=np.uint8)
    out = _crop_flip(images, np.random.default_rng(1), pad=4)
    draws = np.random.default_rng(1)
    offsets = draws.integers(0, 9, (16, 2))
    flip = draws.random(16) < 0.5
    for b in range(16):
        p = np.pad(images[b], ((4, 4), (4, 4), (0, 0)))
        want = p[offsets[b, 0] : offsets[b, 0] + 8, offsets[b, 1] : offsets[b, 1] + 8]
        np.testing.assert_array_equal(out[b], want[:, ::-1] if flip[b] else want)


@pytest.mark.parametrize('augment', ['crop_flip', 'none'])
def test_train_batches_deterministic_and_resumable(augment):
    ds = _tiny(n=10)
    it = batching.train_batches(ds, 3, seed=7, augment=augment, mean=(0.5,), std=(0.25,))
    full = [next(it) for _ in range(8)]  # 3 steps per epoch: crosses two epoch boundaries
    assert full[0][0].shape == (3, 4, 4, 3) and full[0][0].dtype == np.float32
    assert full[0][1].shape == (3,) and full[0][1].dtype == np.int32
    again = batching.train_batches(ds, 3, seed=7, augment=augment, mean=(0.5,), std=(0.25,))
    for k in (0, 2, 3, 5):
        resumed = batching.train_batches(
            ds, 3, seed=7, start_step=k, augment=augment, mean=(0.5,), std=(0.25,)
        )
        for step in range(k, 8):
            x, y = next(resumed)
            np.testing.assert_array_equal(x, full[step][0])
            np.testing.assert_array_equal(y, full[step][1])
    for step in range(8):
        np.testing.assert_array_equal(next(again)[0], full[step][0])
    other = next(batching.train_batches(ds, 3, seed=8, augment=augment, mean=(0.5,), std=(0.25,)))
    assert not np.array_equal(other[0], full[0][0])


def test_train_batches_epoch_is_permutation():
    ds = dataset.Dataset(
        np.zeros((10, 1, 1, 1), np.uint8), np.arange(10, dtype=np.int32), 10, tuple('abcdefghij')
    )
    it = batching.train_batches(ds, 3, seed=1, augment='none')
    epoch0 = np.concatenate([next(it)[1] for _ in range(3)])
    epoch1 = np.concatenate([next(it)[1] for _ in range(3)])
    perm0 = np.random.default_rng([1, 0]).permutation(10)
    np.testing.assert_array_equal(epoch0, perm0[:9])
    assert len(set(epoch0)) == 9 and not np.array_equal(epoch0, epoch1)
    with pytest.raises(errors.DataError):
        next(batching.train_batches(ds, 11, seed=0))


def test_eval_batches_padding():
    ds = _tiny(n=7)
    batches = list(batching.eval_batches(ds, 3, mean=(0.0,), std=(1.0,)))
    assert len(batches) == 3
    for x, y, m in batches:
        assert x.shape == (3, 4, 4, 3) and x.dtype == np.float32
        assert y.shape == (3,) and y.dtype == np.int32 and m.dtype == np.bool_
    np.testing.assert_array_equal(batches[2][2], [True, False, False])
    assert all(m.all() for _, _, m in batches[:2])
    labels = np.concatenate([y[m] for _, y, m in batches])
    np.testing.assert_array_equal(labels, ds.labels)
    images = np.concatenate([x[m] for x, _, m in batches])
    np.testing.assert_allclose(images, ds.images / 255.0, atol=1e-6)


# ---------------------------------------------------------------- real data


def test_cifar10_jpeg_subset(tmp_path):
    if not os.path.isdir(CIFAR10_JPEG):
        pytest.skip(f'real CIFAR-10 JPEG folder not found at {CIFAR10_JPEG} (set NRNP_SHARED)')
    classes = sorted(os.listdir(os.path.join(CIFAR10_JPEG, 'test')))
    assert classes[:3] == ['airplane', 'automobile', 'bird'] and len(classes) == 10
    for name in ('bird', 'airplane'):
        dst = tmp_path / 'test' / name
        os.makedirs(dst)
        for f in sorted(os.listdir(os.path.join(CIFAR10_JPEG, 'test', name)))[:50]:
            shutil.copy(os.path.join(CIFAR10_JPEG, 'test', name, f), dst)
    ds = folders.load_image_folder(str(tmp_path), 'test')
    assert ds.images.shape == (100, 32, 32, 3) and ds.class_names == ('airplane', 'bird')
    np.testing.assert_array_equal(np.bincount(ds.labels), [50, 50])
    assert 20 < ds.images.mean() < 235


# ---------------------------------------------------------------- ImageNet-style augmentation


def _quadrants(size=8):
    """[1, size, size, 3] uint8 with four distinct quadrant colours, asymmetric left-right."""
    img = np.zeros((size, size, 3), np.uint8)
    half = size // 2
    img[:half, :half], img[:half, half:] = (255, 0, 0), (0, 255, 0)
    img[half:, :half], img[half:, half:] = (0, 0, 255), (255, 255, 0)
    img[..., 2] += np.arange(size, dtype=np.uint8)[None, :] * 7  # a column ramp
    return img[None]


def test_random_resized_crop_shape_determinism_and_flip():
    images = np.repeat(_quadrants(16), 6, axis=0)  # [6, 16, 16, 3]
    out = _resized_crop(images, np.random.default_rng(3), 8)
    assert out.shape == (6, 8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, _resized_crop(images, np.random.default_rng(3), 8))
    assert not np.array_equal(out, _resized_crop(images, np.random.default_rng(4), 8))
    # Whole-image boxes (scale 1, the image's own aspect ratio): each row is the resized
    # image or its mirror, as the flip draw (the last one) says; the mirror of a mirrored
    # input is the plain output.
    whole = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))
    out = _resized_crop(images, np.random.default_rng(5), 16, **whole)
    draws = np.random.default_rng(5)
    draws.uniform(size=(6, 10)), draws.uniform(size=(6, 10)), draws.random((6, 2))
    flip = draws.random(6) < 0.5
    assert 0 < flip.sum() < 6
    for b in range(6):
        np.testing.assert_array_equal(out[b], images[b, :, ::-1] if flip[b] else images[b])
    mirrored = _resized_crop(images[:, :, ::-1], np.random.default_rng(5), 16, **whole)
    np.testing.assert_array_equal(mirrored, out[:, :, ::-1])


def test_random_resized_crop_boxes():
    rng = np.random.default_rng(0)
    boxes, flip = _resized_crop_draws(rng, 4000, 40, 60, (0.08, 1.0), (3 / 4, 4 / 3))
    top, left, h, w = boxes.T
    assert (
        (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 60).all()
    )
    area = h * w / (40 * 60)
    assert area.min() >= 0.07 and area.max() <= 1.0
    assert 0.7 < np.median(w / h) < 1.4 and 0.45 < flip.mean() < 0.55
    # Unreachable ratios fall back to the largest central crop with the clipped ratio.
    boxes, _ = _resized_crop_draws(rng, 3, 10, 40, (1.0, 1.0), (1.0, 2.0))
    np.testing.assert_array_equal(boxes, [[0, 10, 10, 20]] * 3)
    # Exact pixels: a quarter-area square box resized 1:1 copies a 4x4 block.
    images = _quadrants(8)
    boxes, _ = _resized_crop_draws(np.random.default_rng(1), 1, 8, 8, (0.25, 0.25), (1.0, 1.0))
    out = _resized_crop(images, np.random.default_rng(1), 4, (0.25, 0.25), (1.0, 1.0))
    t, lft = boxes[0, :2]
    block = images[0, t : t + 4, lft : lft + 4]
    assert np.array_equal(out[0], block) or np.array_equal(out[0], block[:, ::-1])


def test_random_resized_crop_grayscale():
    images = np.random.default_rng(0).integers(0, 256, (3, 12, 10, 1), dtype=np.uint8)
    out = _resized_crop(images, np.random.default_rng(0), 6)
    assert out.shape == (3, 6, 6, 1) and out.dtype == np.uint8


def test_center_crop_resize():
    img = np.zeros((1, 8, 12, 3), np.uint8)
    img[0, 1:7, 3:9] = 200  # the central 6x6 square of an 8x12 image
    out = batching.center_crop_resize(img, 6, crop_fraction=0.75)  # 0.75 * 8 = 6
    assert out.shape == (1, 6, 6, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, 200)
    assert batching.center_crop_resize(img, 4).shape == (1, 4, 4, 3)
    np.testing.assert_array_equal(batching.center_crop_resize(_quadrants(8), 8, 1.0), _quadrants(8))
    with pytest.raises(errors.DataError, match='crop_fraction'):
        batching.center_crop_resize(img, 4, crop_fraction=0.0)


def test_train_batches_random_resized_crop():
    ds = _tiny(n=10, h=12, w=12)
    kw = dict(augment='random_resized_crop', image_size=8, mean=(0.5,), std=(0.5,))
    it = batching.train_batches(ds, 4, seed=1, **kw)
    full = [next(it) for _ in range(5)]
    assert full[0][0].shape == (4, 8, 8, 3) and full[0][0].dtype == np.float32
    resumed = batching.train_batches(ds, 4, seed=1, start_step=3, **kw)
    for step in (3, 4):
        np.testing.assert_array_equal(next(resumed)[0], full[step][0])
    with pytest.raises(errors.DataError, match='image_size 8.*12x12'):
        next(batching.train_batches(ds, 4, seed=1, augment='crop_flip', image_size=8))
    with pytest.raises(errors.DataError, match='augment must be one of'):
        next(batching.train_batches(ds, 4, seed=1, augment='mixup'))


# ---------------------------------------------------------------- per-process shards


@pytest.mark.parametrize('augment', ['crop_flip', 'random_resized_crop', 'none'])
def test_train_batches_process_shards_union_is_global_batch(augment):
    ds = _tiny(n=20, h=6, w=6)
    kw = dict(augment=augment, mean=(0.5,), std=(0.25,), pad=2)
    whole = batching.train_batches(ds, 8, seed=3, **kw)
    shards = [
        batching.train_batches(ds, 8, seed=3, process_index=p, process_count=2, **kw)
        for p in range(2)
    ]
    resumed = batching.train_batches(
        ds, 8, seed=3, start_step=3, process_index=1, process_count=2, **kw
    )
    for step in range(6):  # 2 steps per epoch: crosses two epoch boundaries
        x, y = next(whole)
        (x0, y0), (x1, y1) = next(shards[0]), next(shards[1])
        assert x0.shape == (4, 6, 6, 3) and y0.shape == (4,)
        np.testing.assert_array_equal(np.concatenate([x0, x1]), x)
        np.testing.assert_array_equal(np.concatenate([y0, y1]), y)
        if step >= 3:
            np.testing.assert_array_equal(next(resumed)[0], x1)
    # Disjoint and covering: within an epoch the two shards' examples are 16 distinct ones.
    ids = dataset.Dataset(
        np.zeros((20, 1, 1, 1), np.uint8), np.arange(20, dtype=np.int32), 20, tuple('x' * 20)
    )
    got = []
    for p in range(2):
        it = batching.train_batches(ids, 8, 0, augment='none', process_index=p, process_count=2)
        got.append(np.concatenate([next(it)[1] for _ in range(2)]))  # one epoch
    assert not set(got[0]) & set(got[1]) and len(set(got[0]) | set(got[1])) == 16
    with pytest.raises(errors.DataError, match='batch_size 8 is not divisible by process_count 3'):
        next(batching.train_batches(ds, 8, seed=3, process_index=0, process_count=3))
    with pytest.raises(errors.DataError, match='process_index 2'):
        next(batching.train_batches(ds, 8, seed=3, process_index=2, process_count=2))


def test_eval_batches_process_shards():
    ds = _tiny(n=10)
    whole = list(batching.eval_batches(ds, 4))
    shards = [
        list(batching.eval_batches(ds, 4, process_index=p, process_count=2)) for p in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == len(whole) == 3
    for (x, y, m), (x0, y0, m0), (x1, y1, m1) in zip(whole, *shards):
        assert x0.shape == (2, 4, 4, 3) and m0.dtype == np.bool_
        np.testing.assert_array_equal(np.concatenate([x0, x1]), x)
        np.testing.assert_array_equal(np.concatenate([y0, y1]), y)
        np.testing.assert_array_equal(np.concatenate([m0, m1]), m)
    np.testing.assert_array_equal(shards[0][-1][2], [True, True])  # rows 8, 9 of 0..9
    np.testing.assert_array_equal(shards[1][-1][2], [False, False])  # rows 10, 11: padding
    with pytest.raises(errors.DataError, match='not divisible'):
        next(batching.eval_batches(ds, 4, process_count=3))


# ---------------------------------------------------------------- streamed sources


class _Counting:
    """Wraps a dataset and records every index `read` was asked for."""

    def __init__(self, dataset):
        self.dataset, self.reads = dataset, []
        self.num_classes, self.class_names = dataset.num_classes, dataset.class_names

    def __len__(self):
        return len(self.dataset)

    def read(self, index):
        self.reads.extend(int(i) for i in index)
        return self.dataset.read(index)


def _write_mixed_folder(root, split='train', sizes=((9, 7), (16, 12), (5, 11), (12, 12))):
    """PNGs of several sizes: per class one image per size; returns {path: [H, W, 3] uint8}."""
    rng = np.random.default_rng(1)
    written = {}
    for name in ('dog', 'cat'):
        os.makedirs(os.path.join(root, split, name), exist_ok=True)
        for i, (w, h) in enumerate(sizes):
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            path = os.path.join(root, split, name, f'{i:03d}.png')
            Image.fromarray(img).save(path)
            written[path] = img
    return written


def test_folder_source_reads_on_demand(tmp_path):
    written = _write_mixed_folder(str(tmp_path))
    src = folders.FolderSource(str(tmp_path), 'train')
    assert len(src) == 8 and src.class_names == ('cat', 'dog') and src.num_classes == 2
    images, labels = src.read(np.array([5, 0, 7]))
    assert isinstance(images, list) and labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [1, 0, 1])
    for k, i in enumerate([5, 0, 7]):
        np.testing.assert_array_equal(images[k], written[src.paths[i]])
    assert images[0].shape == (12, 16, 3) and images[1].shape == (7, 9, 3)
    fixed, _ = folders.FolderSource(str(tmp_path), 'train', image_size=6).read(np.arange(8))
    assert {x.shape for x in fixed} == {(6, 6, 3)}
    # Same files as the in-memory loader: same labels, same pixels (uniform folder).
    _write_folder(str(tmp_path / 'u'))
    mem = folders.load_image_folder(str(tmp_path / 'u'), 'train')
    lazy = folders.FolderSource(str(tmp_path / 'u'), 'train')
    kw = dict(augment='crop_flip', pad=2, mean=(0.5,), std=(0.25,))
    for (x, y), (x2, y2) in zip(
        [next(batching.train_batches(mem, 4, 3, **kw))],
        [next(batching.train_batches(lazy, 4, 3, **kw))],
    ):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    with pytest.raises(errors.DataError, match='several sizes.*data.image_size'):
        next(batching.train_batches(src, 4, 0, augment='crop_flip'))
    bad = tmp_path / 'b'
    _write_folder(str(bad))
    open(os.path.join(bad, 'train', 'ant', '001.png'), 'wb').write(b'not an image')
    with pytest.raises(errors.DataError, match='001.png'):
        folders.FolderSource(str(bad), 'train').read(np.arange(9))


def test_streamed_mixed_sizes_train_and_eval(tmp_path):
    _write_mixed_folder(str(tmp_path))
    src = folders.FolderSource(str(tmp_path), 'train')
    kw = dict(augment='random_resized_crop', image_size=8, mean=(0.5,), std=(0.25,))
    full = [next(it) for it in [batching.train_batches(src, 4, 1, **kw)] for _ in range(5)]
    assert full[0][0].shape == (4, 8, 8, 3) and full[0][0].dtype == np.float32
    resumed = batching.train_batches(src, 4, 1, start_step=3, **kw)
    for step in (3, 4):
        np.testing.assert_array_equal(next(resumed)[0], full[step][0])
    # Two processes: each reads only its own rows; together they are the 1-process batch.
    counted = [_Counting(src) for _ in range(2)]
    shards = [
        batching.train_batches(counted[p], 4, 1, process_index=p, process_count=2, **kw)
        for p in range(2)
    ]
    for step in range(4):  # two epochs of 2 steps
        (x0, y0), (x1, y1) = next(shards[0]), next(shards[1])
        np.testing.assert_array_equal(np.concatenate([x0, x1]), full[step][0])
        np.testing.assert_array_equal(np.concatenate([y0, y1]), full[step][1])
    first_epoch = [set(c.reads[:4]) for c in counted]  # 2 steps x 2 rows each
    assert not first_epoch[0] & first_epoch[1] and first_epoch[0] | first_epoch[1] == set(range(8))
    assert len(counted[0].reads) == len(counted[1].reads) == 8
    # Evaluation: the central square, resized; processes split each batch.
    whole = list(batching.eval_batches(src, 6, crop='center', image_size=4, crop_fraction=1.0))
    assert [b[0].shape for b in whole] == [(6, 4, 4, 3)] * 2
    np.testing.assert_array_equal(whole[1][2], [True, True, False, False, False, False])
    images, _ = src.read(np.arange(8))
    want = batching.normalise(batching.center_crop_resize(images, 4, 1.0), (0.0,), (1.0,))
    np.testing.assert_allclose(np.concatenate([x[m] for x, _, m in whole]), want)
    parts = [
        list(batching.eval_batches(src, 6, process_index=p, process_count=2, crop='center',
                               image_size=4, crop_fraction=1.0))
        for p in range(2)
    ]  # fmt: skip
    for (x, y, m), (x0, y0, m0), (x1, y1, m1) in zip(whole, *parts):
        np.testing.assert_array_equal(np.concatenate([x0, x1]), x)
        np.testing.assert_array_equal(np.concatenate([y0, y1]), y)
        np.testing.assert_array_equal(np.concatenate([m0, m1]), m)
    assert not parts[1][1][2].any()  # rows 9-11 of 8: all padding, still one batch
    with pytest.raises(errors.DataError, match='several sizes'):
        next(batching.eval_batches(src, 4))
    with pytest.raises(errors.DataError, match='needs image_size'):
        next(batching.eval_batches(src, 4, crop='center'))


@pytest.mark.parametrize(
    'name,num_classes', [('imagenet2012', 1000), ('imagenette', 10), ('cifar10', 10)]
)
def test_tfds_source_streams(name, num_classes, tmp_path):
    tfds = pytest.importorskip('tensorflow_datasets')
    with tfds.testing.mock_data(num_examples=12):
        src = sources.open_dataset(name=name, split='train', data_dir=str(tmp_path))
        assert isinstance(src, tfds_reader.TfdsSource) and len(src) == 12
        assert src.num_classes == num_classes
        images, labels = src.read(np.array([3, 1]))
        assert all(x.dtype == np.uint8 and x.ndim == 3 and x.shape[-1] == 3 for x in images)
        assert labels.dtype == np.int32 and ((0 <= labels) & (labels < num_classes)).all()
        it = batching.train_batches(src, 4, 0, augment='random_resized_crop', image_size=16)
        x, y = next(it)
        assert x.shape == (4, 16, 16, 3) and y.shape == (4,)
        x2, y2 = next(
            batching.train_batches(src, 4, 0, augment='random_resized_crop', image_size=16)
        )
        np.testing.assert_array_equal(x, x2)
        batches = list(batching.eval_batches(src, 5, crop='center', image_size=16))
        assert len(batches) == 3 and batches[-1][2].sum() == 2
        if name == 'cifar10':  # fixed-size images: the same as the in-memory loader
            mem = tfds_reader.load_tfds(name, 'train', data_dir=str(tmp_path))
            lazy, lazy_labels = src.read(np.arange(12))
            np.testing.assert_array_equal(np.stack(lazy), mem.images)
            np.testing.assert_array_equal(lazy_labels, mem.labels)


def test_head():
    ds = _tiny(n=10)
    assert len(dataset.head(ds, 4)) == 4 and dataset.head(ds, 20) is ds
    src = _Counting(ds)
    view = dataset.head(src, 3)
    assert len(view) == 3
    np.testing.assert_array_equal(view.read(np.array([2]))[1], ds.labels[[2]])
    with pytest.raises(IndexError):
        view.read(np.array([3]))


# ---------------------------------------------------------------- prefetch


def test_prefetch_order_errors_and_stops():
    assert list(threads.prefetch(iter(range(5)), size=2)) == list(range(5))

    def failing():
        yield 1
        raise RuntimeError('boom')

    it = threads.prefetch(failing())
    assert next(it) == 1
    with pytest.raises(RuntimeError, match='boom'):
        next(it)

    before = threading.active_count()
    it = threads.prefetch(iter(range(10**9)), size=2)  # an endless producer
    next(it)
    assert threading.active_count() == before + 1
    it.close()  # what dropping the iterator does
    deadline = time.time() + 2
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.02)
    assert threading.active_count() == before

"""Tests for nrnp.data.cifar and the CIFAR routing in nrnp.data.sources: generated binary
archives in the official layouts, served from 127.0.0.1, read back exactly."""

import hashlib
import io
import os
import tarfile
import time

import numpy as np
import pytest

from nrnp import errors
from nrnp.configs import default
from nrnp.data import cifar, sources, tfds_reader

C10_NAMES = [f'class{i}' for i in range(10)]
C100_NAMES = [f'fine{i:02d}' for i in range(100)]


def _images(rng, n):
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # [N, H, W, C]


def _records(labels, images):
    """Binary records: label bytes [N, L] then CHW pixels."""
    chw = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # [N, 3072]
    return np.concatenate([labels.astype(np.uint8), chw], 1).tobytes()


def _tar(members: dict) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w:gz') as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def cifar100_archive(seed=0, n_train=300, n_test=120):
    """(archive bytes, {split: (images, fine labels)}) in the cifar-100-binary layout."""
    rng = np.random.default_rng(seed)
    splits, members = {}, {}
    for split, n in (('train', n_train), ('test', n_test)):
        images, fine = _images(rng, n), rng.integers(0, 100, n)
        coarse = rng.integers(0, 20, n)
        members[f'cifar-100-binary/{split}.bin'] = _records(np.stack([coarse, fine], 1), images)
        splits[split] = (images, fine)
    members['cifar-100-binary/coarse_label_names.txt'] = '\n'.join(map(str, range(20))).encode()
    members['cifar-100-binary/fine_label_names.txt'] = ('\n'.join(C100_NAMES) + '\n\n').encode()
    return _tar(members), splits


def cifar10_archive(seed=1, per_batch=40, n_test=50):
    rng = np.random.default_rng(seed)
    members = {'cifar-10-batches-bin/batches.meta.txt': ('\n'.join(C10_NAMES) + '\n').encode()}
    train_images, train_labels = [], []
    for i in range(1, 6):
        images, labels = _images(rng, per_batch), rng.integers(0, 10, per_batch)
        members[f'cifar-10-batches-bin/data_batch_{i}.bin'] = _records(labels[:, None], images)
        train_images.append(images)
        train_labels.append(labels)
    images, labels = _images(rng, n_test), rng.integers(0, 10, n_test)
    members['cifar-10-batches-bin/test_batch.bin'] = _records(labels[:, None], images)
    members['cifar-10-batches-bin/readme.html'] = b'<html></html>'
    splits = {
        'train': (np.concatenate(train_images), np.concatenate(train_labels)),
        'test': (images, labels),
    }
    return _tar(members), splits


def _assert_split(ds, images, labels, names):
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int32
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.class_names == tuple(names) and ds.num_classes == len(names)


def test_cifar100_is_downloaded_verified_read_exactly_and_cached(
    http_server, tmp_path, monkeypatch
):
    archive, splits = cifar100_archive()
    http_server.files['mirror/cifar-100-binary.tar.gz'] = archive
    kw = dict(
        name='cifar100',
        data_dir=str(tmp_path),
        download_url=http_server.url('mirror/cifar-100-binary.tar.gz'),
        download_sha256=hashlib.sha256(archive).hexdigest(),
    )
    lines = []
    test = sources.load_dataset(split='test', log=lines.append, **kw)
    _assert_split(test, *splits['test'], C100_NAMES)
    assert any('MB/s' in line for line in lines)
    downloaded = tmp_path / 'downloads' / 'cifar-100-binary.tar.gz'
    assert downloaded.read_bytes() == archive
    assert sorted(os.listdir(tmp_path / 'downloads')) == [
        'cifar-100-binary.tar.gz',
        'cifar-100-binary.tar.gz.sha256.json',
        'cifar-100-binary.test.npz',
        'cifar-100-binary.train.npz',
    ]
    monkeypatch.setattr(cifar, '_decode', lambda *a: pytest.fail('decoded twice'))
    train = sources.load_dataset(split='train', download=False, **kw)  # cache, no network
    _assert_split(train, *splits['train'], C100_NAMES)
    assert len(http_server.requests) == 1
    head = sources.load_dataset(split='train[:10]', download=False, **kw)
    _assert_split(head, splits['train'][0][:10], splits['train'][1][:10], C100_NAMES)
    tail = sources.open_dataset(split='test[50%:]', download=False, image_size=16, **kw)
    assert tail.images.shape == (60, 16, 16, 3)  # 120 images, the second half, resized


def test_cifar10_from_the_manual_directory_without_network(tmp_path):
    archive, splits = cifar10_archive()
    manual = tmp_path / 'downloads' / 'manual'
    manual.mkdir(parents=True)
    (manual / 'cifar-10-binary.tar.gz').write_bytes(archive)
    sha = hashlib.sha256(archive).hexdigest()
    path = cifar.locate_archive(
        'cifar10', str(tmp_path), download=False, url='http://unused.invalid/', sha256=sha
    )
    assert path == str(manual / 'cifar-10-binary.tar.gz')
    for split in ('train', 'test'):
        _assert_split(cifar.load_cifar('cifar10', split, path), *splits[split], C10_NAMES)
    with pytest.raises(errors.DownloadError, match=r'(?s)has sha256 .*expected 0000'):
        cifar.locate_archive('cifar10', str(tmp_path), download=False, sha256='0' * 64)


def test_official_archives_come_from_tfds_url_checksums():
    info = cifar.archive_info('cifar100')
    assert info.url == 'https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz'
    assert info.size == 168513733 and info.sha256.startswith('58a81ae1')
    assert cifar.archive_info('cifar10').sha256 == cifar._FALLBACK['cifar10'].sha256


def test_missing_archive_with_downloads_disabled(tmp_path):
    start = time.monotonic()
    with pytest.raises(errors.DownloadError) as info:
        sources.load_dataset(name='cifar10', split='test', data_dir=str(tmp_path), download=False)
    assert time.monotonic() - start < 5
    message = str(info.value)
    for part in (
        'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz',
        '170052171 bytes',
        'c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd',
        f'put it at: {tmp_path}/downloads/cifar-10-binary.tar.gz',
        '--config.data.image_folder=DIR',
        '--config.data.download=True',
    ):
        assert part in message
    assert os.listdir(tmp_path) == []


def test_the_job_passes_the_download_fields(http_server, tmp_path):
    from nrnp.pipeline import cli_data

    archive, splits = cifar100_archive(n_train=20, n_test=30)
    http_server.files['c100.tgz'] = archive
    c = default.get_config('tiny')
    c.data.name, c.data.data_dir = 'cifar100', str(tmp_path / 'data')
    c.data.download_url = http_server.url('c100.tgz')
    c.data.download_sha256 = hashlib.sha256(archive).hexdigest()
    c.data.image_size = 32
    test = cli_data.load_split(c, 'test', str(tmp_path), crops=False)
    _assert_split(test, *splits['test'], C100_NAMES)
    c.data.download, c.data.data_dir = False, str(tmp_path / 'elsewhere')
    with pytest.raises(errors.DownloadError, match='downloads are disabled'):
        cli_data.load_split(c, 'test', str(tmp_path), crops=False)


def test_foreign_archives_are_named(tmp_path):
    python = tmp_path / 'python.tar.gz'
    python.write_bytes(_tar({'cifar-10-batches-py/data_batch_1': b'pickle'}))
    with pytest.raises(errors.DataError, match=r'python \(pickle\) version.*cifar-10-binary'):
        cifar.load_cifar('cifar10', 'test', str(python))
    partial = tmp_path / 'partial.tar.gz'
    partial.write_bytes(_tar({'cifar-100-binary/test.bin': b'x' * 3074}))
    with pytest.raises(errors.DataError, match=r'lacks cifar-100-binary/fine_label_names.txt'):
        cifar.load_cifar('cifar100', 'test', str(partial))
    junk = tmp_path / 'junk.tar.gz'
    junk.write_bytes(b'\x1f\x8b\x08 not really gzip')
    with pytest.raises(errors.DataError, match='junk.tar.gz: unreadable archive'):
        cifar.load_cifar('cifar100', 'test', str(junk))
    archive, _ = cifar100_archive(n_train=2, n_test=2)
    good = tmp_path / 'good.tar.gz'
    good.write_bytes(archive)
    with pytest.raises(errors.DataError, match='splits train and test'):
        cifar.load_cifar('cifar100', 'validation', str(good))


def test_tfds_precedence_and_imagenet_instructions(tmp_path):
    tfds = pytest.importorskip('tensorflow_datasets')
    assert not tfds_reader.is_prepared('cifar10', str(tmp_path))
    with tfds.testing.mock_data(num_examples=7):  # a prepared TFDS copy wins over archives
        assert tfds_reader.is_prepared('cifar100', str(tmp_path))
        assert len(sources.load_dataset(name='cifar100', split='test', download=False)) == 7
    start = time.monotonic()
    with pytest.raises(errors.DataError) as info:
        sources.load_dataset(name='imagenet2012', split='validation', data_dir=str(tmp_path))
    assert time.monotonic() - start < 5
    message = str(info.value)
    for part in (
        'never downloads ImageNet',
        'ILSVRC2012_img_train.tar',
        'image-net.org',
        f'{tmp_path}/downloads/manual',
        "file_format='array_record'",
        '--config.data.data_dir',
        '--config.data.image_folder',
    ):
        assert part in message
    assert not isinstance(info.value, errors.DownloadError)

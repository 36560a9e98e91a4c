"""The decoded-image cache shared by workdirs (`nrnp.data.image_cache`, issue 25): keyed by
the folder's content, reused by a second workdir, rebuilt for a changed folder."""

import os
import re
import shutil
import time

import numpy as np
from PIL import Image

from nrnp.configs import default
from nrnp.data import folders, image_cache
from nrnp.pipeline import cli_data


def _folder(root, count=4, seed=0):
    rng = np.random.default_rng(seed)
    for split in ('train', 'test'):
        for name in ('a', 'b'):
            os.makedirs(root / split / name)
            for i in range(count):
                image = rng.integers(0, 256, (8, 8, 3), np.uint8)
                Image.fromarray(image).save(root / split / name / f'{i}.png')


def _config(root):
    c = default.get_config('tiny')
    c.data.image_folder, c.data.channels, c.data.num_classes = str(root), 3, 2
    return c


def _counting_decoder(monkeypatch):
    decoded = []
    real = folders._decode

    def counting(path, *args):
        decoded.append(path)
        return real(path, *args)

    monkeypatch.setattr(folders, '_decode', counting)
    return decoded


def test_a_second_workdir_reads_the_images_the_first_decoded(tmp_path, monkeypatch):
    monkeypatch.setenv('NRNP_CACHE', str(tmp_path / 'user_cache'))
    root = tmp_path / 'imgs'
    _folder(root)
    decoded = _counting_decoder(monkeypatch)
    config = _config(root)
    first_log, second_log = [], []
    first = cli_data.load_split(config, 'train', str(tmp_path / 'w1'), False, first_log.append)
    assert sorted(set(decoded)) == sorted(str(p) for p in (root / 'train').rglob('*.png'))
    count = len(decoded)
    (entry,) = os.listdir(tmp_path / 'user_cache' / 'images')
    path = tmp_path / 'user_cache' / 'images' / entry
    decoding = re.escape(f'{root}/train: 8 images decoded in ') + r'\d+\.\d s, cached in '
    assert len(first_log) == 1 and re.fullmatch(decoding + re.escape(str(path)), first_log[0])
    second = cli_data.load_split(config, 'train', str(tmp_path / 'w2'), False, second_log.append)
    assert len(decoded) == count  # nothing decoded for the second workdir
    assert second_log == [f'{root}/train: 8 images reused from the decoded-image cache {path}']
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert not (tmp_path / 'w1').exists() and not (tmp_path / 'w2').exists()  # nothing per run

    # Keyed by content: a moved copy that keeps modification times is the same entry ...
    moved = tmp_path / 'elsewhere' / 'renamed'
    shutil.copytree(root, moved)  # copy2: contents and modification times
    cli_data.load_split(_config(moved), 'train', str(tmp_path / 'w3'), False, print)
    assert len(decoded) == count and os.listdir(path.parent) == [entry]
    # ... and a changed image makes a new one (the old stays for folders still like it).
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / 'train' / 'b' / '3.png')
    changed = cli_data.load_split(config, 'train', str(tmp_path / 'w4'), False, print)
    assert len(decoded) == 2 * count and len(os.listdir(path.parent)) == 2
    assert (changed.images[-1] == 0).all() and (changed.images[:-1] == first.images[:-1]).all()


def test_the_key_covers_every_file_and_the_decoding_settings(tmp_path):
    root = tmp_path / 'imgs'
    _folder(root)
    paths = sorted(str(p) for p in (root / 'train').rglob('*.png'))
    key = image_cache.content_key(str(root), paths, None, 3)
    assert image_cache.content_key(str(root), paths, None, 3) == key  # deterministic
    assert image_cache.content_key(str(root), paths, 8, 3) != key  # resized
    assert image_cache.content_key(str(root), paths, None, 1) != key  # grey
    assert image_cache.content_key(str(root), paths[:-1], None, 3) != key  # one file less
    os.utime(paths[0], ns=(1, 1))
    assert image_cache.content_key(str(root), paths, None, 3) != key  # touched
    os.rename(paths[1], paths[1] + '.png')
    renamed = [*paths[:1], paths[1] + '.png', *paths[2:]]
    assert image_cache.content_key(str(root), renamed, None, 3) != key


def test_an_unwritable_cache_is_a_warning_and_the_images_still_load(tmp_path):
    root = tmp_path / 'imgs'
    _folder(root)
    not_a_dir = tmp_path / 'file'
    not_a_dir.write_text('x')
    logs = []
    ds = folders.load_image_folder(str(root), 'test', cache_dir=str(not_a_dir), log=logs.append)
    assert ds.images.shape == (8, 8, 8, 3)
    assert len(logs) == 1 and logs[0].startswith('warning: cannot write the decoded-image cache')
    assert f'{not_a_dir} is a file, not a directory' in logs[0] and 'NRNP_CACHE' in logs[0]


def test_only_old_temporary_files_are_removed(tmp_path):
    old, young, entry = (tmp_path / n for n in ('a.npz.tmp', 'b.npz.tmp', 'c.npz'))
    for path in (old, young, entry):
        path.write_bytes(b'x')
    long_ago = time.time() - image_cache.STALE_TMP_S - 60
    os.utime(old, (long_ago, long_ago))
    os.utime(entry, (long_ago, long_ago))
    assert image_cache.remove_stale(str(tmp_path)) == ['a.npz.tmp']
    assert sorted(os.listdir(tmp_path)) == ['b.npz.tmp', 'c.npz']  # a writer may own b


def test_the_default_place_is_under_nrnp_cache(monkeypatch, tmp_path):
    monkeypatch.setenv('NRNP_CACHE', str(tmp_path))
    assert image_cache.default_dir() == str(tmp_path / 'images')

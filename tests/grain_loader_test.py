"""Streamed batches through grain's worker processes equal the in-process pipeline's."""

import numpy as np
import pytest
from PIL import Image

from nrnp.data import batching, folders, grain_loader

pytestmark = pytest.mark.skipif(not grain_loader.available(), reason='grain is not installed')


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp('grain') / 'imgs'
    rng = np.random.default_rng(0)
    for split in ('train', 'test'):
        for name in ('a', 'b', 'c'):
            (root / split / name).mkdir(parents=True)
            for i in range(7):
                h, w = rng.integers(12, 30, 2)
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f'{i}.png')
    return str(root)


SETTINGS = dict(
    batch_size=6,
    seed=4,
    augment='random_resized_crop',
    mean=(0.5,),
    std=(0.25,),
    image_size=10,
)


@pytest.mark.parametrize('workers', [0, 1])
def test_train_batches_equal_the_thread_pipeline_and_resume(folder, workers):
    source = folders.FolderSource(folder, 'train')
    stream = grain_loader.train_batches(source, start_step=3, workers=workers, **SETTINGS)
    got = [next(stream) for _ in range(5)]  # steps 3..7, crossing an epoch (21 // 6 = 3)
    stream.close()
    expected = batching.train_batches(source, start_step=3, **SETTINGS)
    for (x, y), (x2, y2) in zip(got, [next(expected) for _ in range(5)]):
        assert x.shape == (6, 10, 10, 3) and x.dtype == np.float32
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)


def test_process_shares_and_eval_batches(folder):
    source = folders.FolderSource(folder, 'test', image_size=8)
    kw = dict(mean=(0.5,), std=(0.25,))
    got = list(grain_loader.eval_batches(source, workers=1, batch_size=4, **kw))
    expected = list(batching.eval_batches(source, 4, **kw))
    assert len(got) == len(expected) == 6  # 21 images: the last batch padded
    for a, b in zip(got, expected):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    train = folders.FolderSource(folder, 'train')
    halves = [
        next(
            grain_loader.train_batches(
                train, workers=0, process_index=p, process_count=2, **SETTINGS
            )
        )
        for p in range(2)
    ]
    whole = next(batching.train_batches(train, **SETTINGS))
    np.testing.assert_array_equal(np.concatenate([h[0] for h in halves]), whole[0])

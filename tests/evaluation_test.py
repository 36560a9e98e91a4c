"""Top-1 counting: masks, padded last batches, streamed batches equal to in-memory arrays."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from nrnp.data import batching, dataset
from nrnp.training import evaluation, sharding


class _Argmax(nn.Module):
    """Predicts class = round(mean pixel value) of a [B, H, W, 1] batch (no parameters)."""

    @nn.compact
    def __call__(self, x, train=False):
        del train
        cls = np.arange(4, dtype=np.float32)
        return -((x.mean(axis=(1, 2, 3))[:, None] - cls) ** 2)  # [B, 4] logits


def test_top1_masks_padding_and_matches_streamed_batches():
    model = _Argmax()
    labels = np.array([0, 1, 2, 3, 3, 2, 1], np.int32)
    preds = np.array([0, 1, 2, 0, 3, 2, 3])  # rows 3 and 6 wrong: 5 of 7 right
    images = np.broadcast_to(preds[:, None, None, None], (7, 2, 2, 1)).astype(np.float32)
    want = 100.0 * 5 / 7
    assert evaluation.top1(model, {}, images, labels, batch_size=3) == pytest.approx(want)
    mesh = sharding.make_mesh()
    assert evaluation.top1(model, {}, images, labels, batch_size=3, mesh=mesh) == pytest.approx(
        want
    )
    ds = dataset.Dataset(images.astype(np.uint8), labels, 4, tuple('abcd'))
    batches = batching.eval_batches(ds, 4, mean=(0.0,), std=(1 / 255,))  # x / 255 * 255 = x
    assert evaluation.top1_batches(model, {}, batches, mesh) == pytest.approx(want)
    masked = [(images[:4], labels[:4], np.array([True, True, True, False]))]
    assert evaluation.top1_batches(model, {}, masked) == pytest.approx(100.0)
    with pytest.raises(ValueError, match='at least one image'):
        evaluation.top1_batches(model, {}, [(images[:2], labels[:2], np.zeros(2, bool))])
    assert evaluation.round_batch(5, mesh) % jax.device_count() == 0

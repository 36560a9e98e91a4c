"""Run checkpoints verify on restore: a damaged newest checkpoint is set aside (renamed, never
deleted) with one warning line, and the run resumes from the newest good one."""

import glob
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from nrnp import files
from nrnp.training import checkpoints


def _saved(directory, steps=(1, 2)):
    ckpt = checkpoints.RunCheckpointer(str(directory), log=lambda m: None)
    for step in steps:
        ckpt.save(step, {'w': jnp.arange(64.0) * step}, {'step': step})
    ckpt.close()


def _biggest_file(step_dir):
    found = [p for p in glob.glob(f'{step_dir}/**/*', recursive=True) if os.path.isfile(p)]
    found = [p for p in found if not p.endswith(files.CHECKSUMS)]
    return max(found, key=os.path.getsize)


def _flip_byte(path):
    data = bytearray(open(path, 'rb').read())
    data[len(data) // 2] ^= 1
    open(path, 'wb').write(bytes(data))


DAMAGE = {
    'flipped byte': lambda d: _flip_byte(_biggest_file(d)),
    'truncated': lambda d: os.truncate(_biggest_file(d), 10),
    'deleted file': lambda d: os.remove(_biggest_file(d)),
    'empty _METADATA': lambda d: open(f'{d}/arrays/_METADATA', 'w').close(),
    # Without its checksums a flipped byte would go unseen: such a step is never restored.
    'no checksums, flipped byte': lambda d: (
        os.remove(f'{d}/{files.CHECKSUMS}'),
        _flip_byte(_biggest_file(d)),
    ),
}


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_older_one(tmp_path, damage):
    _saved(tmp_path)
    assert files.verify(str(tmp_path / '2')) == ''  # sealed with its checksums
    DAMAGE[damage](tmp_path / '2')
    logs = []
    ckpt = checkpoints.RunCheckpointer(str(tmp_path), log=logs.append)
    arrays, meta = ckpt.restore_latest({'w': jnp.zeros(64)})
    assert meta == {'step': 1}
    np.testing.assert_array_equal(arrays['w'], np.arange(64.0))
    assert len(logs) == 1 and 'checkpoint 2 is damaged' in logs[0], logs
    assert 'trying checkpoint 1' in logs[0]
    aside = glob.glob(str(tmp_path / '2.corrupt-*'))
    assert len(aside) == 1 and not (tmp_path / '2').exists()  # renamed, not deleted
    assert ckpt.latest_step() == 1
    ckpt.save(3, {'w': jnp.ones(64)}, {'step': 3})  # a set-aside step does not upset orbax
    assert ckpt.manager.all_steps() == [1, 3]
    ckpt.close()


def test_no_good_checkpoint_left_starts_over_and_intact_mismatch_is_refused(tmp_path):
    _saved(tmp_path)
    for step in (1, 2):
        _flip_byte(_biggest_file(tmp_path / str(step)))
    logs = []
    ckpt = checkpoints.RunCheckpointer(str(tmp_path), log=logs.append)
    assert ckpt.restore_latest({'w': jnp.zeros(64)}) is None
    assert len(logs) == 2 and 'no older checkpoint: starting over' in logs[1], logs
    ckpt.close()
    other = tmp_path / 'other'
    _saved(other, steps=(1,))
    ckpt = checkpoints.RunCheckpointer(str(other), log=logs.append)
    with pytest.raises(ValueError, match='is intact but does not match this run'):
        ckpt.restore_latest({'w': jnp.zeros(65)})
    assert (other / '1').is_dir()  # an intact checkpoint is never set aside
    ckpt.close()


def test_checksums_cover_every_file_and_restores_leave_them_valid(tmp_path):
    _saved(tmp_path, steps=(1,))
    recorded = json.loads((tmp_path / '1' / files.CHECKSUMS).read_text())['sha256']
    on_disk = {
        os.path.relpath(p, tmp_path / '1')
        for p in glob.glob(str(tmp_path / '1' / '**' / '*'), recursive=True)
        if os.path.isfile(p)
    }
    assert set(recorded) == on_disk - {files.CHECKSUMS}
    ckpt = checkpoints.RunCheckpointer(str(tmp_path), log=lambda m: None)
    ckpt.restore_latest({'w': jnp.zeros(64)})
    ckpt.close()
    assert files.verify(str(tmp_path / '1')) == ''
    os.remove(tmp_path / '1' / files.CHECKSUMS)  # never restored unverified
    assert 'nrnp_checksums.json is missing' in files.verify(str(tmp_path / '1'))

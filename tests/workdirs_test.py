"""Workdir ownership: one lock holder at a time (dropped when its process dies however it
ends), stale temporary files removed under the lock, places that cannot hold a workdir."""

import os
import signal
import subprocess
import sys

import pytest

from nrnp import errors
from nrnp.pipeline import locks, workdirs

pytestmark = pytest.mark.slow  # runs whole compressions in workdirs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FP = {'nrnp': 'x', 'config': {'seed': 0}, 'inputs': {}}


def test_a_held_workdir_is_refused_naming_the_owner(tmp_path):
    first = workdirs.claim(str(tmp_path), FP)
    assert first.status == 'new' and first.lock.held
    with pytest.raises(
        errors.WorkdirError, match=rf'in use by another nrnp run \(pid {os.getpid()}'
    ):
        workdirs.claim(str(tmp_path), FP)  # another descriptor: refused, even in-process
    with pytest.raises(errors.WorkdirError, match='pass another workdir='):
        workdirs.claim(str(tmp_path), FP, style='library')
    first.release()
    again = workdirs.claim(str(tmp_path), FP)  # free again; no result yet: a new start
    assert again.status == 'new' and again.lock.held
    again.release()


def test_the_lock_dies_with_its_process(tmp_path):
    code = (
        'import sys, time\n'
        'from nrnp.pipeline import locks\n'
        'lock = locks.WorkdirLock(sys.argv[1])\n'
        "print('locked', flush=True)\n"
        'time.sleep(60)\n'
    )
    env = {**os.environ, 'PYTHONPATH': REPO}
    proc = subprocess.Popen(
        [sys.executable, '-c', code, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == 'locked'
    with pytest.raises(errors.WorkdirError, match=rf'pid {proc.pid} on .* started .* s ago'):
        locks.WorkdirLock(str(tmp_path))
    proc.send_signal(signal.SIGKILL)  # no clean-up at all
    proc.wait(timeout=30)
    locks.WorkdirLock(str(tmp_path)).release()  # free again: no stale lock


def test_stale_temporary_files_are_removed_under_the_lock(tmp_path):
    stale = [
        'cache/tmpab12.npz.tmp',
        'checkpoints/10.orbax-checkpoint-tmp-1733400000',
        'teacher_checkpoints/3.orbax-checkpoint-tmp',
        '.report.json.tmp-4242',
    ]
    kept = ['cache/imagefolder-x-test-0123.npz', 'teacher_checkpoints/2/x', 'notes.txt']
    for name in stale + kept:
        os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
        if 'orbax-checkpoint-tmp' in name:
            os.makedirs(tmp_path / name)
        else:
            (tmp_path / name).write_text('x')
    claim = workdirs.claim(str(tmp_path), FP)
    claim.release()
    assert sorted(claim.removed) == sorted(stale)
    assert not any((tmp_path / name).exists() for name in stale)
    assert all((tmp_path / name).exists() for name in kept)
    (tmp_path / 'cache/tmpcd34.npz.tmp').write_text('x')  # --overwrite cleans them too
    claim = workdirs.claim(str(tmp_path), FP, overwrite=True)
    claim.release()
    assert claim.removed == ['cache/tmpcd34.npz.tmp']
    assert (tmp_path / 'cache/imagefolder-x-test-0123.npz').exists()  # the cache stays
    assert (tmp_path / 'notes.txt').exists()  # not nrnp's


def test_an_empty_checkpoints_dir_is_not_a_result(tmp_path):
    """A run that failed before its first checkpoint (NaN at step 1) leaves run.json and an
    empty checkpoints/: the corrected command must start, not be refused."""
    workdirs.claim(str(tmp_path), FP).release()
    os.makedirs(tmp_path / 'checkpoints' / '7.orbax-checkpoint-tmp')
    corrected = {**FP, 'config': {'seed': 0, 'lr': 1e-3}}
    claim = workdirs.claim(str(tmp_path), corrected)
    claim.release()
    assert claim.status == 'new'
    os.makedirs(tmp_path / 'checkpoints' / '5')  # a real step: now it is a result
    with pytest.raises(errors.WorkdirError, match='holds another run'):
        workdirs.claim(str(tmp_path), FP)


def test_places_that_cannot_hold_a_workdir_are_named(tmp_path):
    parent = tmp_path / 'afile'
    parent.write_text('x')
    fix = locks.location_fix('cli')
    with pytest.raises(errors.StorageError, match=rf'{parent} is a file, not a directory'):
        locks.check_location(str(parent / 'w'), fix)
    with pytest.raises(errors.StorageError, match='a virtual file system such as /proc'):
        locks.check_location('/proc/nrnp/w', fix)
    locks.check_location(str(tmp_path / 'a' / 'b'), fix)
    assert sorted(os.listdir(tmp_path)) == ['afile']  # the probe leaves nothing behind


def test_processes_starting_together_do_not_trip_over_each_others_directories(
    tmp_path, monkeypatch
):
    # Two processes of one run (tests/multiprocess_test.py) probe the same missing workdir:
    # the other makes it between our looking and our mkdir, then removes it (its probe
    # done) before our probe file is written.
    mkdir, calls = os.mkdir, []

    def racing_mkdir(path, *args):
        calls.append(path)
        if len(calls) == 1:
            mkdir(path)  # the other process's
            raise FileExistsError(17, 'File exists', path)
        return mkdir(path, *args)

    real_open = open

    def racing_open(path, *args, **kwargs):
        if str(path).endswith(f'.probe-{os.getpid()}') and len(calls) == 1:
            os.rmdir(os.path.dirname(path))  # the other removes what it made
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(locks.os, 'mkdir', racing_mkdir)
    monkeypatch.setattr('builtins.open', racing_open)
    workdir = tmp_path / 'w'
    locks.check_location(str(workdir), locks.location_fix('cli'))  # no StorageError
    assert calls == [str(workdir), str(workdir)]  # made again on the second try
    assert os.listdir(tmp_path) == []  # and removed: it was ours then


def test_a_change_of_later_phases_only_branches_any_other_is_refused(tmp_path):
    config = {'seed': 0, 'predictor.hidden': 16, 'predictor.quantize_fraction': 0.1}
    config.update({'distill.steps': 10, 'recalibrate.images': 256, 'keep': 'best'})
    workdirs.claim(str(tmp_path), {**FP, 'config': config}).release()
    os.makedirs(tmp_path / 'checkpoints' / '5')  # a result: the workdir holds a run
    later = {'distill.steps': 0, 'predictor.quantize_fraction': 0.0, 'keep': 'last'}
    claim = workdirs.claim(str(tmp_path), {**FP, 'config': {**config, **later}})
    claim.release()
    assert claim.status == 'branch'
    assert claim.changed == [
        'distill.steps: 10 -> 0',
        "keep: 'best' -> 'last'",
        'predictor.quantize_fraction: 0.1 -> 0.0',
    ]
    with pytest.raises(errors.WorkdirError, match=r'predictor.hidden: 16 -> 32'):
        workdirs.claim(str(tmp_path), {**FP, 'config': {**config, 'predictor.hidden': 32}})

"""Faults a run must survive, through the real command line (issue 19): a second run in the
same workdir, signals outside the training loop, damaged checkpoints, a full disk, places
that cannot hold a workdir, broken config files, a C locale, a run that only measures.

The read-only and full disks are a read-only bind mount and a small tmpfs: those tests run
as root (they skip otherwise)."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, nrnp_cli
from PIL import Image

import nrnp
from nrnp import errors, files
from nrnp.data import folders

pytestmark = pytest.mark.slow  # runs whole compressions and CLI processes

TINY = '--config=default:tiny'
# Four reconstruction steps, a checkpoint every two: checkpoints 2 and 4, no distillation.
SHORT = (
    '--config.reconstruct.steps=4',
    '--config.checkpoint_every=2',
    '--config.log_every=2',
    '--config.distill.steps=0',
    '--config.kernels.ordering=none',
)


def _one_error_line(output: str, phrase: str) -> str:
    lines = [x for x in output.splitlines() if x.startswith('nrnp: ')]
    assert len(lines) == 1 and phrase in lines[0], output
    assert 'Traceback' not in output and 'ERROR:absl' not in output, output
    return lines[0]


def _predictor(workdir):
    with np.load(os.path.join(workdir, 'compressed.nrnp')) as f:
        return {k: f[k] for k in f.files if k.startswith('predictor')}


@pytest.fixture(scope='module')
def measured(tmp_path_factory):
    """A run without any step: it trains a 2-step teacher, then only measures."""
    workdir = tmp_path_factory.mktemp('faults') / 'measure'
    flags = ('--config.teacher.train_steps=2', '--config.reconstruct.steps=0')
    code, output, _ = nrnp_cli(TINY, f'--workdir={workdir}', *flags, '--config.distill.steps=0')
    assert code == 0, output
    return workdir, output


def test_zero_steps_measure_and_report(measured):
    workdir, output = measured
    report = json.loads((workdir / 'report.json').read_text())
    assert [p['kind'] for p in report['phases']] == ['init']
    assert 0 <= report['top1_reconstructed'] <= 100  # the untrained predictor's
    assert report['top1_reconstructed'] == report['phases'][0]['top1']
    assert f'rebuilt {report["top1_reconstructed"]:.2f} %' in output, output
    assert (workdir / 'compressed.nrnp').is_file() and 'no steps' in output


@pytest.fixture(scope='module')
def resumed(measured, tmp_path_factory):
    """Ctrl-C while the artefact is written after the final checkpoint, then the same command
    with the newest checkpoint damaged: (workdir, flags, outputs of both runs)."""
    workdir = tmp_path_factory.mktemp('faults') / 'ctrl-c'
    flags = (*SHORT, f'--config.teacher.checkpoint={measured[0] / "teacher"}')
    patch = (
        'import os, signal\n'
        'from nrnp.artifact import compressed\n'
        'real = compressed.Compressed.save\n'
        'def save(self, path):\n'
        '    os.kill(os.getpid(), signal.SIGINT)\n'
        '    return real(self, path)\n'
        'compressed.Compressed.save = save\n'
    )
    code, stopped, _ = nrnp_cli(TINY, f'--workdir={workdir}', *flags, patch=patch)
    assert code == 75, stopped
    left = sorted(os.path.relpath(p, workdir) for p in glob.glob(f'{workdir}/**', recursive=True))
    newest = max(glob.glob(f'{workdir}/checkpoints/4/arrays/**/*', recursive=True), key=_size)
    data = bytearray(open(newest, 'rb').read())
    data[len(data) // 2] ^= 1  # one flipped bit: restored silently before checksums
    open(newest, 'wb').write(bytes(data))
    code, output, _ = nrnp_cli(TINY, f'--workdir={workdir}', *flags)
    assert code == 0, output
    return workdir, flags, (stopped, left), output


def _size(path):
    return os.path.getsize(path) if os.path.isfile(path) else -1


def test_ctrl_c_after_the_final_checkpoint_names_it_and_writes_nothing_half(resumed):
    workdir, _, (stopped, left), _ = resumed
    line = _one_error_line(stopped, 'stopped by Ctrl-C (SIGINT): the last checkpoint')
    assert f'{workdir}/checkpoints/4 stays' in line and 'before training' not in stopped
    # Stopped as the artefact was about to be written: no artefact, report or temporary file.
    assert 'checkpoints/4/nrnp_checksums.json' in left
    assert not {'compressed.nrnp', 'report.json', 'report.md', 'report.png'} & set(left), left
    assert not [p for p in left if '.tmp' in p], left


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes(resumed):
    workdir, _, _, output = resumed
    assert 'warning: checkpoint 4 is damaged' in output and 'trying checkpoint 2' in output
    assert 'resuming from checkpoint 2' in output, output
    assert len(glob.glob(f'{workdir}/checkpoints/4.corrupt-*')) == 1  # kept, renamed
    assert (workdir / 'compressed.nrnp').is_file() and (workdir / 'report.json').is_file()


@pytest.fixture
def mount(tmp_path):
    """`mount(*args)`: runs mount(8) as root (skips otherwise); unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip('a tmpfs or read-only bind mount needs root')
    targets = []

    def run(*args):
        out = subprocess.run(['mount', *args], capture_output=True, text=True)
        if out.returncode:
            pytest.skip(f'mount {" ".join(args)} failed here: {out.stderr.strip()}')
        targets.append(args[-1])

    yield run
    for target in reversed(targets):
        subprocess.run(['umount', target], capture_output=True)


def test_a_full_disk_is_one_line_and_the_same_command_resumes_identically(resumed, mount, tmp_path):
    reference, flags, _, _ = resumed
    disk = tmp_path / 'disk'
    disk.mkdir()
    mount('-t', 'tmpfs', '-o', 'size=700k', 'tmpfs', str(disk))  # checkpoint 2 fits, not 4
    workdir = disk / 'w'
    code, output, _ = nrnp_cli(TINY, f'--workdir={workdir}', *flags)
    assert code == 2, output
    line = _one_error_line(output, f'cannot write checkpoint {workdir}/checkpoints/4')
    assert 'no space left on device' in line and 'rerun the same command' in line
    assert len(output.splitlines()) < 20, output
    assert os.listdir(workdir / 'checkpoints') == ['2']  # the half-written step is gone
    subprocess.run(['mount', '-o', 'remount,size=8m', str(disk)], check=True)
    code, output, _ = nrnp_cli(TINY, f'--workdir={workdir}', *flags)
    assert code == 0 and 'resuming from checkpoint 2' in output, output
    expected, got = _predictor(reference), _predictor(workdir)
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


def _folder(root):
    for split in ('train', 'test'):
        for c, name in enumerate(('a', 'b')):
            os.makedirs(root / split / name)
            for i in range(3):
                img = np.full((8, 8, 3), 60 * c + 10 * i, np.uint8)
                Image.fromarray(img).save(root / split / name / f'{i}.png')


def test_a_second_run_is_refused_and_sigterm_while_decoding_leaves_nothing_half(tmp_path):
    """The first run is held inside its decoded-image cache write (np.savez made slow),
    before any checkpoint: a second start is refused at once, naming the first; SIGTERM
    then stops the first with 75 and removes its half-written cache file."""
    _folder(tmp_path / 'imgs')
    workdir = tmp_path / 'w'
    flags = (
        TINY,
        f'--workdir={workdir}',
        f'--config.data.image_folder={tmp_path / "imgs"}',
        '--config.data.channels=3',
        '--config.data.mean=(0.5,)',
        '--config.data.std=(0.25,)',
    )
    patch = (
        'import time, numpy as np\n'
        'def savez(f, **arrays):\n'
        "    f.write(b'half an npz'); f.flush()\n"
        "    print('writing the cache', flush=True)\n"
        '    time.sleep(120)\n'
        'np.savez = savez\n'
        'import sys\n'
        'from nrnp import main\n'
        'main.run(sys.argv)\n'
    )
    cache = tmp_path / 'nrnp_cache'  # the decoded-image cache is $NRNP_CACHE/images
    env = {**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu', 'NRNP_CACHE': str(cache)}
    first = subprocess.Popen(
        [sys.executable, '-c', patch, *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        for line in first.stdout:
            lines.append(line)
            if 'writing the cache' in line:
                break
        assert glob.glob(f'{cache}/images/*.tmp'), ''.join(lines)
        code, output, seconds = nrnp_cli(*flags[:2], '--config.seed=1')  # another config too
        assert code == 2, output
        line = _one_error_line(output, f'{workdir} is in use by another nrnp run (pid {first.pid}')
        assert 'started' in line and seconds < 60
        first.send_signal(signal.SIGTERM)
        rest = first.communicate(timeout=60)[0]
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 75, ''.join(lines) + rest
    _one_error_line(rest, 'stopped by SIGTERM before the first checkpoint: nothing to save yet')
    assert os.listdir(cache / 'images') == []  # no .tmp left behind
    assert sorted(os.listdir(workdir)) == ['.lock', 'log.txt', 'run.json']


CONFIG_FILES = {
    'syntax.py': ('import ml_collections\ndef get_config(:\n', 'syntax.py:2: invalid syntax'),
    'raises.py': (
        'def get_config():\n    x = 1\n    raise RuntimeError("no data here")\n',
        'raises.py:3: get_config() raised RuntimeError: no data here',
    ),
    'dict.py': ('def get_config():\n    return {"seed": 0}\n', 'get_config() returned dict'),
    'none.py': ('def get_config():\n    pass\n', 'get_config() returned NoneType'),
    'imports.py': (
        'import ml_collections\nimport nosuch_module_xyz\n',
        "imports.py:2: No module named 'nosuch_module_xyz'",
    ),
    'sections.py': (
        'import ml_collections as mc\ndef get_config():\n    return mc.ConfigDict({"seed": 0})\n',
        'get_config() lacks the sections data, distill, encoding, kernels, predictor, '
        'recalibrate, reconstruct, teacher and the fields budget, checkpoint_every',
    ),
}


def test_environment_and_config_file_errors_are_one_line_naming_the_fix(tmp_path):
    parent = tmp_path / 'afile'
    parent.write_text('x')
    cases = [
        ((f'--workdir={parent}/w',), {}, f'{parent} is a file, not a directory'),
        (('--workdir=/proc/nrnp/w',), {}, 'a virtual file system such as /proc'),
        (
            (f'--workdir={tmp_path}/w', '--config.teacher.checkpoint=cifar10_resnet20'),
            {'NRNP_CACHE': str(parent)},
            'set NRNP_CACHE to a writable directory',
        ),
        (
            (f'--workdir={tmp_path}/é',),
            {'LC_ALL': 'C', 'LANG': 'C', 'PYTHONUTF8': '0', 'PYTHONCOERCECLOCALE': '0'},
            'set LC_ALL=C.UTF-8',
        ),
    ]
    for name, (text, phrase) in CONFIG_FILES.items():
        (tmp_path / name).write_text(text)
        cases.append(((f'--config={tmp_path / name}', f'--workdir={tmp_path}/w'), {}, phrase))
    for args, env, phrase in cases:
        config = () if any(a.startswith('--config=') for a in args) else (TINY,)
        code, output, seconds = nrnp_cli(*config, *args, env=env)
        assert code == 2, output
        _one_error_line(output, phrase)
        assert seconds < 30, (args, seconds)
    assert sorted(os.listdir(tmp_path)) == sorted(['afile', *CONFIG_FILES])  # nothing made


def test_read_only_places_are_one_line_naming_the_fix(mount, tmp_path):
    source, read_only = tmp_path / 'src', tmp_path / 'ro'
    source.mkdir()
    read_only.mkdir()
    mount('--bind', '-o', 'ro', str(source), str(read_only))
    cases = [
        ((f'--workdir={read_only}/w',), {}, None, 'read-only file system; choose another'),
        ((), {}, read_only, f'under the current directory {read_only}: pass --workdir=DIR'),
        (
            (f'--workdir={tmp_path}/w', '--config.teacher.checkpoint=cifar10_resnet20'),
            {'NRNP_CACHE': str(read_only / 'cache')},
            None,
            f'the cache is {read_only}/cache, from $NRNP_CACHE',
        ),
    ]
    for args, env, cwd, phrase in cases:
        code, output, _ = nrnp_cli(TINY, *args, env=env, cwd=cwd)
        assert code == 2, output
        _one_error_line(output, phrase)
    assert not (tmp_path / 'w').exists()


def test_a_sigterm_swallowed_in_a_gc_callback_is_delivered_again(tmp_path):
    """JAX runs Python in a garbage-collection callback; an exception raised there (as a
    signal handler's is, when the signal lands there) is swallowed as 'unraisable'."""
    patch = (
        'import gc, os, signal\n'
        'def callback(phase, info):\n'
        "    if phase == 'start' and not callback.sent:\n"
        '        callback.sent = True\n'
        '        os.kill(os.getpid(), signal.SIGTERM)\n'
        '        sum(range(10000))  # the handler runs, and raises, in here\n'
        'callback.sent = False\n'
        'from nrnp.pipeline import validation\n'
        'real = validation.check\n'
        'def check(*args, **kwargs):\n'
        '    gc.callbacks.append(callback)\n'
        '    gc.collect()\n'
        '    gc.callbacks.remove(callback)\n'
        "    print('survived the callback', flush=True)\n"
        '    real(*args, **kwargs)\n'
        '    import time; time.sleep(30)\n'
        'validation.check = check\n'
    )
    code, output, seconds = nrnp_cli(TINY, f'--workdir={tmp_path}/w', patch=patch)
    assert code == 75 and 'survived the callback' in output, output
    _one_error_line(output, 'stopped by SIGTERM before the first checkpoint')
    assert seconds < 25


@pytest.mark.slow
def test_deleting_the_lock_file_by_hand_does_not_let_a_second_run_in(measured, tmp_path):
    """Issue 27: with W/.lock deleted mid-run a second start got in, removed the first run's
    in-flight checkpoint and the first died ('internal error ... NOT_FOUND'). The workdir
    itself is locked too: the second start is refused, before importing JAX, and the first
    run finishes with its artefact."""
    workdir, go = tmp_path / 'w', tmp_path / 'go'
    teacher = f'--config.teacher.checkpoint={measured[0] / "teacher"}'
    flags = (TINY, f'--workdir={workdir}', *SHORT, teacher)
    patch = (
        'import os, time\n'
        'from nrnp.pipeline import job\n'
        'real = job._run\n'
        'def held(*args, **kwargs):\n'
        "    print('claimed', flush=True)\n"
        f'    while not os.path.exists({str(go)!r}):\n'
        '        time.sleep(0.1)\n'
        '    return real(*args, **kwargs)\n'
        'job._run = held\n'
        'import sys\n'
        'from nrnp import main\n'
        'main.run(sys.argv)\n'
    )
    env = {**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'}
    first = subprocess.Popen(
        [sys.executable, '-c', patch, *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    no_jax = tmp_path / 'no_jax'  # a jax that cannot be imported: the refusal must not need it
    (no_jax / 'jax').mkdir(parents=True)
    (no_jax / 'jax' / '__init__.py').write_text('raise RuntimeError("jax was imported")\n')
    try:
        for line in first.stdout:
            if 'claimed' in line:
                break
        os.remove(workdir / '.lock')
        code, output, _ = nrnp_cli(*flags, env={'PYTHONPATH': f'{no_jax}{os.pathsep}{REPO}'})
        assert code == 2, output
        line = _one_error_line(output, f'{workdir} is in use by another nrnp run')
        assert '.lock was deleted' in line and 'jax was imported' not in output
        go.write_text('')
        rest = first.communicate(timeout=300)[0]
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, rest
    assert nrnp.load(str(workdir / 'compressed.nrnp')).reconstruct()  # intact
    assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']


def test_a_flipped_byte_in_the_cached_teacher_is_detected_and_it_is_retrained(measured, tmp_path):
    """W/teacher had no checksum: one flipped byte was compressed against silently."""
    source, _ = measured
    workdir = tmp_path / 'measure'
    shutil.copytree(source, workdir)
    before = json.loads((workdir / 'report.json').read_text())
    (workdir / 'report.json').unlink()  # else the finished run is only reported, not redone
    biggest = max(glob.glob(f'{workdir}/teacher/**/*', recursive=True), key=_size)
    data = bytearray(open(biggest, 'rb').read())
    data[len(data) // 2] ^= 1
    open(biggest, 'wb').write(bytes(data))
    flags = ('--config.teacher.train_steps=2', '--config.reconstruct.steps=0')
    code, output, _ = nrnp_cli(TINY, f'--workdir={workdir}', *flags, '--config.distill.steps=0')
    assert code == 0, output
    warnings = [x for x in output.splitlines() if 'warning:' in x]
    assert len(warnings) == 1 and f'the cached teacher {workdir}/teacher is damaged' in warnings[0]
    assert 'does not match its checksum' in warnings[0] and 'training it again' in warnings[0]
    assert len(glob.glob(f'{workdir}/teacher.corrupt-*')) == 1
    assert files.verify(str(workdir / 'teacher')) == ''  # sealed again
    after = json.loads((workdir / 'report.json').read_text())
    assert after['top1_original'] == before['top1_original']  # the same teacher, restored


def test_a_full_disk_while_caching_images_reports_the_space_the_write_met(mount, tmp_path):
    """The message gave the free space after the half-written cache file was removed."""
    disk = tmp_path / 'disk'
    disk.mkdir()
    mount('-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(disk))
    root = tmp_path / 'imgs'
    rng = np.random.default_rng(0)
    for i in range(40):  # 40 x 64 x 64 x 3 = 480 KiB decoded, over what is left after these
        os.makedirs(root / 'train' / 'a', exist_ok=True)
        image = rng.integers(0, 256, (64, 64, 3), np.uint8)
        Image.fromarray(image).save(root / 'train' / 'a' / f'{i}.png')
    (disk / 'filler').write_bytes(b'\0' * 700_000)
    with pytest.raises(errors.StorageError) as info:
        folders.load_image_folder(str(root), 'train', cache_dir=str(disk / 'cache'))
    message = str(info.value)
    free = float(re.search(r'\((\d+\.\d) MiB free there now', message).group(1))
    assert free < 0.2, message  # what the write met, not the 0.3 MiB after the removal
    assert os.listdir(disk / 'cache') == []

"""The command line as a user meets it: bad input gets one clear message and a documented
exit status, never a traceback; signals checkpoint and resume bit-exactly."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import nrnp_cli
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = '--config=default:tiny'


# (flags, exit status, key phrase): refused while checking the config, before any work.
CONFIG_ERRORS = [
    ((), 2, 'usage: nrnp'),  # no arguments at all: the usage
    (('--workdir=W',), 2, 'no --config given'),
    (('--config=nosuch',), 2, 'no such config file and no recipe of that name; recipes: default'),
    (('--config=configs/nosuch.py',), 2, 'no such config file'),
    (('--config=default:huge',), 2, "unknown config argument 'huge'"),
    ((TINY, '--config.predictor.hiden=3'), 2, "did you mean '--config.predictor.hidden'"),
    ((TINY, '--config.nosuch.x=1'), 2, '--config.nosuch.x: no such config field'),
    ((TINY, '--config.predictor=3'), 2, '--config.predictor is a section'),
    ((TINY, '--config.predictor.hidden=abc'), 2, 'hidden=abc'),
    (
        (TINY, '--config.predictor.hidden=0'),
        2,
        '--config.predictor.hidden=0: must be a number >= 1',
    ),
    (
        (TINY, '--config.predictor.layers=1'),
        2,
        '--config.predictor.layers=1: must be a number >= 2',
    ),
    ((TINY, '--config.reconstruct.steps=-5'), 2, 'reconstruct.steps=-5: must be a number >= 0'),
    ((TINY, '--config.distill.steps=-1'), 2, 'distill.steps=-1: must be a number >= 0'),
    ((TINY, '--config.data.test_limit=-5'), 2, 'test_limit=-5: must be a number >= 0'),
    ((TINY, '--config.kernels.ordering=zigzag'), 2, "ordering='zigzag': must be one of 'none'"),
    ((TINY, '--config.encoding.kind=fourier'), 2, "kind='fourier': must be one of 'nern'"),
    ((TINY, '--config.teacher.model=resnet21'), 2, "model='resnet21': must be one of"),
    ((TINY, '--config.reconstruct.optimizer=sgd'), 2, "optimizer='sgd': must be one of"),
    ((TINY, '--config.distill.grad_through=some'), 2, "grad_through='some'"),
    ((TINY, '--config.distill.temperature=0'), 2, 'temperature=0.0: must be a number > 0'),
    (
        (TINY, '--config.reconstruct.learning_rate=-1'),
        2,
        'learning_rate=-1.0: must be a number > 0',
    ),
    ((TINY, '--config.distill.magnitude_fraction=2'), 2, 'magnitude_fraction=2.0: must be in'),
    ((TINY, '--config.data.channels=2'), 2, 'channels=2: must be one of 1, 3'),
    ((TINY, '--config.data.mean=(0.5,0.5)'), 2, 'needs 1 or data.channels=1 values'),
    ((TINY, '--config.data.std=(0.0,)'), 2, 'every value must be > 0'),
    ((TINY, '--config.data.crop_fraction=1.5'), 2, 'crop_fraction=1.5: must be in (0, 1]'),
    ((TINY, '--config.kernels.exclude=(conv'), 2, 'is not a regular expression'),
    ((TINY, '--config.cycles=0'), 2, '--config.cycles=0: must be a number >= 1'),
    ((TINY, '--config.seed=-1'), 2, '--config.seed=-1: must be a number >= 0'),
    ((TINY, '--config.teacher.checkpoint=/nonexistent/r20.th'), 2, 'no such file or directory'),
    (
        (TINY, '--config.data.image_folder=/nonexistent/imgs'),
        2,
        "image_folder='/nonexistent/imgs': no such directory",
    ),
    ((TINY, '--config.distill.teacher_model=resnet20'), 2, 'needs distill.teacher_checkpoint'),
    ((TINY, '--config.teacher.train_steps=0'), 2, 'teacher.train_steps is 0'),
    ((TINY, '--bogus=1'), 2, "Unknown command line flag 'bogus'"),
    ((TINY, 'extra'), 2, "unexpected arguments ['extra']"),
]


@pytest.mark.parametrize('args, status, phrase', CONFIG_ERRORS, ids=lambda v: str(v)[:60])
def test_config_errors_are_one_line_and_fast(args, status, phrase, tmp_path):
    workdir = tmp_path / 'w'
    extra = (f'--workdir={workdir}',) if args else ()
    code, output, seconds = nrnp_cli(*args, *extra, cwd=tmp_path)
    assert code == status, output
    assert phrase in output, output
    assert 'Traceback' not in output, output
    assert seconds < 5, f'{seconds:.1f}s: config errors must be reported before any work'
    assert not workdir.exists(), 'nothing may be created for a refused config'


def test_help_and_fields_list_the_recipes_and_every_field():
    code, output, _ = nrnp_cli('--help')
    assert code == 0 and 'c100' in output and 'c10_r20' in output and 'Exit status' in output
    code, output, _ = nrnp_cli('fields')
    assert code == 0
    lines = output.splitlines()
    assert (
        'predictor.hidden = 64  # width h of the predictor MLP (torch-style init, no skips)'
        in lines
    )
    assert any(
        line.startswith("recalibrate.mode = 'relative'  # 'relative': stored") for line in lines
    )
    from nrnp.configs import default
    from nrnp.pipeline import workdirs

    every = set(workdirs._flat(default.get_config()))
    listed = {line.split(' = ')[0] for line in lines}
    assert listed == every  # each field once, none missing, nothing invented
    assert all('  # ' in line for line in lines), [x for x in lines if '  # ' not in x]
    code, output, _ = nrnp_cli('fields', '--config=c10_r20:tiny')  # the recipe's values
    assert code == 0 and {line.split(' = ')[0] for line in output.splitlines()} == every
    assert 'predictor.hidden = 16  # (default 64) width h of the predictor MLP' in output
    assert 'data.mean = (0.485, 0.456, 0.406)  # (default (0.5,)) normalisation' in output
    assert output.startswith('seed = 0  # root PRNG seed')  # unchanged: no default named
    code, output, _ = nrnp_cli('fields', '--config=c10_r21')
    assert code == 2 and 'no such config file and no recipe of that name' in output


def _folder(root, classes=('a', 'b'), size=8, per_class=3, corrupt=None):
    for split in ('train', 'test'):
        for c, name in enumerate(classes):
            os.makedirs(root / split / name, exist_ok=True)
            for i in range(per_class):
                img = np.full((size, size, 3), 60 * c + 10 * i, np.uint8)
                Image.fromarray(img).save(root / split / name / f'{i}.png')
    if corrupt:
        (root / 'test' / classes[0] / corrupt).write_bytes(b'not a png')


@pytest.mark.slow
def test_input_errors_name_the_problem(tmp_path):
    folder = tmp_path / 'imgs'
    _folder(folder)
    renamed = tmp_path / 'renamed'
    _folder(renamed)
    os.rename(renamed / 'test' / 'b', renamed / 'test' / 'c')
    broken = tmp_path / 'broken'
    _folder(broken, corrupt='9.png')
    garbage = tmp_path / 'r20.th'
    garbage.write_bytes(np.random.default_rng(0).bytes(300))
    colour = ('--config.data.channels=3', '--config.data.mean=(0.5,)', '--config.data.std=(0.25,)')
    cases = [
        ((f'--config.teacher.checkpoint={garbage}',), 'r20.th: not a PyTorch checkpoint'),
        (('--config.data.name=nosuchdataset',), "TFDS has no dataset named 'nosuchdataset'"),
        ((f'--config.data.image_folder={renamed}', *colour), "only in train: ['b']"),
        ((f'--config.data.image_folder={broken}', *colour), '9.png'),
        ((f'--config.data.image_folder={folder}', '--config.data.num_classes=1'), 'has 2 classes'),
    ]
    for i, (args, phrase) in enumerate(cases):
        code, output, _ = nrnp_cli(TINY, f'--workdir={tmp_path / f"w{i}"}', *args)
        assert code == 2, output
        assert phrase in output, output
        assert 'Traceback' not in output, output
        assert len(output.strip().splitlines()) < 25, output


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    """A finished tiny run: (workdir, the artefact's bytes)."""
    workdir = tmp_path_factory.mktemp('cli') / 'run'
    code, output, _ = nrnp_cli(TINY, f'--workdir={workdir}', '--config.distill.steps=2')
    assert code == 0, output
    return workdir, (workdir / 'compressed.nrnp').read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize(
    'change, phrase',
    [
        ('--config.kernels.ordering=none', "kernels.ordering: 'crossfilter' -> 'none'"),
        ('--config.reconstruct.learning_rate=0.01', 'reconstruct.learning_rate: 0.005 -> 0.01'),
        ('--config.seed=3', 'seed: 0 -> 3'),
        ('--config.teacher.train_steps=61', 'teacher.train_steps: 60 -> 61'),
        ('--config.data.name=digits2', "data.name: 'digits' -> 'digits2'"),
    ],
)
def test_workdir_of_another_run_is_refused_and_left_alone(finished, change, phrase):
    workdir, artefact = finished
    report = (workdir / 'report.json').read_bytes()
    code, output, _ = nrnp_cli(TINY, f'--workdir={workdir}', '--config.distill.steps=2', change)
    assert code == 2 and 'holds another run' in output and phrase in output, output
    assert '--overwrite' in output and 'Traceback' not in output
    assert (workdir / 'compressed.nrnp').read_bytes() == artefact
    assert (workdir / 'report.json').read_bytes() == report


@pytest.mark.slow
def test_workdir_same_command_resumes_and_teacher_checkpoint_change_is_refused(finished, tmp_path):
    workdir, artefact = finished
    code, output, _ = nrnp_cli(TINY, f'--workdir={workdir}', '--config.distill.steps=2')
    assert code == 0 and 'resuming' in output, output
    assert (workdir / 'compressed.nrnp').read_bytes() == artefact
    teacher = workdir / 'teacher'  # the cached teacher, given as a checkpoint
    code, output, _ = nrnp_cli(
        TINY,
        f'--workdir={workdir}',
        '--config.distill.steps=2',
        f'--config.teacher.checkpoint={teacher}',
    )
    assert code == 2 and 'input teacher' in output, output


@pytest.mark.slow
def test_tensorboard_events_are_readable_by_tensorboard(finished):
    pytest.importorskip('tensorboard', reason='tensorboard is not installed (test extra)')
    from tensorboard.backend.event_processing import event_accumulator

    workdir, _ = finished
    events = event_accumulator.EventAccumulator(str(workdir / 'tensorboard'))
    events.Reload()
    tags = set(events.Tags()['scalars'])
    for tag in (
        'recon/loss',
        'recon/lr',
        'distill/kd',
        'eval/top1_original',
        'eval/top1_reconstructed',
    ):
        assert tag in tags, tags
    original = events.Scalars('eval/top1_original')[0].value
    report = json.loads((workdir / 'report.json').read_text())
    assert original == pytest.approx(report['top1_original'], abs=1e-4)
    lines = [json.loads(x) for x in (workdir / 'metrics.jsonl').read_text().splitlines()]
    assert lines[0] == {'step': 0, 'eval/top1_original': pytest.approx(original, abs=1e-4)}
    assert any('recon/steps_per_second' in line for line in lines)


def _interrupt_at(workdir, flags, log_line, sig, env=None):
    """Starts the tiny run, sends `sig` once `log_line` shows in the output; (status, output)."""
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu', **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, '-m', 'nrnp.main', TINY, f'--workdir={workdir}', *flags],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    for line in proc.stdout:
        output.append(line)
        if log_line in line:
            proc.send_signal(sig)
            break
    output.append(proc.communicate(timeout=300)[0])
    return proc.returncode, ''.join(output)


# Long enough phases to be interrupted in the middle; logs every 4 steps.
SLOW = ('--config.reconstruct.steps=120', '--config.distill.steps=8', '--config.log_every=4')


@pytest.fixture(scope='module')
def uninterrupted(finished, tmp_path_factory):
    """(workdir, flags) of the uninterrupted run, on the teacher `finished` trained."""
    workdir = tmp_path_factory.mktemp('signals') / 'reference'
    flags = (*SLOW, f'--config.teacher.checkpoint={finished[0] / "teacher"}')
    code, output, _ = nrnp_cli(TINY, f'--workdir={workdir}', *flags)
    assert code == 0, output
    return workdir, flags


def _final_predictor(workdir):
    with np.load(workdir / 'compressed.nrnp') as f:
        return {k: f[k] for k in f.files if k.startswith('predictor/')}


@pytest.mark.slow
@pytest.mark.parametrize(
    'sig, where',
    [
        (signal.SIGINT, 'reconstruct c1 round 1 60/120'),
        (signal.SIGTERM, 'reconstruct c1 round 1 60/120'),
        (signal.SIGINT, 'distill c1 4/8'),
        (signal.SIGTERM, 'distill c1 4/8'),
    ],
    ids=['sigint-reconstruct', 'sigterm-reconstruct', 'sigint-distill', 'sigterm-distill'],
)
def test_signals_checkpoint_then_resume_bit_exactly(uninterrupted, tmp_path, sig, where):
    reference, flags = uninterrupted
    workdir = tmp_path / 'interrupted'
    code, output = _interrupt_at(workdir, flags, where, sig)
    assert code == 75, output
    assert 'checkpoint written' in output and 'Traceback' not in output, output
    assert not (workdir / 'compressed.nrnp').exists()
    code, output, _ = nrnp_cli(TINY, f'--workdir={workdir}', *flags)
    assert code == 0 and 'resuming from checkpoint' in output, output
    if 'reconstruct' in where:  # the progress counter goes on from the resume point
        assert 'reconstruct c1 round 1 64/120' in output, output
    expected, got = _final_predictor(reference), _final_predictor(workdir)
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


@pytest.mark.slow
def test_sigterm_on_eight_devices_resumes_bit_exactly(finished, tmp_path):
    """The device data path sharded over 8 simulated devices: interrupted in distillation,
    resumed, it ends with the uninterrupted 8-device run's predictor."""
    eight = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
    flags = (*SLOW, f'--config.teacher.checkpoint={finished[0] / "teacher"}')
    reference = tmp_path / 'reference'
    code, output, _ = nrnp_cli(TINY, f'--workdir={reference}', *flags, env=eight)
    assert code == 0 and "mesh: {'data': 8" in output, output
    assert 'drawn on the device' in output, output
    workdir = tmp_path / 'interrupted'
    code, output = _interrupt_at(workdir, flags, 'distill c1 4/8', signal.SIGTERM, env=eight)
    assert code == 75 and 'checkpoint written' in output, output
    code, output, _ = nrnp_cli(TINY, f'--workdir={workdir}', *flags, env=eight)
    assert code == 0 and 'resuming from checkpoint' in output, output
    expected, got = _final_predictor(reference), _final_predictor(workdir)
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


def test_a_second_ctrl_c_exits_at_once():
    code = (
        'import os, signal, time\n'
        'from nrnp.training import interrupts\n'
        'with interrupts.catch(lambda m: print(m, flush=True)) as stop:\n'
        '    os.kill(os.getpid(), signal.SIGINT)\n'
        '    time.sleep(0.2)\n'
        "    print('flag:', stop.requested, flush=True)\n"
        '    os.kill(os.getpid(), signal.SIGINT)\n'
        '    time.sleep(30)\n'
        "print('not reached')\n"
    )
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    start = time.time()
    out = subprocess.run(
        [sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 130, out
    assert 'flag: SIGINT' in out.stdout and 'writing a checkpoint' in out.stdout
    assert 'second Ctrl-C: exiting now' in out.stderr and 'not reached' not in out.stdout
    assert time.time() - start < 20

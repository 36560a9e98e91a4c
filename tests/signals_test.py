"""Signals at every instant (issue 27): one SIGTERM or Ctrl-C anywhere in the first seconds
of a real run exits 75 with one line, and long work between two steps (synthetic images for
BatchNorm re-estimation) stops within seconds."""

import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import REPO

from nrnp import errors, signals

pytestmark = pytest.mark.slow  # runs the CLI and sends it signals

TINY = '--config=default:tiny'


def _sweep_module():
    path = os.path.join(REPO, 'benchmarks', 'signal_sweep.py')
    spec = importlib.util.spec_from_file_location('signal_sweep', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_handler_module_imports_nothing_heavy_and_agrees_with_errors():
    code = (
        'import sys; from nrnp import signals\n'
        'print(sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "numpy", "flax")))'
    )
    out = subprocess.run(
        [sys.executable, '-c', code],
        env={**os.environ, 'PYTHONPATH': REPO},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == '[]'
    assert (signals.EXIT_PREEMPTED, signals.EXIT_INTERRUPTED) == (
        errors.EXIT_PREEMPTED,
        errors.EXIT_INTERRUPTED,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    'name, times',
    [('TERM', [0.1 * i for i in range(1, 26)]), ('INT', [0.15 + 0.2 * i for i in range(12)])],
)
def test_one_signal_anywhere_in_the_first_seconds_exits_75_with_one_line(tmp_path, name, times):
    """Start-up: imports (jax's among them), config, workdir, the teacher's first steps."""
    sweep = _sweep_module()
    signum = getattr(signal, f'SIG{name}')
    runs = [sweep.one_run([TINY], t, signum, str(tmp_path)) for t in times]
    bad = [r for r in runs if not sweep.good(r)]
    assert not bad, sweep.table(bad)
    assert {r['status'] for r in runs} == {75}
    assert max(r['exit_seconds'] for r in runs) < 10, sweep.table(runs)


def test_sigterm_while_synthetic_images_are_optimised_exits_within_seconds(tmp_path):
    """300 synthesis steps (of c10_r20:tiny) took 255 s after SIGTERM: now each step checks."""
    workdir = tmp_path / 'w'
    flags = (
        '--config.teacher.train_steps=2',
        '--config.reconstruct.steps=2',
        '--config.distill.steps=0',
        '--config.kernels.ordering=none',
        '--config.recalibrate.source=synthetic',
        '--config.recalibrate.synthetic_steps=1000000',
    )
    env = {**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'}
    proc = subprocess.Popen(
        [sys.executable, '-m', 'nrnp.main', TINY, f'--workdir={workdir}', *flags],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    try:
        for line in proc.stdout:
            output.append(line)
            if 'synthetic calibration images: step 100/' in line:
                sent = time.time()
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    seconds = time.time() - sent
    text = ''.join(output) + rest
    assert proc.returncode == 75, text
    assert seconds < 10, (seconds, text)
    stopped = [x for x in text.splitlines() if x.startswith('nrnp: ')]
    assert len(stopped) == 1 and 'Traceback' not in text, text
    assert 'SIGTERM during recalibrate c1 after round 1' in stopped[0], stopped
    assert f'the last checkpoint {workdir}/checkpoints/2 stays' in stopped[0], stopped
    assert (workdir / 'checkpoints' / '2').is_dir()

"""The test suite itself (conftest.py): Ctrl-C or SIGTERM stops it at once, with the
processes its tests started, and even when an in-process training loop took the signal."""

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow  # runs pytest sessions in subprocesses

INNER = """
import os, subprocess, sys, time

def _mark(name, text=''):
    with open(os.path.join(os.environ['MARKS'], name), 'w') as f:
        f.write(text)

def test_waits_beside_a_child():
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
    _mark('child', str(child.pid))
    _mark('ready')
    time.sleep(600)

def test_inside_a_training_loop():
    from nrnp import errors
    from nrnp.training import interrupts
    with interrupts.catch(log=lambda line: None) as stop:
        _mark('ready')
        deadline = time.time() + 600
        while stop.requested is None and time.time() < deadline:
            time.sleep(0.05)
        raise errors.Preempted(f'{stop.requested}: checkpoint written at step 1')

def test_after():
    _mark('after')
"""


def _alive(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split(') ')[1][0] != 'Z'
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(
    'case, signum',
    [
        ('waits_beside_a_child', signal.SIGINT),
        ('waits_beside_a_child', signal.SIGTERM),
        ('inside_a_training_loop', signal.SIGINT),
    ],
)
def test_a_signal_stops_the_suite_and_its_children(tmp_path, case, signum):
    marks = tmp_path / 'marks'
    marks.mkdir()
    (tmp_path / 'inner_test.py').write_text(INNER)
    env = {
        **os.environ,
        'PYTHONPATH': os.pathsep.join([os.path.join(REPO, 'tests'), REPO]),
        'MARKS': str(marks),
    }
    keep = f'test_{case} or test_after'
    inner = subprocess.Popen(  # its own process group (conftest): a terminal's Ctrl-C
        [sys.executable, '-m', 'pytest', '-p', 'conftest', '-p', 'no:cacheprovider', '-q']
        + ['-k', keep, 'inner_test.py'],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not (marks / 'ready').exists():
            assert inner.poll() is None and time.time() < deadline, inner.communicate()[0]
            time.sleep(0.1)
        sent = time.time()
        os.killpg(inner.pid, signum)  # what Ctrl-C at a terminal does: the foreground group
        output = inner.communicate(timeout=60)[0]
        seconds = time.time() - sent
    finally:
        if inner.poll() is None:
            os.killpg(inner.pid, signal.SIGKILL)
    assert inner.returncode != 0 and seconds < 30, (seconds, output)
    assert not (marks / 'after').exists(), output  # the session stopped: no test after it
    if case == 'waits_beside_a_child':
        child = int((marks / 'child').read_text())
        assert not _alive(child), output
        assert f'killed the process groups of 1 test subprocesses [{child}]' in output, output
    else:
        assert 'a signal stopped an nrnp training loop' in output, output

"""Shared by several tests: the command line in a subprocess, the last run checkpoint of a
workdir, and a test file run as a script on simulated CPU devices."""

import json
import os
import subprocess
import sys
import time

from nrnp.training import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The test process's persistent compilation cache (conftest.py), for the command lines it
# starts too: the same small programs compile once per suite, not once per subprocess.
COMPILE_CACHE = {
    'JAX_COMPILATION_CACHE_DIR': os.environ.get('NRNP_JAX_CACHE', os.path.join(REPO, '.jax_cache')),
    'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0.5',
}


def nrnp_cli(*args, cwd=None, timeout=300, env=None, patch=''):
    """Runs `python -m nrnp.main args` in a subprocess: (status, output, seconds).

    `patch`: Python run first in the same process (e.g. to make a step slow or to send a
    signal at a chosen point), then the command line as `nrnp.main.run`.
    """
    env = {**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu', **COMPILE_CACHE, **(env or {})}
    env.pop('NRNP_DEBUG', None)
    start = time.time()
    command = ['-m', 'nrnp.main']
    if patch:
        command = ['-c', f'{patch}\nimport sys\nfrom nrnp import main\nmain.run(sys.argv)']
    out = subprocess.run(
        [sys.executable, *command, *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return out.returncode, out.stdout + out.stderr, time.time() - start


def final_arrays(workdir):
    """(step, restored arrays) of the latest checkpoint in `workdir/checkpoints`."""
    ckpt = checkpoints.RunCheckpointer(os.path.join(workdir, 'checkpoints'))
    step = ckpt.latest_step()
    restored = ckpt.manager.restore(step)
    ckpt.close()
    return step, restored


def run_on_cpu_devices(script: str, num_devices: int, *args: str, timeout: int = 600) -> dict:
    """Runs `python script args` with `num_devices` simulated CPU devices; the JSON object
    its last stdout line prints."""
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={num_devices}'
    env['PYTHONPATH'] = os.pathsep.join([REPO, env.get('PYTHONPATH', '')])
    out = subprocess.run(
        [sys.executable, script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])

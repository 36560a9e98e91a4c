"""Shared by several tests: the last run checkpoint of a workdir, and a test file run as a
script on simulated CPU devices."""

import json
import os
import subprocess
import sys

from nrnp.training import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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

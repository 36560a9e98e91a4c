"""Two local CPU processes with jax.distributed run the tiny config to the 1-process result,
with the data in memory and streamed."""

import json
import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('localhost', 0))
        return s.getsockname()[1]


def _cli(workdir, *extra, env=None):
    cmd = [
        sys.executable,
        '-m',
        'nrnp.main',
        '--config=configs/default.py:tiny',
        f'--workdir={workdir}',
        *extra,
    ]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _digits_folder(root) -> None:
    """The bundled digits as a PNG image folder (<root>/<split>/<digit>/<i>.png)."""
    from PIL import Image

    from nrnp.data import dataset

    for split in ('train', 'test'):
        ds = dataset.load_digits(split)
        for i, (image, label) in enumerate(zip(ds.images, ds.labels)):
            folder = os.path.join(root, split, str(label))
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(image[..., 0]).save(os.path.join(folder, f'{i}.png'))


@pytest.mark.slow
@pytest.mark.parametrize('streaming', [False, True])
def test_two_processes_match_one(tmp_path, streaming):
    base = dict(
        os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=2'
    )
    data_args = []
    if streaming:  # each process decodes only its rows of every batch
        _digits_folder(tmp_path / 'digits')
        data_args = [
            f'--config.data.image_folder={tmp_path / "digits"}',
            '--config.data.streaming=True',
        ]
    one = _cli(tmp_path / 'one', *data_args, env=base)
    out, _ = one.communicate(timeout=600)
    assert one.returncode == 0, out[-3000:]
    teacher = f'--config.teacher.checkpoint={tmp_path / "one" / "teacher"}'
    port = _free_port()
    procs = []
    for pid in range(2):
        env = dict(
            base,
            JAX_COORDINATOR_ADDRESS=f'localhost:{port}',
            JAX_NUM_PROCESSES='2',
            JAX_PROCESS_ID=str(pid),
        )
        procs.append(_cli(tmp_path / 'two', teacher, *data_args, env=env))
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-3000:]
    a = json.load(open(tmp_path / 'one' / 'report.json'))
    b = json.load(open(tmp_path / 'two' / 'report.json'))
    assert b['devices'] == [f'TFRT_CPU_{i}' for i in range(4)] or len(b['devices']) == 4
    assert a['top1_original'] == b['top1_original']
    for x, y in zip(a['phases'], b['phases']):
        assert x['kind'] == y['kind']
        assert x['top1'] == pytest.approx(y['top1'])
        assert x['rmse'] == pytest.approx(y['rmse'], rel=1e-4)

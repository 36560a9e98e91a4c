"""The user's command from nothing: `--config=c100:tiny` with the dataset archive and the
teacher checkpoint served from 127.0.0.1, downloaded, verified and compressed end to end."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from cifar_test import cifar100_archive

from nrnp.nets import models, state_dicts

REPO = pathlib.Path(__file__).resolve().parents[1]


def _resnet56_b100(seed=0):
    """Random CIFAR-100 ResNet56 option B variables (what chenyaofo's layout holds)."""
    model = models.build_model('resnet56', 100, shortcut='B')
    shapes = jax.eval_shape(lambda: models.init_variables(model, (1, 32, 32, 3)))
    rng = np.random.default_rng(seed)
    variables = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
    variables['batch_stats'] = jax.tree.map(lambda x: np.abs(x) + 0.5, variables['batch_stats'])
    return variables


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    """A local server holding a generated CIFAR-100 archive and a chenyaofo checkpoint."""
    from local_http import FileServer

    tmp = tmp_path_factory.mktemp('served')
    archive, _ = cifar100_archive(n_train=64, n_test=40)
    checkpoint = tmp / 'r56.pt'
    state_dicts.export_state_dict(_resnet56_b100(), checkpoint, layout='chenyaofo')
    with FileServer() as server:
        server.files['cifar-100-binary.tar.gz'] = archive
        server.files['cifar100_resnet56.pt'] = checkpoint.read_bytes()
        yield {
            'server': server,
            'archive_sha256': hashlib.sha256(archive).hexdigest(),
            'checkpoint_sha256': hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        }


def _cli(tmp_path, *args):
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'NRNP_CACHE': str(tmp_path / 'cache')}
    out = subprocess.run(
        [sys.executable, '-m', 'nrnp.main', '--config=c100:tiny', *args],
        cwd=tmp_path,  # any directory: the recipe is found by name
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return out.returncode, out.stdout + out.stderr


@pytest.mark.slow
def test_c100_tiny_from_a_local_server(served, tmp_path):
    server = served['server']
    url = server.url('cifar100_resnet56.pt') + f'#sha256={served["checkpoint_sha256"]}'
    code, output = _cli(
        tmp_path,
        f'--config.data.download_url={server.url("cifar-100-binary.tar.gz")}',
        f'--config.data.download_sha256={served["archive_sha256"]}',
        f'--config.teacher.checkpoint={url}',
        '--config.distill.steps=2',
    )
    assert code == 0, output
    assert 'Traceback' not in output
    run = tmp_path / 'runs' / 'c100-tiny'  # the default workdir, printed at the start
    assert str(run) in output
    report = json.loads((run / 'report.json').read_text())
    assert report['test_images'] == 40 and report['target'] == 'resnet56'
    assert [p['kind'] for p in report['phases']] == [
        'init',
        'reconstruct',
        'recalibrate',
        'distill',
    ]
    assert served['checkpoint_sha256'] in report['target_source']
    cache = tmp_path / 'cache'
    assert (cache / 'datasets' / 'downloads' / 'cifar-100-binary.tar.gz').is_file()
    assert not list(cache.rglob('*.part'))
    # The same command again resumes the finished run without downloading anything.
    before = len(server.requests)
    code, output = _cli(
        tmp_path,
        f'--config.data.download_url={server.url("cifar-100-binary.tar.gz")}',
        f'--config.data.download_sha256={served["archive_sha256"]}',
        f'--config.teacher.checkpoint={url}',
        '--config.distill.steps=2',
    )
    assert code == 0 and 'resuming' in output, output
    assert len(server.requests) == before


def test_offline_the_users_command_says_what_to_fetch(tmp_path):
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'NRNP_CACHE': str(tmp_path / 'cache')}
    out = subprocess.run(
        [sys.executable, '-m', 'nrnp.main', '--config=c100', '--config.data.download=False'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = out.stdout + out.stderr
    assert out.returncode == 2, output
    assert 'Traceback' not in output
    for phrase in (
        'cifar-100-binary.tar.gz',
        '58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec',
        'cifar100_resnet56-f2eff4c8.pt',
        '--config.teacher.checkpoint=PATH',
        '--config.data.data_dir=DIR',
        str(tmp_path / 'cache' / 'datasets' / 'downloads' / 'cifar-100-binary.tar.gz'),
    ):
        assert phrase in output, (phrase, output)
    assert not (tmp_path / 'runs').exists()


@pytest.mark.slow
def test_c100_tiny_with_a_teacher_trained_here(served, tmp_path):
    server = served['server']
    code, output = _cli(
        tmp_path,
        f'--config.data.download_url={server.url("cifar-100-binary.tar.gz")}',
        f'--config.data.download_sha256={served["archive_sha256"]}',
        '--config.teacher.checkpoint=',
        '--config.teacher.train_steps=3',
        '--config.teacher.train_batch_size=16',
        '--config.distill.steps=2',
    )
    assert code == 0, output
    report = json.loads((tmp_path / 'runs' / 'c100-tiny' / 'report.json').read_text())
    assert report['target_source'].startswith('trained: sgd lr 0.1 momentum 0.9 wd 0.0005')
    assert '3 steps of 16' in report['target_source'] and 'on the 40' in report['target_source']
    assert (tmp_path / 'runs' / 'c100-tiny' / 'teacher.json').is_file()
    assert [p['kind'] for p in report['phases']] == [
        'init',
        'reconstruct',
        'recalibrate',
        'distill',
    ]

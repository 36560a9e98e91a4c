"""End to end: the tiny config through both phases, crash + resume, SIGTERM, bad input."""

import json
import os
import signal

import jax
import numpy as np
import pytest
from helpers import final_arrays
from PIL import Image

import nrnp
from nrnp import errors
from nrnp.configs import default
from nrnp.data import batching, dataset
from nrnp.pipeline import cli_data, job
from nrnp.training import checkpoints, evaluation, schedule

pytestmark = pytest.mark.slow  # runs the CLI job end to end


def _config(**overrides):
    c = default.get_config('tiny')
    c.cycles = 2  # reconstruct -> distill -> reconstruct -> distill
    c.distill.steps = 6
    c.checkpoint_every = 2
    c.data.on_device = 'false'  # the host pipeline, whose batches the crash tests intercept
    for key, value in overrides.items():
        section, field = key.split('.')
        c[section][field] = value
    return c


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('reference'))
    report = job.run(_config(), workdir, echo=lambda s: None)
    return workdir, report


def test_report_fields_and_phases(reference):
    workdir, report = reference
    saved = json.load(open(os.path.join(workdir, 'report.json')))
    assert saved['top1_original'] == report['top1_original'] > 80.0  # the digits teacher
    kinds = [p['kind'] for p in saved['phases']]
    cycle = ['reconstruct', 'recalibrate', 'distill']  # distillation sees the new statistics
    assert kinds == ['init', *cycle, *cycle]
    for key in (
        'top1_reconstructed',
        'test_images',
        'represented_params',
        'predictor_params',
        'ratio',
        'reconstruction_rmse',
        'wall_seconds',
    ):
        assert key in saved
    assert saved['test_images'] == 360
    assert saved['represented_params'] == 9 * (1 * 32 + 32 * 64 + 64 * 64)
    assert saved['num_kernels'] == 32 + 32 * 64 + 64 * 64  # the table's rows
    assert 'kernel_rows' not in saved  # (once a second name for them)
    # conv1 [3, 3, 1, 32] sees a grey image: a plain 3x3 conv, not a depthwise one.
    assert saved['represented_by_kind'] == {
        '3x3': saved['represented_params'],
        'depthwise': 0,
        'pointwise': 0,
        'large': 0,
        'dense': 0,
        'copied': 2 * (32 + 64 + 64) + 64 * 10 + 10,  # BatchNorm scales/biases, the head
    }
    assert saved['ratio'] == pytest.approx(saved['predictor_params'] / saved['represented_params'])
    for p in saved['phases'][1:]:
        assert p['seconds'] > 0 and 0 <= p['top1'] <= 100
        assert np.isfinite(p['rmse'])
        if p['kind'] == 'recalibrate':  # BatchNorm re-estimated on 64 training images
            assert p['steps'] == 0 and p['images'] == 64 and p['source'] == 'train'
            assert 0 <= p['top1_before'] <= 100
        else:
            assert p['steps'] > 0
    assert os.path.exists(os.path.join(workdir, 'report.png'))
    with open(os.path.join(workdir, 'report.md')) as f:
        md = f.read()
    # the plot linked under the phases, the config dump last
    assert md.index('## Phases') < md.index('](report.png)') < md.index('## Config')
    assert md.rstrip().endswith('```') and md.count('## Config') == 1


def test_cli_artifact_rebuilds_the_reported_network(reference):
    workdir, report = reference
    compressed = nrnp.load(os.path.join(workdir, 'compressed.nrnp'))
    rebuilt = compressed.reconstruct()
    model = job.build_target(_config())
    test = dataset.load_digits('test')
    c = _config()
    top1 = evaluation.top1(
        model, rebuilt, batching.normalise(test.images, c.data.mean, c.data.std), test.labels
    )
    assert top1 == pytest.approx(report['top1_reconstructed'])
    assert report['artifact_bytes'] == os.path.getsize(os.path.join(workdir, 'compressed.nrnp'))


def test_quantized_run_reports_the_network_its_artefact_rebuilds(tmp_path):
    c = _config(**{'predictor.quantize': 'int4', 'predictor.quantize_fraction': 0.5})
    c.cycles, c.distill.steps = 1, 0  # no distillation: a quantize phase fine-tunes
    c.recalibrate.when = 'both'  # the run ends with a re-estimation: of the stored net
    report = job.run(c, str(tmp_path), echo=lambda s: None)
    kinds = [p['kind'] for p in report['phases']]
    assert kinds == ['init', 'reconstruct', 'quantize', 'recalibrate']
    steps = c.reconstruct.steps
    assert [p['steps'] for p in report['phases']][1:3] == [steps, round(steps / 2)]
    last = report['phases'][-1]  # measured the network the artefact rebuilds
    assert report['quantize'] == 'int4'
    assert report['top1_reconstructed'] == last['top1']
    assert report['reconstruction_rmse'] == last['rmse']
    path = tmp_path / 'compressed.nrnp'
    compressed = nrnp.load(path)
    assert (
        compressed.quantize == 'int4' and compressed.metrics['top1_reconstructed'] == last['top1']
    )
    test = dataset.load_digits('test')
    top1 = evaluation.top1(
        job.build_target(c),
        compressed.reconstruct(),
        batching.normalise(test.images, c.data.mean, c.data.std),
        test.labels,
    )
    assert top1 == report['top1_reconstructed']  # exactly the network the run measured
    parts = ('predictor', 'ordering', 'copied', 'header', 'framing')
    assert (
        sum(report[f'{p}_bytes'] for p in parts) == report['artifact_bytes'] == path.stat().st_size
    )
    assert report['artifact_ratio'] == pytest.approx(
        report['artifact_bytes'] / report['original_bytes']
    )
    assert 'stored int4' in (tmp_path / 'report.md').read_text()


def _crash_after(monkeypatch, batches: int, action):
    real = batching.train_batches
    calls = {'n': 0}

    def fake(*args, **kwargs):
        it = real(*args, **kwargs)
        if kwargs.get('batch_size') != 32:  # teacher training: untouched
            yield from it
            return
        calls['n'] += 1
        if calls['n'] > 1:  # only the first distillation phase is interrupted
            yield from it
            return
        for i, item in enumerate(it):
            if i == batches:
                action()
            yield item

    monkeypatch.setattr(batching, 'train_batches', fake)


def test_crash_mid_distillation_then_resume_is_bit_exact(reference, tmp_path, monkeypatch):
    ref_dir, _ = reference
    workdir = str(tmp_path)

    def kill():
        raise KeyboardInterrupt('simulated kill')

    _crash_after(monkeypatch, 5, kill)
    with pytest.raises(KeyboardInterrupt):
        job.run(_config(), workdir, echo=lambda s: None)
    ckpt = checkpoints.RunCheckpointer(os.path.join(workdir, 'checkpoints'))
    arrays_meta = ckpt.manager.restore(ckpt.latest_step())
    ckpt.close()
    assert arrays_meta['meta']['phase'] == 2 and 0 < arrays_meta['meta']['step'] < 6
    monkeypatch.undo()
    logs = []
    job.run(_config(), workdir, echo=logs.append)
    assert any('resuming from checkpoint' in line for line in logs)
    step_ref, ref = final_arrays(ref_dir)
    step_new, new = final_arrays(workdir)
    assert step_ref == step_new
    jax.tree.map(np.testing.assert_array_equal, ref['arrays'], new['arrays'])


def test_sigterm_checkpoints_and_exits(tmp_path, monkeypatch):
    workdir = str(tmp_path)
    _crash_after(monkeypatch, 3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(errors.Preempted):
        job.run(_config(), workdir, echo=lambda s: None)
    ckpt = checkpoints.RunCheckpointer(os.path.join(workdir, 'checkpoints'))
    meta = ckpt.manager.restore(ckpt.latest_step())['meta']
    ckpt.close()
    assert meta['phase'] == 2 and meta['step'] > 0  # in the first distillation phase
    monkeypatch.undo()
    report = job.run(_config(), workdir, echo=lambda s: None)
    assert [p['kind'] for p in report['phases']][-2:] == ['recalibrate', 'distill']


def test_non_finite_loss_names_phase_and_step(tmp_path):
    c = _config(**{'reconstruct.learning_rate': 1e30, 'reconstruct.optimizer': 'adam'})
    c.cycles = 1
    with pytest.raises(FloatingPointError, match=r'reconstruct c1 round 1: non-finite .* at step'):
        job.run(c, str(tmp_path), echo=lambda s: None)


def test_other_schedule_in_the_same_workdir_is_refused(reference, tmp_path):
    import shutil

    workdir = str(tmp_path / 'copy')
    shutil.copytree(reference[0], workdir)
    c = _config()
    c.reconstruct.steps = 41  # an earlier phase: nothing can be reused
    with pytest.raises(errors.WorkdirError, match=r'reconstruct.steps: 40 -> 41'):
        job.run(c, workdir, echo=lambda s: None)


def test_a_changed_keep_reuses_every_phase_of_the_finished_run(reference, tmp_path):
    import shutil

    workdir = str(tmp_path / 'copy')
    shutil.copytree(reference[0], workdir)
    c = _config()
    c.keep = 'last'  # read by no phase: all six are shared
    logs = []
    report = job.run(c, workdir, echo=logs.append)
    labels = [p['label'] for p in reference[1]['phases'][1:]]
    assert report['reused'] == labels and len(labels) == 6
    assert any("only in later phases (keep: 'best' -> 'last')" in line for line in logs)
    assert not any(' done: ' in line for line in logs), logs  # no phase ran again
    for old, new in zip(reference[1]['phases'], report['phases'], strict=True):
        assert (old['top1'], old['rmse'], old.get('heldout')) == (
            new['top1'],
            new['rmse'],
            new.get('heldout'),
        )
    assert report['kept_phase'] == 'distill c2' and report['kept_reason'] == "keep='last'"
    # the original's top-1 is the earlier run's, not measured again
    assert report['top1_original'] == reference[1]['top1_original']
    assert any('eval/top1_original' in line and 'the earlier run' in line for line in logs)
    assert report['top1_reconstructed'] == report['phases'][-1]['top1']
    assert 'reused from the earlier run' in open(os.path.join(workdir, 'report.md')).read()


@pytest.mark.slow
def test_branching_off_a_finished_run_equals_a_fresh_run(tmp_path):
    c = _config()
    c.cycles = 1  # reconstruct, recalibrate, distill
    workdir = str(tmp_path / 'branched')
    job.run(c, workdir, echo=lambda s: None)
    c.distill.steps = 3
    logs = []
    branched = job.run(c, workdir, echo=logs.append)
    shared = ['reconstruct c1 round 1', 'recalibrate c1 after round 1']
    assert branched['reused'] == shared
    assert any(f'reused: {", ".join(shared)} from the earlier run' in line for line in logs)
    assert [line for line in logs if ' done: ' in line][0].split('] ')[1].startswith('distill')
    fresh = job.run(c, str(tmp_path / 'fresh'), echo=lambda s: None)
    assert [p['top1'] for p in branched['phases']] == [p['top1'] for p in fresh['phases']]
    a, b = (nrnp.load(os.path.join(w, 'compressed.nrnp')) for w in (workdir, tmp_path / 'fresh'))
    jax.tree.map(np.testing.assert_array_equal, a.predictor_params, b.predictor_params)


def test_finished_run_reruns_at_once_keeping_its_report(reference):
    workdir, report = reference
    md = open(os.path.join(workdir, 'report.md')).read()
    logs = []
    again = job.run(_config(), workdir, echo=logs.append)
    assert again == json.load(open(os.path.join(workdir, 'report.json')))
    assert again['wall_seconds'] == report['wall_seconds']  # the run's, not the rerun's
    assert open(os.path.join(workdir, 'report.md')).read() == md
    assert any('finished: its report stands' in line for line in logs), logs
    assert not any('eval/top1_original' in line for line in logs)  # nothing evaluated


def test_schedule_building():
    c = _config()
    c.reconstruct.steps, c.reconstruct.rounds, c.cycles = 10, 3, 1
    sched = schedule.build_schedule(c)
    assert [(p.kind, p.steps, p.round) for p in sched] == [
        ('reconstruct', 4, 1),
        ('recalibrate', 0, 1),
        ('reconstruct', 3, 2),
        ('recalibrate', 0, 2),
        ('reconstruct', 3, 3),
        ('recalibrate', 0, 3),
        ('distill', 6, 1),
    ]
    c.reconstruct.rounds = 0
    with pytest.raises(ValueError, match='rounds'):
        schedule.build_schedule(c)


def _mixed_size_folder(root, per_class: dict[str, int], seed=0, size=None):
    """PNG image folder, classes told apart by colour, each image of its own size (or all
    `size` x `size`)."""
    rng = np.random.default_rng(seed)
    colours = {'red': (200, 30, 30), 'green': (30, 200, 30), 'blue': (30, 30, 200)}
    for split, count in per_class.items():
        for name, colour in colours.items():
            os.makedirs(os.path.join(root, split, name))
            for i in range(count):
                h, w = rng.integers(6, 20, 2) if size is None else (size, size)
                img = np.clip(rng.normal(colour, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(os.path.join(root, split, name, f'{i}.png'))


def test_streamed_folder_of_mixed_sizes_runs_both_phases(tmp_path, monkeypatch):
    monkeypatch.setenv('NRNP_CACHE', str(tmp_path / 'cache'))
    root = str(tmp_path / 'imgs')
    _mixed_size_folder(root, {'train': 16, 'test': 5})
    c = _config(
        **{
            'data.image_folder': root,
            'data.streaming': True,
            'data.augment': 'random_resized_crop',
            'data.eval_crop': 'center',
            'data.image_size': 8,
            'data.channels': 3,
            'data.eval_batch_size': 4,
            'distill.batch_size': 8,
        }
    )
    c.cycles = 1
    report = job.run(c, str(tmp_path / 'run'), echo=lambda s: None)
    assert report['test_images'] == 15
    kinds = [p['kind'] for p in report['phases']]
    assert kinds == ['init', 'reconstruct', 'recalibrate', 'distill']
    assert report['phases'][2]['images'] == 32  # whole batches of 32 of the 48 (centre-cropped)
    assert report['top1_original'] > 60.0  # colours are easy, even from random crops
    assert not os.path.exists(tmp_path / 'cache' / 'images')  # streamed: nothing decoded ahead
    # Held in memory instead, the differing sizes are refused with the way out.
    c.data.streaming = False
    with pytest.raises(errors.DataError, match=r'(?s)pass image_size.*data.streaming=True'):
        job.run(c, str(tmp_path / 'mem'), echo=lambda s: None)


@pytest.mark.parametrize('streaming', [False, True])
def test_differing_class_folders_are_refused(tmp_path, streaming):
    root = str(tmp_path / 'imgs')
    _mixed_size_folder(root, {'train': 2, 'test': 2}, size=8)
    os.rename(os.path.join(root, 'test', 'blue'), os.path.join(root, 'test', 'cyan'))
    c = _config(
        **{
            'data.image_folder': root,
            'data.streaming': streaming,
            'data.augment': 'random_resized_crop',
            'data.eval_crop': 'center',
            'data.channels': 3,
        }
    )
    with pytest.raises(
        errors.DataError, match=r"only in train: \['blue'\].*only in test: \['cyan'\]"
    ):
        job.run(c, str(tmp_path / 'run'), echo=lambda s: None)
    c.data.channels = 2  # neither grey nor RGB: decoded as RGB, then refused
    with pytest.raises(errors.DataError, match='3-channel images but data.channels is 2'):
        job.run(c, str(tmp_path / 'run2'), echo=lambda s: None)


@pytest.mark.parametrize('streaming', [False, True])
def test_splits_are_resized_to_image_size_unless_a_crop_resizes(tmp_path, streaming):
    root = str(tmp_path / 'imgs')
    _mixed_size_folder(root, {'train': 2})
    c = _config(
        **{
            'data.image_folder': root,
            'data.streaming': streaming,
            'data.image_size': 5,
            'data.channels': 3,
        }
    )
    split = cli_data.load_split(c, 'train', str(tmp_path / 'run'), crops=False)
    images, labels = split.read(np.arange(6))
    assert {tuple(x.shape) for x in images} == {(5, 5, 3)} and list(labels) == [0, 0, 1, 1, 2, 2]
    if streaming:  # left as they are for random_resized_crop / the centre crop
        kept, _ = cli_data.load_split(c, 'train', str(tmp_path / 'run'), crops=True).read(
            np.arange(6)
        )
        assert len({x.shape for x in kept}) > 1

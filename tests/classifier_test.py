"""Teacher training: weight-decay groups, learning, exact resume, the workdir cache, devices.

The 8-device run happens in a subprocess (the device count is fixed when JAX starts):
`python tests/classifier_test.py` prints its result for the simulated devices it has.
"""

import functools
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import run_on_cpu_devices

from nrnp import errors
from nrnp.configs import default
from nrnp.data import batching, dataset
from nrnp.nets import models
from nrnp.pipeline import targets
from nrnp.reporting import progress
from nrnp.training import classifier, evaluation, sharding

MODEL = models.build_model('smallcnn', 4, widths=(4, 8, 8))


def _images(n=64, seed=0):
    """n 8x8 grey images whose class (of 4) is the quadrant holding a bright square."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n).astype(np.int32)
    images = rng.integers(0, 60, (n, 8, 8, 1)).astype(np.uint8)
    for i, y in enumerate(labels):
        r, c = 4 * (y // 2), 4 * (y % 2)
        images[i, r : r + 4, c : c + 4] += 150
    return dataset.Dataset(images, labels, 4, tuple('abcd'))


def _recipe(**kw):
    kw = {'steps': 12, 'batch_size': 16, 'augment': 'crop_flip', 'pad': 1, **kw}
    return classifier.Recipe(**kw)


def _train(recipe, workdir=None, log=lambda s: None, **kw):
    init = models.init_variables(MODEL, (1, 8, 8, 1), seed=0)
    return classifier.train_classifier(
        MODEL, init, _images(), recipe, mean=(0.3,), std=(0.3,), workdir=workdir, log=log, **kw
    )


@pytest.mark.slow
def test_weight_decay_only_on_kernels():
    recipe = _recipe(learning_rate=0.1, momentum=0.9, weight_decay=0.5)
    variables = models.init_variables(MODEL, (1, 8, 8, 1), seed=0)
    labels = classifier.decay_labels(variables['params'])
    flat = {jax.tree_util.keystr(p): v for p, v in jax.tree.leaves_with_path(labels)}
    assert flat["['conv1']['kernel']"] == flat["['linear']['kernel']"] == 'decay'
    assert flat["['bn1']['scale']"] == flat["['bn1']['bias']"] == 'no_decay'
    assert flat["['linear']['bias']"] == 'no_decay'
    tx = classifier.make_optimizer(recipe)
    state = classifier.init_state(variables, tx)
    batch = next(batching.train_batches(_images(), 16, seed=0, augment='none'))
    images, y = jnp.asarray(batch[0]), jnp.asarray(batch[1])

    def loss(params):
        logits, _ = MODEL.apply(
            {'params': params, 'batch_stats': variables['batch_stats']},
            images,
            train=True,
            mutable=['batch_stats'],
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.jit(jax.grad(loss))(variables['params'])
    step = jax.jit(functools.partial(classifier.train_step, model=MODEL, tx=tx))
    new, metrics = step(state, images, y)
    assert float(metrics['train/loss']) == pytest.approx(float(loss(variables['params'])))
    for (path, p), g, q, label in zip(
        jax.tree.leaves_with_path(variables['params']),
        jax.tree.leaves(grads),
        jax.tree.leaves(new.params),
        jax.tree.leaves(labels),
        strict=True,
    ):
        decay = 0.5 * p if label == 'decay' else 0.0  # first SGD step: update = -lr (g + wd p)
        want = p - 0.1 * (g + decay)
        np.testing.assert_allclose(q, want, rtol=1e-5, atol=1e-7, err_msg=str(path))
    assert int(new.step) == 1


def test_sgd_recipe_learns_and_logs_progress(monkeypatch):
    monkeypatch.setattr(progress, 'SECONDS', 1e9)  # lines by steps only
    logs = []
    # No flip here: it would swap the classes (left and right quadrants) of these images.
    recipe = _recipe(steps=60, learning_rate=0.1, weight_decay=5e-4, augment='none')
    variables = _train(recipe, log=logs.append, log_every=20)
    lines = [s for s in logs if s.startswith('teacher training 20/60')]
    assert lines and 'ETA' in lines[0] and 'step/s' in lines[0]
    losses = [float(s.split('train/loss=')[1].split()[0]) for s in logs if 'train/loss=' in s]
    assert len(losses) == 3 and losses[-1] < 0.5 * losses[0]
    test = _images(200, seed=1)
    x = batching.normalise(test.images, (0.3,), (0.3,))
    assert evaluation.top1(MODEL, variables, x, test.labels) > 90.0


def test_teacher_training_logs_every_few_seconds_too(monkeypatch):
    monkeypatch.setattr(progress, 'SECONDS', 0.0)  # every step is "a while" later
    logs = []
    _train(_recipe(steps=5, augment='none'), log=logs.append, log_every=1000)
    shown = [s.split()[2] for s in logs if s.startswith('teacher training ') and 'ETA' in s]
    assert shown == ['1/5', '2/5', '3/5', '4/5', '5/5']


def test_step_schedule_and_adam():
    step = classifier.learning_rate_schedule(_recipe(schedule='step', steps=100))
    assert [float(step(s)) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    adam = _recipe(optimizer='adam', learning_rate=3e-3, weight_decay=0.0, augment='none')
    assert adam.describe() == 'adam lr 0.003 cosine, 12 steps of 16, none'
    with pytest.raises(errors.ConfigError, match='train_schedule'):
        _recipe(schedule='linear')


@pytest.mark.slow
def test_interrupted_training_resumes_bit_exact(tmp_path, monkeypatch):
    recipe = _recipe(steps=10)
    whole = _train(recipe, str(tmp_path / 'whole'), checkpoint_every=4)
    real = batching.train_batches

    def sigterm_at_step_6(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 5 and kwargs['start_step'] == 0:
                os.kill(os.getpid(), signal.SIGTERM)
            yield item

    monkeypatch.setattr(batching, 'train_batches', sigterm_at_step_6)
    logs = []
    with pytest.raises(errors.Preempted, match='teacher training stopped at step'):
        _train(recipe, str(tmp_path / 'cut'), checkpoint_every=4, log=logs.append)
    resumed = _train(recipe, str(tmp_path / 'cut'), checkpoint_every=4, log=logs.append)
    assert any('resuming from the checkpoint of step' in s for s in logs)
    jax.tree.map(np.testing.assert_array_equal, whole, resumed)
    with pytest.raises(errors.WorkdirError, match=r'learning_rate: 0.1 -> 0.2'):
        _train(_recipe(steps=10, learning_rate=0.2), str(tmp_path / 'cut'), checkpoint_every=4)


def test_non_finite_loss_names_the_step():
    with pytest.raises(errors.NonFiniteError, match=r'non-finite loss nan at step \d+'):
        _train(_recipe(learning_rate=1e30, steps=8), log_every=4)


def _config(**teacher):
    c = default.get_config('tiny')
    c.teacher.train_steps = 10
    c.teacher.train_batch_size = 32
    for key, value in teacher.items():
        c.teacher[key] = value
    return c


def _load_or_train(config, workdir, train_data_fn):
    test = dataset.load_digits('test')
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    images = batching.normalise(test.images, config.data.mean, config.data.std)

    def test_top1(mesh):
        return lambda variables: evaluation.top1(model, variables, images, test.labels, 500, mesh)

    return targets.load_or_train(
        config,
        model,
        (1, 8, 8, 1),
        workdir=str(workdir),
        train_data_fn=train_data_fn,
        test_top1=test_top1,
        test_images=len(test),
        log=lambda s: None,
    )


@pytest.mark.slow
def test_cache_reused_only_for_the_same_training_config(tmp_path):
    trained, source = _load_or_train(_config(), tmp_path, lambda: dataset.load_digits('train'))
    assert source.startswith('trained: adam lr 0.003 cosine, 10 steps of 32, none; top-1 ')
    assert source.endswith(f"on the 360 'test' images, cached in {tmp_path}/teacher")
    meta = json.load(open(tmp_path / 'teacher.json'))
    assert meta['training']['recipe']['steps'] == 10 and 0 <= meta['top1'] <= 100
    assert meta['training']['data']['dataset'] == 'digits'

    def no_training():
        raise AssertionError('the cached teacher should have been reused')

    again, source2 = _load_or_train(_config(), tmp_path, no_training)
    assert source2 == source
    jax.tree.map(np.testing.assert_array_equal, trained, again)
    with pytest.raises(errors.WorkdirError, match=r'recipe.steps: 10 -> 30'):
        _load_or_train(_config(train_steps=30), tmp_path, no_training)
    with pytest.raises(errors.WorkdirError, match=r'optimizer: .adam. -> .sgd.'):
        _load_or_train(_config(train_optimizer='sgd'), tmp_path, no_training)
    os.remove(tmp_path / 'teacher.json')  # a teacher cached by an older nrnp
    with pytest.raises(errors.WorkdirError, match='training config is unknown'):
        _load_or_train(_config(), tmp_path, no_training)
    with pytest.raises(errors.ConfigError, match='train_steps is 0'):
        _load_or_train(_config(train_steps=0), tmp_path / 'other', no_training)


def _eight_device_run() -> dict:
    return run_on_cpu_devices(__file__, 8, timeout=300)


def _summary() -> dict:
    mesh = sharding.make_mesh()
    variables = _train(_recipe(steps=4), mesh=mesh)
    return {
        'devices': mesh.shape[sharding.DATA],
        'leaves': [np.asarray(x).ravel()[:40].tolist() for x in jax.tree.leaves(variables)],
    }


@pytest.mark.slow
def test_one_and_eight_devices_agree():
    one, eight = _summary(), _eight_device_run()
    assert one['devices'] == jax.device_count() and eight['devices'] == 8
    for a, b in zip(one['leaves'], eight['leaves'], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


if __name__ == '__main__':
    print(json.dumps(_summary()))

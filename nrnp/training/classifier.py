"""Training a classifier from scratch: the teacher of runs that have no checkpoint.

  recipe = Recipe(optimizer='sgd', learning_rate=0.1, weight_decay=5e-4, steps=78_200)
  variables = train_classifier(model, init_variables, dataset, recipe, mean=MEAN, std=STD,
                               workdir=W, mesh=sharding.make_mesh())

The standard CIFAR recipe is SGD with momentum 0.9, lr 0.1, batch 128, weight decay 5e-4,
cosine or step decay, crop (pad 4) + flip; Adam stays available (the digits default).
Weight decay is L2 added to the gradients of conv and dense kernels only, never to
BatchNorm scales and biases or dense biases: `decay_labels` partitions the params by
their path and `optax.multi_transform` applies the decay to one group. This is the one
place nrnp partitions parameters into groups (the predictor's optimizers treat all
params alike).

The step is jitted once over a `data` mesh (images split, state replicated, state
donated); batches are a function of (seed, step), so a run killed and restarted from its
orbax checkpoint (`RunCheckpointer`, every `checkpoint_every` steps, at SIGTERM/Ctrl-C
and at the end) ends bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nrnp import choices, files
from nrnp.data import batching, threads
from nrnp.errors import ConfigError, NonFiniteError, Preempted, WorkdirError
from nrnp.reporting import progress as progress_lines
from nrnp.training import checkpoints, interrupts, sharding

STEP_DECAY = {0.5: 0.1, 0.75: 0.1}  # 'step': x0.1 at 50 % and 75 % (He et al.: 32k, 48k of 64k)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a classifier is trained; every field changes the result (the cache key).

    Attributes:
      optimizer: 'sgd' (momentum) or 'adam'.
      learning_rate: peak learning rate.
      schedule: 'cosine' (to 0 at `steps`) or 'step' (`STEP_DECAY`).
      momentum: SGD momentum (ignored by Adam).
      nesterov: SGD Nesterov momentum.
      weight_decay: L2 coefficient on conv/dense kernels (0: none).
      steps: training steps.
      batch_size: images per global batch.
      seed: batch order and augmentation seed.
      augment: 'crop_flip', 'random_resized_crop' or 'none' (`batching.train_batches`).
      pad: crop padding for 'crop_flip'.
      image_size: output side of 'random_resized_crop' (None: as stored).
    """

    optimizer: str = 'sgd'
    learning_rate: float = 0.1
    schedule: str = 'cosine'
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    steps: int = 78_200
    batch_size: int = 128
    seed: int = 0
    augment: str = 'crop_flip'
    pad: int = 4
    image_size: int | None = None

    def __post_init__(self):
        if self.optimizer not in choices.TEACHER_OPTIMIZERS:
            raise ConfigError(
                f'teacher.train_optimizer must be one of {choices.TEACHER_OPTIMIZERS}, '
                f'got {self.optimizer!r}'
            )
        if self.schedule not in choices.TEACHER_SCHEDULES:
            raise ConfigError(
                f'teacher.train_schedule must be one of {choices.TEACHER_SCHEDULES}, '
                f'got {self.schedule!r}'
            )
        if self.steps < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ConfigError(
                f'teacher training needs steps >= 1, batch_size >= 1 and learning_rate > 0 '
                f'(got {self.steps}, {self.batch_size}, {self.learning_rate})'
            )

    def describe(self) -> str:
        """E.g. 'sgd lr 0.1 momentum 0.9 wd 0.0005 cosine, 2000 steps of 128, crop_flip'."""
        how = f'{self.optimizer} lr {self.learning_rate:g}'
        if self.optimizer == 'sgd':
            how += f' momentum {self.momentum:g}' + (' nesterov' if self.nesterov else '')
        if self.weight_decay:
            how += f' wd {self.weight_decay:g}'
        return f'{how} {self.schedule}, {self.steps} steps of {self.batch_size}, {self.augment}'


@flax.struct.dataclass
class TrainState:
    """What a classifier step trains (donated each step, checkpointed whole).

    Attributes:
      step: steps done, int32 scalar.
      params, batch_stats: the network's variables.
      opt_state: the optimizer's state.
    """

    step: jax.Array
    params: dict
    batch_stats: dict
    opt_state: optax.OptState


def decay_labels(params) -> dict:
    """'decay' on every `kernel` leaf (conv and dense), 'no_decay' elsewhere (BN, biases)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: 'decay' if getattr(path[-1], 'key', None) == 'kernel' else 'no_decay',
        params,
    )


def learning_rate_schedule(recipe: Recipe) -> optax.Schedule:
    """Cosine from `learning_rate` to 0 over `steps`, or x0.1 at 50 % and 75 % of them."""
    if recipe.schedule == 'cosine':
        return optax.cosine_decay_schedule(recipe.learning_rate, recipe.steps)
    boundaries = {int(f * recipe.steps): factor for f, factor in STEP_DECAY.items()}
    return optax.piecewise_constant_schedule(recipe.learning_rate, boundaries)


def make_optimizer(recipe: Recipe) -> optax.GradientTransformation:
    """The recipe's optimizer: L2 on kernels (multi_transform) chained before SGD or Adam."""
    lr = learning_rate_schedule(recipe)
    if recipe.optimizer == 'sgd':
        base = optax.sgd(lr, momentum=recipe.momentum or None, nesterov=recipe.nesterov)
    else:
        base = optax.adam(lr)
    if not recipe.weight_decay:
        return base
    decay = optax.multi_transform(
        {'decay': optax.add_decayed_weights(recipe.weight_decay), 'no_decay': optax.identity()},
        decay_labels,
    )
    return optax.chain(decay, base)  # PyTorch's weight_decay: grad + wd * w, then momentum


def init_state(variables: dict, tx: optax.GradientTransformation) -> TrainState:
    params = variables['params']
    return TrainState(jnp.zeros([], jnp.int32), params, variables['batch_stats'], tx.init(params))


def train_step(state: TrainState, images, labels, *, model, tx):
    """One cross-entropy step with BatchNorm in training mode.

    Args:
      state: the `TrainState` (donated by the caller's jit).
      images: `[B, H, W, C]` float32, normalised; labels: `[B]` int32.
      model: the Linen classifier; tx: `make_optimizer(recipe)`.

    Returns:
      (new state, {'train/loss': mean cross-entropy, 'train/top1': batch top-1 percent}).
    """

    def loss_fn(params):
        variables = {'params': params, 'batch_stats': state.batch_stats}
        logits, updates = model.apply(variables, images, train=True, mutable=['batch_stats'])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (updates['batch_stats'], logits)

    (loss, (batch_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    top1 = 100.0 * jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
    new = TrainState(state.step + 1, params, batch_stats, opt_state)
    return new, {'train/loss': loss, 'train/top1': top1}


def _check_finite(losses: list, first_step: int, last_good: int | None):
    """Raises NonFiniteError at the first non-finite loss among `losses` (steps from first_step)."""
    if not losses:
        return
    values = np.asarray(jnp.stack(losses))
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        kept = f'the checkpoint of step {last_good} is kept' if last_good else 'no checkpoint kept'
        raise NonFiniteError(
            f'teacher training: non-finite loss {values[bad[0]]} at step '
            f'{first_step + int(bad[0])}; {kept} (lower teacher.train_learning_rate?)'
        )


def _resume(ckpt, state: TrainState, fingerprint: dict, workdir, log) -> TrainState:
    """`state`, or the newest good checkpoint's when `ckpt` holds one of the same fingerprint
    (damaged checkpoints are set aside by the checkpointer)."""
    saved = ckpt.latest_meta() if ckpt else None
    if saved is None:
        return state
    changed = files.differences(saved.get('fingerprint', {}), fingerprint)
    if changed:
        ckpt.close()
        raise WorkdirError(
            f'{workdir} holds a teacher training of another config ('
            + '; '.join(changed)
            + f'); delete {workdir} to start over, or use a new --workdir'
        )
    restored = ckpt.restore_latest({'state': state})
    if restored is None:
        return state
    state = restored[0]['state']
    log(f'teacher training: resuming from the checkpoint of step {int(state.step)}')
    return state


def _batches(dataset, recipe: Recipe, first: int, mean, std):
    """The training batches from step `first` (prefetched; none when training is done)."""
    if first >= recipe.steps:
        return (b for b in ())
    batches = batching.train_batches(
        dataset,
        batch_size=min(recipe.batch_size, len(dataset)),
        seed=recipe.seed,
        start_step=first,
        augment=recipe.augment,
        mean=mean,
        std=std,
        pad=recipe.pad,
        image_size=recipe.image_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    return threads.prefetch(batches)


def _steps(state, step_fn, batches, recipe: Recipe, first: int, mesh, ckpt, meta, every, log):
    """Steps `first + 1 .. recipe.steps`: the losses checked, logged (every `every[0]`
    steps and every `progress_lines.SECONDS` of wall time) and checkpointed (`ckpt`, every
    `every[1]` steps) as `train_classifier` says; returns the last state."""
    log_every, checkpoint_every = every
    progress = progress_lines.Progress(
        recipe.steps, 'teacher training', log, log_every, first=first
    )
    last_saved = first or None
    losses, checked = [], first + 1  # device scalars since the last finiteness check
    # XLA:CPU over 8 simulated devices deadlocked twice at a collective's rendezvous (ResNet20,
    # steps queued ahead unwaited): there each step is waited for; elsewhere one runs ahead.
    cpu_mesh = mesh.devices.size > 1 and mesh.devices.flat[0].platform == 'cpu'
    with interrupts.catch(log) as stop:
        for step in range(first + 1, recipe.steps + 1):
            images, labels = next(batches)
            images = sharding.global_batch(images, mesh)
            state, metrics = step_fn(state, images, sharding.global_batch(labels, mesh))
            if cpu_mesh:
                metrics['train/loss'].block_until_ready()
            elif losses:
                losses[-1].block_until_ready()  # the previous step
            losses.append(metrics['train/loss'])
            logging = step % log_every == 0 or step == recipe.steps or progress.due()
            saving = step == recipe.steps or step % checkpoint_every == 0 or stop.requested
            if logging or saving:
                _check_finite(losses, checked, last_saved)
                losses, checked = [], step + 1
            if logging:
                progress.update(step, metrics, force=True)
            if saving and ckpt:
                ckpt.save(step, {'state': state}, meta)
                last_saved = step
            if stop.requested and step < recipe.steps:
                raise Preempted(
                    f'{stop.requested}: teacher training stopped at step {step}, checkpoint '
                    f'in {ckpt.directory if ckpt else "none"}; run the same command again to '
                    'resume'
                )
    return state


def train_classifier(
    model,
    variables: dict,
    dataset,
    recipe: Recipe,
    *,
    mean,
    std,
    workdir: str | None = None,
    fingerprint: dict | None = None,
    mesh=None,
    checkpoint_every: int = 1000,
    log_every: int = 200,
    log=print,
) -> dict:
    """Trains `model` from `variables` as `recipe` says; returns the trained variables.

    Args:
      model: a Linen classifier (`model.apply(v, x, train=True, mutable=['batch_stats'])`).
      variables: initial `{'params', 'batch_stats'}`.
      dataset: the training set (`len()` and `read(index)`: `data.Dataset` or a source).
      recipe: the `Recipe`.
      mean, std: per-channel input normalisation.
      workdir: checkpoint directory (orbax), resumed from when it holds a checkpoint of
        the same `fingerprint`; None: no checkpoints.
      fingerprint: JSON-able description of everything that shapes the result (model,
        data, recipe), stored with each checkpoint; default: the recipe's fields.
      mesh: device mesh (None: one device); images are split over its 'data' axis.
      checkpoint_every: steps between checkpoints (and at the end).
      log_every: steps between progress lines (and at least every 10 s).
      log: progress sink.

    Returns:
      `{'params', 'batch_stats'}` as numpy arrays.

    Raises:
      WorkdirError: `workdir` holds a checkpoint of another fingerprint.
      NonFiniteError: a non-finite loss (the message names the step and the loss).
      Preempted: SIGTERM or Ctrl-C; a checkpoint of the current step was written.
    """
    mesh = mesh or sharding.make_mesh(1)
    tx = make_optimizer(recipe)
    meta = {'fingerprint': json.loads(json.dumps(fingerprint or dataclasses.asdict(recipe)))}
    ckpt = checkpoints.RunCheckpointer(workdir, log=log) if workdir else None
    state = _resume(ckpt, init_state(variables, tx), meta['fingerprint'], workdir, log)
    first = int(state.step)
    state = sharding.replicate(state, mesh)
    step_fn = jax.jit(
        functools.partial(train_step, model=model, tx=tx),
        donate_argnums=0,
        out_shardings=(sharding.replicated(mesh),) * 2,
    )
    batches = _batches(dataset, recipe, first, mean, std)
    start = time.time()
    try:
        every = (log_every, checkpoint_every)
        state = _steps(state, step_fn, batches, recipe, first, mesh, ckpt, meta, every, log)
    finally:
        batches.close()
        if ckpt:
            ckpt.close()
    done, seconds = recipe.steps - first, time.time() - start
    if done:
        log(
            f'teacher training done: {done} steps in {seconds:.1f} s '
            f'({seconds / done:.3f} s/step, compilation included)'
        )
    return jax.tree.map(np.asarray, {'params': state.params, 'batch_stats': state.batch_stats})

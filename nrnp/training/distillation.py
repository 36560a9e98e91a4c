"""The distillation phase: train the predictor through the rebuilt network (KD + feature maps).

  step = jax.jit(functools.partial(distillation_step, setup=setup, tx=tx, loss_weights=w),
                 donate_argnums=0)
  state, metrics = step(state, problem, frozen, images, key)

Every step rebuilds all kernels from the predictor, runs the rebuilt target with
BatchNorm in inference mode (the run's statistics: the original ones, or re-estimated
ones after a 'recalibrate' phase; `batch_norm='batch'`: each batch's own) and the
copied parameters frozen, and backpropagates into the predictor. By default only the step's
magnitude-oriented kernel batch carries gradient (NeRN); `grad_through='all'`
sends it through every kernel. With `quantize` set, the predictor's weights are
fake-quantized first (`core.quantize.fake_quantize_tree`): the rebuilt network is the one
the artefact stores, and the gradient passes straight through the rounding.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import optax

from nrnp.core import kernel_rows, kernels, quantize
from nrnp.nets import batchnorm, models
from nrnp.training import device_data, losses, optim, reconstruction, sharding


@dataclasses.dataclass(frozen=True)
class DistillSetup:
    """Static description of a distillation step (hashable; bind with functools.partial).

    Attributes:
      predictor: the predictor module.
      target: the target (student) network module.
      teacher: the teacher network module (the target itself by default).
      layout: the kernel table layout.
      batch_size: kernels per gradient batch.
      magnitude_fraction: share of magnitude-sampled kernel batches.
      grad_through: 'batch' (NeRN) or 'all' kernels.
      temperature: KD temperature T (loss scaled by T^2).
      stable_kd: NeRN's log(p + 1e-4) form of the KL.
      use_features: compute the feature-map loss (teacher and student maps must match).
      mesh: optional mesh: kernel rows are split over its 'data' axis.
      quantize: train through this storage rounding (`core.quantize.Scheme`).
      batch_norm: what the student's BatchNorm normalises with: 'running' (the `Frozen`
        statistics) or 'batch' (each batch's own statistics, as in training).
    """

    predictor: object
    target: object
    teacher: object
    layout: kernel_rows.KernelLayout
    batch_size: int
    magnitude_fraction: float = 0.2
    grad_through: str = 'batch'
    temperature: float = 1.0
    stable_kd: bool = True
    use_features: bool = True
    mesh: object = None
    quantize: quantize.Scheme = quantize.NONE
    batch_norm: str = 'running'


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Frozen:
    """Arrays a distillation step reads but never trains, donates or checkpoints.

    Attributes:
      params: the target's params (copied leaves are used as they are).
      batch_stats: the target's BatchNorm statistics.
      teacher_variables: {'params', 'batch_stats'} of the teacher.
    """

    params: dict
    batch_stats: dict
    teacher_variables: dict


def predicted_rows(setup: DistillSetup, pparams, problem, key):
    """All kernel rows, with gradient only through a sampled batch (or all rows).

    A row drawn m times by a magnitude batch gets m times its gradient: the
    batch's predictions are added as `rows_b - stop_gradient(rows_b)`, zero in
    value, one gradient path per draw.

    Returns:
      `[num_kernels, 9]` float32.
    """

    def apply(x):
        return setup.predictor.apply({'params': pparams}, sharding.constrain_rows(x, setup.mesh))

    if setup.grad_through == 'all':
        return apply(problem.encoded)
    if setup.grad_through != 'batch':
        raise ValueError(f"grad_through must be 'batch' or 'all', got {setup.grad_through!r}")
    idx = reconstruction.sample_kernel_batch(
        key, problem.probs, setup.batch_size, setup.magnitude_fraction
    )
    rows = jax.lax.stop_gradient(apply(problem.encoded))
    batch = apply(problem.encoded[idx])
    return rows.at[idx].add(batch - jax.lax.stop_gradient(batch))


def distillation_losses(setup: DistillSetup, pparams, problem, frozen: Frozen, images, key):
    """The distillation loss terms for one batch of images.

    Args:
      setup: static settings.
      pparams: predictor params.
      problem: a `reconstruction.ReconstructionProblem` (encodings, targets, mask, probs).
      frozen: target params/batch stats and teacher variables.
      images: `[B, H, W, C]` float32, normalised and augmented.
      key: PRNG key of this step.

    Returns:
      {'distill/kd', 'distill/fm', 'distill/rec', 'distill/top1_agree'} scalars.
    """
    chex.assert_rank(images, 4)  # [B, H, W, C]
    chex.assert_type(images, jnp.float32)
    pparams = quantize.fake_quantize_tree(pparams, setup.quantize)  # identity for 'none'
    rows = predicted_rows(setup, pparams, problem, key)
    params = kernels.scatter(setup.layout, rows, frozen.params)
    student = {'params': params, 'batch_stats': frozen.batch_stats}
    if setup.batch_norm == 'batch':
        with batchnorm.batch_statistics():
            s_logits, s_maps = models.apply_with_features(setup.target, student, images)
    else:
        s_logits, s_maps = models.apply_with_features(setup.target, student, images)
    t_logits, t_maps = models.apply_with_features(setup.teacher, frozen.teacher_variables, images)
    t_logits = jax.lax.stop_gradient(t_logits)
    t_maps = [jax.lax.stop_gradient(m) for m in t_maps]
    out = {
        'distill/kd': losses.kd_loss(t_logits, s_logits, setup.temperature, setup.stable_kd),
        'distill/rec': losses.reconstruction_loss(rows, problem.target, problem.mask),
        'distill/top1_agree': jnp.mean(
            (jnp.argmax(t_logits, -1) == jnp.argmax(s_logits, -1)).astype(jnp.float32)
        ),
    }
    out['distill/fm'] = (
        losses.feature_map_loss(t_maps, s_maps) if setup.use_features else jnp.zeros([])
    )
    return out


def distillation_step(
    state: reconstruction.PredictorState,
    problem,
    frozen: Frozen,
    images,
    key,
    *,
    setup: DistillSetup,
    tx: optax.GradientTransformation,
    loss_weights: tuple[float, float, float],
):
    """One distillation update.

    Args:
      state: trained state (donate it).
      problem: `reconstruction.ReconstructionProblem` (not donated).
      frozen: `Frozen` arrays (not donated).
      images: `[B, H, W, C]` float32 (sharded over the data axis when on a mesh).
      key: the phase's PRNG key; the step's key is fold_in(key, state.step).
      setup: static settings.
      tx: the optimizer (the run's `optim.phase_switch`, in its distillation phase).
      loss_weights: (kd, feature maps, reconstruction) weights.

    Returns:
      (new state, metrics: 'distill/loss', its terms and 'distill/lr', the learning rate
      applied (none for an optimizer that does not keep it, `optim.learning_rate`)).
    """
    w_kd, w_fm, w_rec = loss_weights
    step_key = jax.random.fold_in(key, state.step)

    def loss_fn(pparams):
        terms = distillation_losses(setup, pparams, problem, frozen, images, step_key)
        total = w_kd * terms['distill/kd'] + w_fm * terms['distill/fm']
        total = total + w_rec * terms['distill/rec']
        return total, terms

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.pparams)
    updates, opt_state = tx.update(grads, state.opt_state, state.pparams)
    new_state = state.replace(
        step=state.step + 1,
        pparams=optax.apply_updates(state.pparams, updates),
        opt_state=opt_state,
    )
    lr = optim.learning_rate(opt_state, tx)
    return new_state, {'distill/loss': loss, **terms, **({} if lr is None else {'distill/lr': lr})}


def distillation_step_on_device(
    state: reconstruction.PredictorState,
    problem,
    frozen: Frozen,
    split,
    data_key,
    step_in_phase,
    key,
    *,
    setup: DistillSetup,
    tx: optax.GradientTransformation,
    loss_weights: tuple[float, float, float],
    batch_size: int,
    augment: str,
    pad: int,
    mean: tuple,
    std: tuple,
):
    """`distillation_step` on images drawn, augmented and normalised on the device.

    Args:
      state, problem, frozen, key, setup, tx, loss_weights: as `distillation_step`.
      split: `device_data.DeviceSplit`, the training images on the device(s).
      data_key: the run's data key for this cycle.
      step_in_phase: int32 scalar, 0-based step within the phase (traced: no recompiles).
      batch_size, augment, pad, mean, std: `device_data.train_images` settings (static).

    Returns:
      (new state, metrics), as `distillation_step`.
    """
    images = device_data.train_images(
        split,
        data_key,
        step_in_phase,
        batch_size=batch_size,
        augment=augment,
        pad=pad,
        mean=mean,
        std=std,
    )
    images = sharding.constrain_rows(images, setup.mesh)  # [B, H, W, C] over 'data'
    return distillation_step(
        state, problem, frozen, images, key, setup=setup, tx=tx, loss_weights=loss_weights
    )

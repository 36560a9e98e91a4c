"""The reconstruction phase: fit the predictor to kernel rows with magnitude-oriented batches.

  step = jax.jit(functools.partial(reconstruction_step, model=model, tx=tx, batch_size=4096),
                 donate_argnums=0)
  state, metrics = step(state, problem, rng)

Only the step's batch of kernels is predicted: the loss and its gradient need
nothing else, so a reconstruction step costs one MLP pass over `batch_size` rows.
`scheme` fits the predictor as stored (fake-quantized, straight-through gradient,
`core.quantize`): the 'quantize' phase's step.
"""

from __future__ import annotations

import chex
import flax.struct
import jax
import jax.numpy as jnp
import optax

from nrnp.core import predictor, quantize
from nrnp.training import losses, optim, sharding


@flax.struct.dataclass
class PredictorState:
    """What the phases train: predictor params, their optimizer state, the global step.

    Attributes:
      step: global step counter (all phases), int32 scalar; keys are fold_in(key, step).
      pparams: predictor params.
      opt_state: the state of the run's optimizer, normally an `optim.phase_switch`
        holding one optimizer state per phase (kept across phase switches, so
        returning to a phase resumes its moments).
    """

    step: jax.Array
    pparams: dict
    opt_state: optax.OptState


@flax.struct.dataclass
class ReconstructionProblem:
    """The fixed inputs of reconstruction (never donated, never checkpointed but `target`).

    Attributes:
      encoded: `[N, input_dim]` float32, encoded coordinate of each kernel slot.
      target: `[N, 9]` float32, the rows to fit (original weights, or the previous
        round's rebuilt weights in progressive reconstruction).
      mask: `[N, 9]` float32, 1 on real weights.
      probs: `[N]` float32, sampling probability of each row in magnitude batches
        (proportional to the original kernel's L2 norm).
    """

    encoded: jax.Array
    target: jax.Array
    mask: jax.Array
    probs: jax.Array


def magnitude_probabilities(rows, mask):
    """`[N, 9]` kernel rows -> `[N]` probabilities proportional to each kernel's L2 norm."""
    norms = jnp.sqrt(jnp.sum(jnp.square(rows * mask), axis=-1))
    total = jnp.sum(norms)
    uniform = jnp.full_like(norms, 1.0 / norms.shape[0])
    return jnp.where(total > 0, norms / jnp.where(total > 0, total, 1.0), uniform)


def sample_kernel_batch(key, probs, batch_size: int, magnitude_fraction: float = 0.2):
    """Row indices of one step's gradient batch (METHOD.md section 6).

    With probability `magnitude_fraction` the batch is drawn with replacement in
    proportion to `probs` (a row drawn m times then gets m times its gradient);
    otherwise uniformly without replacement.

    Args:
      key: PRNG key of this step.
      probs: `[N]` float32 sampling probabilities.
      batch_size: rows per batch (at most N).
      magnitude_fraction: share of steps that use magnitude sampling.

    Returns:
      `[batch_size]` int32 row indices.
    """
    n = probs.shape[0]
    if batch_size > n:
        raise ValueError(f'kernel batch {batch_size} exceeds the {n} kernels of the table')
    k_which, k_uniform, k_magnitude = jax.random.split(key, 3)
    use_magnitude = jax.random.uniform(k_which) < magnitude_fraction

    def uniform():
        # The batch_size largest of n iid uniforms are a uniform subset without
        # replacement; top_k is ~10x faster on CPU than choice(replace=False)'s
        # full permutation (3 ms vs 29 ms at n = 29,744, b = 4096).
        return jax.lax.top_k(jax.random.uniform(k_uniform, (n,)), batch_size)[1]

    return jax.lax.cond(
        use_magnitude,
        lambda: jax.random.choice(k_magnitude, n, (batch_size,), replace=True, p=probs),
        uniform,
    ).astype(jnp.int32)


def reconstruction_step(
    state: PredictorState,
    problem: ReconstructionProblem,
    key,
    *,
    model,
    tx: optax.GradientTransformation,
    batch_size: int,
    magnitude_fraction: float = 0.2,
    mesh=None,
    scheme: quantize.Scheme = quantize.NONE,
    name: str = 'recon',
):
    """One reconstruction update on a magnitude-oriented batch of kernels.

    Args:
      state: the trained state (donate it).
      problem: encodings, targets, mask and sampling probabilities.
      key: the phase's PRNG key; the step's key is fold_in(key, state.step).
      model: the predictor module (bind with functools.partial).
      tx: the optimizer (the run's `optim.phase_switch`, in its reconstruction phase).
      batch_size: kernels per gradient batch.
      magnitude_fraction: share of magnitude-sampled batches.
      mesh: optional mesh; the kernel batch is split over its 'data' axis.
      scheme: fit through this storage rounding (`core.quantize.Scheme`; NONE: float).
      name: the metrics' namespace ('quantize' for the quantize phase).

    Returns:
      (new state, {'recon/loss': batch RMSE, 'recon/lr': the learning rate applied}); no
      'lr' for an optimizer that does not keep it (`optim.learning_rate`).
    """
    chex.assert_rank([problem.encoded, problem.target, problem.mask, problem.probs], [2, 2, 2, 1])
    chex.assert_equal_shape([problem.target, problem.mask])  # [N, 9]
    chex.assert_equal_shape_prefix([problem.encoded, problem.target, problem.probs], 1)
    step_key = jax.random.fold_in(key, state.step)
    idx = sample_kernel_batch(step_key, problem.probs, batch_size, magnitude_fraction)
    idx = sharding.constrain_rows(idx, mesh)  # the batch's rows are split over devices
    x, y, m = problem.encoded[idx], problem.target[idx], problem.mask[idx]

    def loss_fn(pparams):
        pparams = quantize.fake_quantize_tree(pparams, scheme)  # identity for NONE
        return losses.reconstruction_loss(model.apply({'params': pparams}, x), y, m)

    loss, grads = jax.value_and_grad(loss_fn)(state.pparams)
    updates, opt_state = tx.update(grads, state.opt_state, state.pparams)
    pparams = optax.apply_updates(state.pparams, updates)
    new_state = state.replace(step=state.step + 1, pparams=pparams, opt_state=opt_state)
    metrics = {f'{name}/loss': loss, f'{name}/lr': optim.learning_rate(opt_state, tx)}
    return new_state, {k: v for k, v in metrics.items() if v is not None}


def predictor_for(model, pparams):
    """`model` at the hidden width of `pparams` (reconstruction rounds may change it)."""
    width = int(pparams['dense0']['kernel'].shape[-1])  # [input_dim, hidden]
    return model if width == model.hidden else model.clone(hidden=width)


def full_rmse(model, pparams, problem: ReconstructionProblem, chunk: int = 65536):
    """RMSE of the predictor over all rows of `problem` (chunked to bound memory)."""
    n = problem.target.shape[0]
    sq, count = 0.0, 0.0
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        pred = predictor.predict(model, pparams, problem.encoded[sl])
        m = problem.mask[sl]
        sq += float(jnp.sum(m * jnp.square(pred - problem.target[sl])))
        count += float(jnp.sum(m))
    return (sq / max(count, 1.0)) ** 0.5

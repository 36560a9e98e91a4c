"""The library's door: compress any Flax CNN's variables into a `Compressed` artefact.

  compressed = nrnp.compress(variables, model, data=batches, predictor__hidden=32)
  compressed.save('net.nrnp'); variables = nrnp.load('net.nrnp').reconstruct()
  print(compressed.size_report())

`describe` turns the caller's variables, model, data and config overrides into the run's
`RunDescription`; `compression` prepares, runs and stores it, as for the command line.
Config overrides are keyword arguments with `__` for the dot: `reconstruct__steps=500`
sets `config.reconstruct.steps`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from nrnp import errors
from nrnp.artifact import compressed
from nrnp.configs import catalog
from nrnp.pipeline import (
    budgets,
    compression,
    library_checks,
    library_data,
    library_settings,
    problem,
    validation,
    workdirs,
)
from nrnp.pipeline.description import RunDescription
from nrnp.training import sharding


def compress(
    variables,
    model: nn.Module | None = None,
    *,
    data: Iterable | None = None,
    test_data: tuple | None = None,
    config: ml_collections.ConfigDict | None = None,
    recipe: str | None = None,
    workdir: str | os.PathLike | None = None,
    overwrite: bool = False,
    input_shape: tuple[int, ...] | None = None,
    log: Callable[[str], None] | None = print,
    **overrides,
) -> compressed.Compressed:
    """Compresses a CNN's conv kernels into a predictor MLP.

    Args:
      variables: `{'params': ..., 'batch_stats': ...}` (any collections, nested dicts
        of arrays) or a bare params tree (no 'params' key).
      model: the Linen module, applied as `model.apply(variables, x, train=False)`.
        Needed only with `data` (distillation) or `test_data` (accuracy). A model
        that sows no 'intermediates' (see `models.apply_with_features`) is
        distilled with `distill.fm_weight = 0` (logits only), set automatically.
      data: optional training images, unlabeled for nrnp (labels are never used):
        `(images [N, H, W, C], labels [N])` arrays or an nrnp `Dataset` are used as the CLI
        uses its training split: seeded, shuffled batches of `distill.batch_size`,
        augmented (`data.augment`, `data.pad`) and normalised (`data.mean`, `data.std`;
        float images are taken as already normalised), drawn on the device when they fit
        (`data.on_device`). A list (or other re-iterable; a generator is refused) of
        batches `[B, H, W, C]` float32, or `(images, labels)` tuples, is used exactly as
        given (nrnp adds no augmentation and does not re-batch; every batch's shape is
        checked before any training): distillation step s of a phase uses batch s mod
        len(data), so a resumed run replays the same batches; a warning names how few
        classes its first images hold. BatchNorm statistics are
        re-estimated on (a seeded subset of) these images. None: data-free compression,
        reconstruction only (`distill.steps` forced to 0), re-estimation on noise.
      test_data: optional `(images [N, H, W, C], labels [N] int)` (uint8 images are
        normalised with `data.mean`/`data.std`, float ones taken as normalised) or an nrnp
        `Dataset`, for the top-1 of the original and rebuilt networks (per phase, and in
        `metrics`).
      config: a ConfigDict; not modified. Without it or `recipe`, the images' shape
        chooses (`library_settings`): 8x8x1 the digits default, 32x32x3 the default with
        `c10_r20`'s data section (CIFAR normalisation, logged); uint8 images of another
        shape are refused. The `kernels`, `encoding`, `predictor`, `reconstruct`,
        `distill`, `recalibrate`, `seed`, `cycles`, `num_devices`, `*_every` fields apply,
        and `data.eval_batch_size`, `data.mean`, `data.std`, `data.augment`, `data.pad`,
        `data.on_device` for arrays.
      recipe: a shipped recipe's name ('c10_r20', 'c10_r20:tiny'; `nrnp --help` lists
        them) or a config file, instead of `config`.
      workdir: None: checkpoints go to a temporary directory, deleted at the end.
        Given: checkpoints, TensorBoard events and metrics.jsonl stay there, and a
        rerun with the same arguments resumes; a workdir holding another run
        (other arguments or config), or in use by another call or process (an OS lock
        on `workdir/.lock`, held during the call), is refused.
      overwrite: replace the run held in `workdir` instead of refusing it.
      input_shape: `(H, W, C)` of one input image, for data-free BatchNorm re-estimation
        when neither `data` nor `test_data` shows it (default: 32 x 32 x the first conv's
        input channels, logged).
      log: progress sink: `print` (the default) prints `[HH:MM:SS] message` lines, as
        the command line does; another callable gets the bare messages; None: silent.
      **overrides: config fields as `section__field=value`, e.g.
        `predictor__hidden=180`, `reconstruct__steps=20000`, `kernels__dense=True`.

    Only what is asked is evaluated: the original and each phase's rebuilt network on
    `test_data` (the untrained predictor too with `eval_init=True`).

    Returns:
      The `Compressed` artefact; `reconstruct()` returns the input's tree (a FrozenDict
      when a FrozenDict was given); its `history` holds every phase record (as in
      `report.json`'s 'phases', the 'init' record first).

    Raises:
      errors.BadInput (a ValueError) before any training: an unknown override or a
        config value out of range (`errors.ConfigError`, naming the keyword), uint8 images
        whose channels or size the config's normalisation does not fit, variables
        that are not a dict of numeric arrays (naming the leaf), kernels settings that
        represent nothing (naming the options that would), a one-pass or empty `data`
        or batches of different shapes, a model that cannot be applied as documented, to
        these images, or returns probabilities, data/test_data without a model, a
        workdir holding another run or in use (`errors.WorkdirError`), a workdir that
        cannot be written (`errors.StorageError`).
      errors.NonFiniteError: NaN or inf in the variables.
      TypeError: an override of the wrong type.
    """
    log = _stamped if log is print else log or (lambda message: None)
    description, frozen = describe(
        variables, model, data, test_data, config, input_shape, log, overrides, recipe
    )
    with _workdir(description, workdir, overwrite, data, test_data):
        outcome = compression.run(compression.prepare(budgets.resolve(description)))
    result = compression.store(outcome)
    result.frozen = frozen
    return result


def describe(variables, model, data, test_data, config, input_shape, log, overrides, recipe=None):
    """The run `compress`'s arguments describe (its workdir still unset), and whether the
    caller's variables were a FrozenDict."""
    config = library_settings.settings(config, recipe, data, test_data, input_shape, log)
    catalog.apply_overrides(config, overrides)
    validation.check(config, style='library')
    library_settings.check_images(config, data, test_data)
    variables, bare, frozen = library_checks.split_variables(variables)
    library_checks.check_leaves(variables)  # every leaf a numeric array
    problem.layout_of(variables['params'], config.kernels, style='library')  # or the options
    if model is None and (data is not None or test_data is not None):
        raise errors.BadInput('data and test_data need the model (model=, a Linen module)')
    if data is None and config.distill.steps:
        steps = config.distill.steps
        log(f'no data: data-free compression, reconstruction only (distill__steps {steps} -> 0)')
        config.distill.steps = 0
    variables = {**variables, 'batch_stats': variables.get('batch_stats', {})}
    mesh = sharding.make_mesh(config.num_devices, config.model_axis)
    run_data = library_data.data(config, data, test_data, model, variables, mesh, input_shape, log)
    if config.distill.steps and config.distill.fm_weight:
        if not _sows_features(model, variables, run_data.input_shape):
            log('the model sows no intermediates: distill__fm_weight -> 0 (logits only)')
            config.distill.fm_weight = 0.0
    description = RunDescription(config, model, variables, run_data, '', mesh, log, bare)
    return description, frozen


@contextlib.contextmanager
def _workdir(description: RunDescription, workdir, overwrite: bool, data, test_data):
    """`description` with its workdir: `workdir` claimed for the run (a rerun resumes), or
    a temporary directory deleted afterwards (None)."""
    description.temporary = workdir is None
    if description.temporary:
        description.workdir = tempfile.mkdtemp(prefix='nrnp-')
        try:
            yield description
        finally:
            shutil.rmtree(description.workdir, ignore_errors=True)
        return
    description.workdir = os.path.abspath(workdir)
    identity = library_checks.inputs_identity(description.variables, data, test_data)
    fingerprint = workdirs.fingerprint(description.config, identity)
    claim = workdirs.claim(description.workdir, fingerprint, overwrite=overwrite, style='library')
    try:
        yield description
    finally:
        claim.release()


def _stamped(message: str) -> None:
    """The default log: `[HH:MM:SS] message`, as the command line prints it."""
    print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)


def _sows_features(model, variables: dict, input_shape: tuple[int, ...]) -> bool:
    x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    apply = lambda x: model.apply(variables, x, train=False, mutable=['intermediates'])
    _, state = jax.eval_shape(apply, x)
    return bool(jax.tree.leaves(state.get('intermediates', {})))

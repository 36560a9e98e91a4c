"""The library API: compress any Flax CNN's variables into a `Compressed` artefact.

  compressed = nrnp.compress(variables, model, data=batches, predictor__hidden=32)
  compressed.save('net.nrnp'); variables = nrnp.load('net.nrnp').reconstruct()
  print(compressed.size_report())

It runs the CLI's code (`assemble.compress_target`) on the caller's variables, model
and data. Config overrides are keyword arguments with `__` for the dot:
`reconstruct__steps=500` sets `config.reconstruct.steps`.
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nrnp.artifact import compressed
from nrnp.configs import default as defaults
from nrnp.nets import trees
from nrnp.pipeline import assemble
from nrnp.training import evaluation, sharding


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
    """Sets `section__field=value` overrides on `config` in place.

    Raises:
      ValueError: for a key naming no existing field (the message lists the valid ones).
      TypeError: for a value of the wrong type (ml_collections' type check).
    """
    for key, value in overrides.items():
        names = key.split('__')
        dotted = '.'.join(names)
        node = config
        for depth, name in enumerate(names):
            if not isinstance(node, ml_collections.ConfigDict) or name not in node:
                valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                where = '.'.join(names[:depth]) or 'the config'
                raise ValueError(
                    f'unknown config field {dotted!r} (override {key}=...); fields of {where}: '
                    f'{", ".join(valid)}. Overrides are written section__field=value.'
                )
            if depth < len(names) - 1:
                node = node[name]
        if isinstance(node[names[-1]], ml_collections.ConfigDict):
            raise ValueError(f'{dotted!r} is a config section; override its fields instead')
        if isinstance(node[names[-1]], tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            node[names[-1]] = value
        except TypeError as e:
            raise TypeError(f'config field {dotted!r}: {e}') from e


def _sows_features(model, variables: dict, input_shape: tuple[int, ...]) -> bool:
    x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    apply = lambda x: model.apply(variables, x, train=False, mutable=['intermediates'])
    _, state = jax.eval_shape(apply, x)
    return bool(jax.tree.leaves(state.get('intermediates', {})))


def _as_batch(item):
    images = item[0] if isinstance(item, tuple | list) else item
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f'data batches must be images [B, H, W, C], got shape {images.shape}')
    return (images, np.asarray(item[1])) if isinstance(item, tuple | list) else images


def _cycle(source: Iterable):
    while True:
        empty = True
        for item in source:
            empty = False
            yield _as_batch(item)
        if empty:
            raise ValueError(
                'data yielded no batches: pass a list (or another re-iterable) of batches; '
                'a generator is used up after one pass'
            )


def _batch_source(data: Iterable):
    """(first images batch, `(start_step, cycle) -> iterator` for `loop.Context.batches`)."""
    if iter(data) is data:  # a one-pass iterator: put the peeked batch back
        first = next(data, None)
        data = itertools.chain([first], data)
    else:
        first = next(iter(data), None)
    if first is None:
        raise ValueError('data is empty')
    first = _as_batch(first)
    first = first[0] if isinstance(first, tuple) else first

    def batches(start_step: int, cycle: int):
        del cycle  # every distillation phase starts at the first batch
        return itertools.islice(_cycle(data), start_step, None)

    return first, batches


def _split_variables(variables) -> tuple[dict, bool]:
    variables = dict(variables.items())
    if 'params' in variables:
        return {k: dict(v.items()) for k, v in variables.items()}, False
    return {'params': variables}, True


def compress(
    variables,
    model: nn.Module | None = None,
    *,
    data: Iterable | None = None,
    test_data: tuple | None = None,
    config: ml_collections.ConfigDict | None = None,
    workdir: str | os.PathLike | None = None,
    callback: Callable[[dict], None] | None = None,
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
      data: optional iterable of image batches `[B, H, W, C]` float32, normalised
        as the model expects, or `(images, labels)` tuples (labels unused),
        re-iterated cyclically. None: data-free compression, reconstruction
        only (`distill.steps` forced to 0). With data, the configured schedule
        runs; resume is exact only for a re-iterable `data` with a fixed order.
      test_data: optional `(images [N, H, W, C] float32, labels [N] int)` for the
        top-1 of the original and rebuilt networks (per phase, and in `metrics`).
      config: a ConfigDict (default: `nrnp.configs.default.get_config()`); not modified.
        The `kernels`, `encoding`, `predictor`, `reconstruct`, `distill`, `seed`,
        `cycles`, `num_devices`, `*_every` and `data.eval_batch_size` fields apply.
      workdir: None: checkpoints go to a temporary directory, deleted at the end.
        Given: checkpoints stay there and a rerun with the same arguments resumes.
      callback: called with every phase record (dicts as in `report.json`'s
        'phases', the 'init' record first) once the schedule has run.
      log: progress sink (None: silent).
      **overrides: config fields as `section__field=value`, e.g.
        `predictor__hidden=180`, `reconstruct__steps=20000`, `kernels__dense=True`.

    Returns:
      The `Compressed` artefact.

    Raises:
      ValueError: for an unknown override, or data/test_data without a model.
    """
    log = log or (lambda message: None)
    config = copy.deepcopy(defaults.get_config() if config is None else config)
    apply_overrides(config, overrides)
    variables, bare = _split_variables(variables)
    trees.flatten_variables(variables)  # fails early on a tree of non-dict nodes
    if model is None and (data is not None or test_data is not None):
        raise ValueError('data and test_data need the model (a Linen module) to run the network')
    if data is None and config.distill.steps:
        steps = config.distill.steps
        log(f'no data: data-free compression, reconstruction only (distill.steps {steps} -> 0)')
        config.distill.steps = 0
    full = {**variables, 'batch_stats': variables.get('batch_stats', {})}
    mesh = sharding.make_mesh(config.num_devices, config.model_axis)

    test_batches = None
    if test_data is not None:
        images = np.asarray(test_data[0], np.float32)
        labels = np.asarray(test_data[1])
        log(f'test data: {len(labels)} images')
        test_batches = functools.partial(
            evaluation.array_batches, images, labels, config.data.eval_batch_size, mesh
        )

    train_batches = input_shape = None
    if config.distill.steps:
        first, train_batches = _batch_source(data)
        input_shape = (1, *first.shape[1:])
        if not _sows_features(model, full, input_shape) and config.distill.fm_weight:
            log('the model sows no intermediates: distill.fm_weight -> 0 (logits only)')
            config.distill.fm_weight = 0.0

    temporary = workdir is None
    workdir = tempfile.mkdtemp(prefix='nrnp-') if temporary else os.path.abspath(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        outcome = assemble.compress_target(
            full,
            model,
            config,
            workdir=workdir,
            mesh=mesh,
            input_shape=input_shape,
            test_batches=test_batches,
            train_batches=train_batches,
            bare=bare,
            log=log,
        )
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    for record in outcome.records:
        if callback is not None:
            callback(record)
    return outcome.compressed

"""What a finished run stores: its `Compressed` artefact, and the record of the network
that artefact rebuilds when the predictor is stored rounded (`predictor.quantize`).

  artifact = make_artifact(variables, prep, config, pparams, records, top1_original)
  record = quantized_record(artifact, prep, evaluate, log, recalibrate)   # 'quantize'
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from nrnp.artifact import compressed
from nrnp.core import coordinates
from nrnp.nets import trees
from nrnp.training import reconstruction


def aware_mode(config, phase: str) -> str:
    """The rounding `phase` ('distill' or 'reconstruct') trains through ('none' = float)."""
    aware = config.predictor.quantize_aware
    on = aware == 'all' or (aware == 'distill' and phase == 'distill')
    return config.predictor.quantize if on else 'none'


def quantized_record(artifact, prep, evaluate, log, recalibrate=None) -> dict:
    """Top-1 and RMSE of the network the artefact rebuilds (its dequantized predictor).

    With `recalibrate` (`pparams -> batch_stats`), its BatchNorm statistics are re-estimated
    first: the record then holds them under 'batch_stats' (for the artefact) and the
    top-1 with the run's statistics as 'top1_before'.
    """
    start = time.time()
    pparams = jax.tree.map(jnp.asarray, artifact.predictor_params)
    stats = artifact.batch_stats
    record = {'kind': 'quantize', 'mode': artifact.quantize, 'steps': 0}
    if recalibrate is not None:
        record['top1_before'] = evaluate(pparams, stats)
        stats = record['batch_stats'] = jax.device_get(recalibrate(pparams))
    record['top1'] = evaluate(pparams, stats)
    record['rmse'] = reconstruction.full_rmse(prep.pmodel, pparams, prep.problem)
    record['seconds'] = time.time() - start
    shown = '-' if record['top1'] is None else f'{record["top1"]:.2f} %'
    log(
        f'stored predictor ({artifact.quantize}): eval/top1_reconstructed {shown}, '
        f'recon/rmse {record["rmse"]:.6f}'
    )
    return record


def store_batch_stats(artifact: compressed.Compressed, stats: dict) -> None:
    """Replaces the artefact's BatchNorm statistics (same paths, shapes and dtypes)."""
    for path, value in trees.flatten_variables(stats).items():
        held = artifact.copied[('batch_stats', *path)]
        artifact.copied[('batch_stats', *path)] = np.asarray(value, held.dtype).reshape(held.shape)


def make_artifact(
    variables, prep, config, pparams, history, top1_original=None, *, bare: bool = False
) -> compressed.Compressed:
    """The `Compressed` artefact of a finished run (shared by `compress` and the CLI).

    The predictor is stored as `predictor.quantize` says; the artefact's
    `predictor_params` are then the dequantized weights.

    Args:
      variables: the target's variables ({'params', ...} collections).
      prep: the run's `problem.Prepared`.
      config: the run's config.
      pparams: the trained predictor params.
      history: the run's phase records ('init' first).
      top1_original: the original network's top-1, when measured.
      bare: the user passed bare params (reconstruct() then returns bare params).
    """
    flat = trees.flatten_variables(variables)
    represented = {('params', *layer.path) for layer in prep.layout.layers}
    enc = config.encoding
    return compressed.Compressed(
        leaves=[
            compressed.LeafSpec(path, tuple(v.shape), str(v.dtype), path in represented)
            for path, v in flat.items()
        ],
        copied={path: v for path, v in flat.items() if path not in represented},
        layout=prep.layout,
        ordering=config.kernels.ordering,
        positions=(
            []
            if config.kernels.ordering == 'none'
            else coordinates.layer_positions(prep.layout, prep.coords)
        ),
        encoding={
            'kind': enc.kind,
            'levels': enc.levels,
            'base': enc.base,
            'features': enc.features,
            'scale': enc.scale,
            'seed': config.seed,
        },
        predictor_settings={
            'hidden': prep.pmodel.hidden,
            'layers': config.predictor.layers,
            'init': config.predictor.init,
            'residual': config.predictor.residual,
            'input_dim': prep.input_dim,
            'quantize': config.predictor.quantize,
        },
        predictor_params=jax.tree.map(np.asarray, jax.device_get(pparams)),
        bare=bare,
        config=json.loads(config.to_json_best_effort()),
        history=history,
        metrics={
            'top1_original': top1_original,
            'top1_reconstructed': history[-1]['top1'],
            'reconstruction_rmse': history[-1]['rmse'],
        },
    )

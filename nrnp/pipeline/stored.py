"""What a finished run stores: its `Compressed` artefact, and the record of the network
that artefact rebuilds when it is stored rounded (`predictor.quantize`).

  artifact = make_artifact(variables, prep, config, pparams, records, top1_original)
  record = stored_record(artifact, prep, top1, log)     # 'stored': the file's own numbers

With a quantized predictor ('bf16' or an int mode) the copied float32 leaves (BatchNorm,
the classifier) are stored as float16 too: at under a part in a thousand of relative
error they cost nothing measurable (docs/results.md, "Per byte").
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from nrnp.artifact import compressed
from nrnp.core import coordinates, quantize
from nrnp.nets import trees
from nrnp.training import reconstruction


def scheme_of(config) -> quantize.Scheme:
    """How the run's artefact stores its predictor ('lowbit' resolved)."""
    p = config.predictor
    return quantize.Scheme(p.quantize, p.quantize_group)


def stored_record(artifact: compressed.Compressed, prep, top1, log) -> dict:
    """The 'stored' record: top-1 and RMSE of the network the artefact itself rebuilds.

    `artifact.reconstruct()` is what `nrnp.load(path).reconstruct()` returns (its predictor
    dequantized, its copied leaves at their stored dtypes), so the run's final numbers
    are those of the file.

    Args:
      artifact: the run's `Compressed`.
      prep: the run's `problem.Prepared` (the original kernel rows, for the RMSE).
      top1: `variables -> percent` on the test images, or None.
      log: progress sink.
    """
    start = time.time()
    rebuilt = artifact.reconstruct()
    variables = {'params': rebuilt} if artifact.bare else dict(rebuilt)
    pparams = jax.tree.map(jnp.asarray, artifact.predictor_params)
    pmodel = reconstruction.predictor_for(prep.pmodel, pparams)
    rmse = reconstruction.full_rmse(pmodel, pparams, prep.problem)
    record = {'kind': 'stored', 'mode': artifact.quantize, 'steps': 0, 'rmse': rmse}
    record['top1'] = None if top1 is None else top1(variables)
    record['seconds'] = time.time() - start
    shown = '-' if record['top1'] is None else f'{record["top1"]:.2f} %'
    log(
        f'stored artefact ({artifact.quantize}): eval/top1_reconstructed {shown}, '
        f'recon/rmse {rmse:.6f}'
    )
    return record


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
    half = config.predictor.quantize != 'none'

    def spec(path, v):
        stored = 'float16' if half and v.dtype == np.float32 and path not in represented else ''
        return compressed.LeafSpec(path, tuple(v.shape), str(v.dtype), path in represented, stored)

    return compressed.Compressed(
        leaves=[spec(path, np.asarray(v)) for path, v in flat.items()],
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
            'quantize': scheme_of(config).mode,
            'quantize_group': config.predictor.quantize_group,
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

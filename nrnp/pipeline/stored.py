"""What a finished run stores: its `Compressed` artefact, and the record of the network
that artefact rebuilds when it is stored rounded (`predictor.quantize`).

  artifact = make_artifact(variables, prep, config, pparams, records, top1_original)
  kept = as_stored(variables, layout, config)     # copied leaves as the artefact holds them

With a quantized predictor ('bf16' or an int mode) the copied float32 leaves (BatchNorm,
the classifier) are stored as float16 too: at under a part in a thousand of relative
error they cost nothing measurable (docs/results.md, "Per byte").
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from nrnp.artifact import compressed
from nrnp.core import coordinates, encodings, quantize
from nrnp.nets import trees


def scheme_of(config) -> quantize.Scheme:
    """How the run's artefact stores its predictor ('lowbit' resolved)."""
    p = config.predictor
    return quantize.Scheme(p.quantize, p.quantize_group, p.quantize_edge_bits)


def as_stored(tree, layout=None, config=None):
    """`tree` with its float32 leaves as the artefact stores its copied leaves.

    With a quantized predictor (`predictor.quantize` != 'none') the artefact keeps copied
    float32 leaves (BatchNorm, the classifier) as float16: they are rounded to float16 and
    back here, so a run evaluates the network its artefact rebuilds. Represented kernels
    (`layout`'s, of `tree['params']`) are left alone. Without `config` (a run's re-estimated
    `batch_stats`, already known to be copied) every float32 leaf is rounded.
    """
    if config is not None and config.predictor.quantize == 'none':
        return tree
    represented = set() if layout is None else {('params', *x.path) for x in layout.layers}
    flat = trees.flatten_variables(tree) if layout is not None else None
    if flat is None:
        return jax.tree.map(_half, tree)
    return trees.unflatten({p: v if p in represented else _half(v) for p, v in flat.items()})


def _half(value):
    """A float32 array rounded to float16 and back (other dtypes as they are)."""
    if getattr(value, 'dtype', None) != jnp.float32:
        return value
    return value.astype(jnp.float16).astype(jnp.float32)


def make_artifact(
    variables,
    prep,
    config,
    pparams,
    history,
    top1_original=None,
    *,
    bare: bool = False,
    kept: int = -1,
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
      kept: the index in `history` of the phase whose net `pparams` (and the BatchNorm
        statistics of `variables`) are: its top-1 and RMSE are the artefact's.
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
            'base': encodings.NERN_BASE,
            'features': encodings.GAUSSIAN_FEATURES,
            'scale': encodings.GAUSSIAN_SCALE,
            'seed': config.seed,
        },
        predictor_settings={
            'hidden': prep.pmodel.hidden,
            'layers': config.predictor.layers,
            'init': prep.pmodel.initializer,
            'residual': prep.pmodel.residual,
            'input_dim': prep.input_dim,
            'quantize': scheme_of(config).mode,
            'quantize_group': config.predictor.quantize_group,
            'edge_bits': config.predictor.quantize_edge_bits,
        },
        predictor_params=jax.tree.map(np.asarray, jax.device_get(pparams)),
        bare=bare,
        config=json.loads(config.to_json_best_effort()),
        history=history,
        metrics={
            'top1_original': top1_original,
            'top1_reconstructed': history[kept]['top1'],
            'reconstruction_rmse': history[kept]['rmse'],
            'kept_phase': history[kept].get('label', history[kept]['kind']),
        },
    )

"""Which predictor layers lose accuracy when rounded: per-layer bit widths on a float artefact.

  python benchmarks/layer_bits.py W/compressed.nrnp            # every variant below
  python benchmarks/layer_bits.py W/compressed.nrnp --only='int6 all|int6 g8'

`W` holds a float32 run of the pretrained ResNet20 (e.g. `--config.predictor.quantize=none
--config.predictor.hidden=140 --config.reconstruct.steps=8000 --config.distill.steps=0`).
Each variant rounds the chosen Dense layers as the artefact would store them
(`core.quantize.fake_quantize`, no training through the rounding), re-estimates the
BatchNorm statistics on the CLI's 256 training images and prints the top-1 on the 10,000
JPEG test images of ../shared (one JSON line per variant). docs/results.md, "Per byte",
has what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cifar_targets  # noqa: E402

import nrnp  # noqa: E402
from nrnp.core import quantize  # noqa: E402
from nrnp.training import evaluation, recalibration  # noqa: E402

HIDDEN = ('dense1', 'dense2', 'dense3')


def variants(names) -> dict:
    """`{label: {layer: Scheme}}`; layers not named stay float32."""
    s = quantize.Scheme
    every = lambda mode, group=8: {n: s(mode, group) for n in names}  # noqa: E731
    return {
        'float': {},
        'int8 all': every('int8', 16),
        'int7 all': every('int7', 16),
        'int6 all': every('int6', 16),
        'int6 g8': every('int6'),
        'int6 first only': {'dense0': s('int6', 16)},
        'int6 hidden only': {n: s('int6', 16) for n in HIDDEN},
        'int6 last only': {'dense4': s('int6', 16)},
        'int6, first int5': {**every('int6', 16), 'dense0': s('int5', 16)},
        'first int5, hidden int7, last int8': {
            **every('int7', 16),
            'dense0': s('int5', 16),
            'dense4': s('int8', 16),
        },
        'first int4, hidden int7, last int8': {
            **every('int7', 16),
            'dense0': s('int4', 16),
            'dense4': s('int8', 16),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('artifact', help='a float32 run of the ResNet20: W/compressed.nrnp')
    parser.add_argument('--shared', default='../shared')
    parser.add_argument('--cache', default='runs/cache', help='decoded images')
    parser.add_argument('--only', default='', help="variants to run, separated by '|'")
    args = parser.parse_args()
    art = nrnp.load(args.artifact)
    config, model, variables = cifar_targets.load_net(args.shared, 'resnet20')
    images, labels = cifar_targets.test_images(args.shared, args.cache, config)
    calibration = cifar_targets.calibration_batches(args.shared, args.cache, config, 'train')
    reestimate = recalibration.Reestimation(model, variables, calibration)
    chosen = set(args.only.split('|')) if args.only else None
    for label, schemes in variants(art.predictor_params).items():
        if chosen and label not in chosen:
            continue
        start = time.time()
        rounded = {
            name: {
                k: quantize.fake_quantize(jnp.asarray(v), schemes[name]) for k, v in layer.items()
            }
            if name in schemes
            else layer
            for name, layer in art.predictor_params.items()
        }
        rebuilt = dataclasses.replace(art, predictor_params=jax.tree.map(np.asarray, rounded))
        params = rebuilt.reconstruct()['params']
        stats = reestimate(params)
        top1 = evaluation.top1(model, {'params': params, 'batch_stats': stats}, images, labels)
        print(
            json.dumps({'variant': label, 'top1_reestimated': top1, 'seconds': time.time() - start})
        )


if __name__ == '__main__':
    main()

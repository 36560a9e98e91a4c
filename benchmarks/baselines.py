"""What users would pick instead of nrnp, measured beside it: per-channel post-training
quantisation and magnitude pruning of the convs nrnp represents.

  python benchmarks/baselines.py --targets=resnet20,resnet56 --test_limit=0 \
      --out=benchmarks/results
  python benchmarks/baselines.py --recipe=c10_mobilenetv2 --checkpoint=W/teacher \
      --methods=original,ptq8,ptq4 --out=benchmarks/results --name=architectures_ptq --merge

For each pretrained akamaster CIFAR-10 net in ../shared it rewrites the same conv
kernels nrnp's predictor would represent (`kernels.sizes=(1, 3)`, every 3x3 and 1x1
conv) and evaluates the result on the same JPEG CIFAR-10 test images as the CLI
(`--test_limit=N`: the CLI's seeded, class-balanced subset of N images):

  fp16         every leaf of the network cast to float16 (stored bytes: half of fp32)
  ptq8, ptq4, ptq3, ptq2  symmetric per-output-channel quantisation to 8 / 4 / 3 / 2 bits
               (round to nearest, scale max|w| / (2^(b-1) - 1), no calibration data),
               bytes as raw packed codes with float32 scales and float32 copied leaves
  cq8..cq2     the same per output channel, stored the way nrnp stores its predictor
               (`core.quantize`, group 0): a float16 column scale times the multiplier
               of least squared error (MSE-optimal clipping), codes entropy-coded with
               nrnp's rANS coder (`artifact.coding`), copied leaves float16
  gq4, gq3, gq2  per group of 16 inputs (the HWIO kernel as [kh*kw*in, out]), otherwise
               as cq: nrnp's int storage with `quantize_group=16`, coded, float16 copies
  prune50/70/90  magnitude pruning, per layer: the smallest |w| of each conv set to zero
  gprune50/70/90 magnitude pruning, global: one |w| threshold over all those convs
No baseline is fine-tuned on data (nrnp's distillation trains on images). Every row also
gives `top1_recalibrated`: the same rewritten net with its BatchNorm statistics
re-estimated as nrnp does (`--recalibrate_source=train`: the relative estimate from the
CLI's seeded 256 unlabeled training images; `noise`: from 256 seeded noise images;
`none`: not measured), at zero bytes.
With `--recipe` and `--checkpoint` the target is instead a network trained by nrnp (an
orbax `W/teacher` dir or a state-dict file): the recipe's teacher.model at teacher.width,
evaluated (and re-estimated) with the recipe's normalisation; its row is named
`<model>@<width>`.

Bytes are what must be stored to rebuild the network, counted like nrnp's artefact
payload (`Compressed.size_report`: predictor + orderings + copied leaves, no header):
the rewritten convs (ptq: b-bit codes packed, plus one float32 scale per output
channel; pruning: float32 non-zero values plus, per layer, the smaller of a bitmap
and uint16/uint32 indices) plus every copied leaf (BatchNorm parameters and
statistics, the linear head) as float32, against the float32 original. Writes
baselines.{json,csv,md} to --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, 'benchmarks')]  # nrnp, cifar_targets

import cifar_targets  # noqa: E402

from nrnp.core import kernels  # noqa: E402
from nrnp.nets import trees  # noqa: E402
from nrnp.pipeline import problem  # noqa: E402

CHECKPOINTS = cifar_targets.CHECKPOINTS
METHODS = (
    'original',
    'fp16',
    'ptq8',
    'ptq4',
    'ptq3',
    'ptq2',
    'cq8',
    'cq6',
    'cq5',
    'cq4',
    'cq3',
    'cq2',
    'gq4',
    'gq3',
    'gq2',
    'prune50',
    'prune70',
    'prune90',
    'gprune50',
    'gprune70',
    'gprune90',
)


def represented_paths(params, kernel_config) -> set[tuple[str, ...]]:
    """Paths `('params', ...)` of the conv kernels nrnp would represent."""
    layout = kernels.kernel_layout(params, problem.selection(kernel_config))
    return {('params', *layer.path) for layer in layout.layers}


def quantize_per_channel(w: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """Symmetric per-output-channel quantisation of an HWIO kernel.

    Args:
      w: `[kh, kw, in, out]` float32.
      bits: code width (2..8).

    Returns:
      (the dequantized kernel, same shape and dtype; stored bytes: the packed b-bit
      codes plus one float32 scale per output channel).
    """
    levels = 2 ** (bits - 1) - 1
    peak = np.max(np.abs(w.reshape(-1, w.shape[-1])), axis=0)  # [out]
    scale = np.where(peak > 0, peak / levels, 1.0).astype(np.float32)
    codes = np.clip(np.round(w / scale), -levels, levels)
    stored = math.ceil(w.size * bits / 8) + 4 * w.shape[-1]
    return (codes * scale).astype(w.dtype), stored


def stored_like_nrnp(flat: dict, represented: set, method: str) -> tuple[dict, dict]:
    """`fp16`, `cqB` and `gqB` (module docstring): the rewritten variables and byte counts.

    cq/gq kernels become nrnp int leaves (`core.quantize.quantize_leaf` of the kernel as
    `[kh*kw*in, out]`), counted as nrnp's version 4 predictor blob counts them (float16
    column scales, then codes and multipliers coded, `artifact.storage.pack_predictor`);
    every other leaf is stored as float16.
    """
    from nrnp.artifact import storage
    from nrnp.core import quantize

    half = lambda v: v.astype(np.float16).astype(v.dtype) if v.dtype == np.float32 else v
    out = {path: half(v) for path, v in flat.items()}
    sizes = {
        'original_bytes': sum(v.nbytes for v in flat.values()),
        'original_conv_bytes': sum(v.nbytes for p, v in flat.items() if p in represented),
        'copied_bytes': sum(v.nbytes // 2 for p, v in flat.items() if p not in represented),
    }
    if method == 'fp16':
        sizes['conv_bytes'] = sizes['original_conv_bytes'] // 2
    else:
        scheme = quantize.Scheme(f'int{method[2:]}', 16 if method[0] == 'g' else 0)
        leaves = {}
        for path in represented:
            w = flat[path]
            leaves[path] = quantize.quantize_leaf(w.reshape(-1, w.shape[-1]), scheme)
            out[path] = quantize.dequantize_leaf(leaves[path]).reshape(w.shape)
        sizes['conv_bytes'] = int(storage.pack_predictor(leaves, 4)[0].nbytes)
    sizes['stored_bytes'] = sizes['conv_bytes'] + sizes['copied_bytes']
    return trees.unflatten(out), sizes


def sparse_bytes(size: int, nnz: int) -> int:
    """Bytes of a sparse array of `size` entries with `nnz` float32 values kept: the values
    plus the smaller of a bitmap and one uint16 (uint32 above 65,536 entries) index each."""
    index_bytes = 2 if size <= 65536 else 4
    return 4 * nnz + min(math.ceil(size / 8), index_bytes * nnz)


def prune_magnitude(w: np.ndarray, sparsity: float) -> tuple[np.ndarray, int]:
    """Zeroes the `sparsity` fraction of `w` with the smallest magnitudes (ties by index).

    Returns:
      (the pruned array, stored bytes: `sparse_bytes`).
    """
    flat = w.reshape(-1)
    drop = int(math.floor(sparsity * flat.size))
    order = np.argsort(np.abs(flat), kind='stable')  # smallest first
    kept = flat.copy()
    kept[order[:drop]] = 0
    return kept.reshape(w.shape), sparse_bytes(flat.size, flat.size - drop)


def global_threshold(arrays, sparsity: float) -> float:
    """The magnitude below which the `sparsity` fraction of all entries of `arrays` lie."""
    magnitudes = np.sort(np.concatenate([np.abs(a).reshape(-1) for a in arrays]))
    drop = int(math.floor(sparsity * magnitudes.size))
    return float(magnitudes[drop - 1]) if drop else -1.0


def apply_method(variables: dict, represented: set, method: str) -> tuple[dict, dict]:
    """`variables` with the represented kernels rewritten by `method`, and its byte counts.

    Returns:
      (variables, {'stored_bytes', 'conv_bytes', 'copied_bytes', 'original_bytes',
      'original_conv_bytes'}): conv_bytes for the represented kernels as `method` stores
      them, copied_bytes for every other leaf as it is, original_bytes and
      original_conv_bytes for all leaves and the represented ones as they are.
    """
    flat = trees.flatten_variables(variables)
    if method == 'fp16' or method[:2] in ('cq', 'gq'):
        return stored_like_nrnp(flat, represented, method)
    if method.startswith('gprune'):
        threshold = global_threshold([flat[p] for p in represented], int(method[6:]) / 100)
    out, conv_bytes = {}, 0
    for path, value in flat.items():
        if path not in represented or method == 'original':
            out[path] = value
            conv_bytes += value.nbytes if path in represented else 0
            continue
        if method.startswith('ptq'):
            out[path], stored = quantize_per_channel(value, int(method[3:]))
        elif method.startswith('prune'):
            out[path], stored = prune_magnitude(value, int(method[5:]) / 100)
        elif method.startswith('gprune'):  # ties at the threshold are pruned too
            out[path] = np.where(np.abs(value) > threshold, value, 0).astype(value.dtype)
            stored = sparse_bytes(value.size, int(np.count_nonzero(out[path])))
        else:
            raise ValueError(f'unknown method {method!r}; valid: {METHODS}')
        conv_bytes += stored
    copied = sum(v.nbytes for p, v in flat.items() if p not in represented)
    sizes = {
        'stored_bytes': conv_bytes + copied,
        'conv_bytes': conv_bytes,
        'copied_bytes': copied,
        'original_bytes': sum(v.nbytes for v in flat.values()),
        'original_conv_bytes': sum(v.nbytes for p, v in flat.items() if p in represented),
    }
    return trees.unflatten(out), sizes


def measure(name: str, net, images, labels, methods, calibration=None) -> list[dict]:
    """One row per method: top-1 on `images` (and with re-estimated BatchNorm statistics,
    from the `calibration` batches) and the stored bytes.

    `net`: (config, model, variables), `cifar_targets.load_net`'s; `name` names its rows.
    """
    from nrnp.training import evaluation, recalibration

    config, model, variables = net
    represented = represented_paths(variables['params'], config.kernels)
    rows = []
    for method in methods:
        start = time.time()
        rewritten, sizes = apply_method(variables, represented, method)
        top1 = evaluation.top1(model, rewritten, images, labels)
        recalibrated = None
        if calibration is not None:
            reestimate = recalibration.Reestimation(model, variables, calibration)
            stats = reestimate(rewritten['params'])
            recalibrated = evaluation.top1(
                model, {**rewritten, 'batch_stats': stats}, images, labels
            )
        rows.append(
            {
                'target': name,
                'method': method,
                'test_images': len(labels),
                'top1': top1,
                'top1_recalibrated': recalibrated,
                **sizes,
                'byte_ratio': sizes['stored_bytes'] / sizes['original_bytes'],
                'conv_ratio': sizes['conv_bytes'] / sizes['original_conv_bytes'],
                'seconds': time.time() - start,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def write_tables(rows: list[dict], out: str, name: str = 'baselines') -> None:
    """`out/name.{json,csv,md}`."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f'{name}.json'), 'w') as f:
        json.dump(rows, f, indent=2)
    with open(os.path.join(out, f'{name}.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        '# Baselines: quantisation and pruning of the convs nrnp represents',
        '',
        'Written by `python benchmarks/baselines.py` (its docstring defines the methods and',
        'the byte counts). JPEG CIFAR-10 test images from ../shared: compare methods on the',
        'same images only. No baseline is fine-tuned; "re-estimated" is the same net with its',
        'BatchNorm statistics re-estimated as nrnp does (relative, zero bytes).',
        '',
        '| target | method | test images | top-1 | top-1 re-estimated | stored bytes | '
        '/ fp32 original | conv bytes / fp32 convs |',
        '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ]
    for r in rows:
        again = r.get('top1_recalibrated')
        lines.append(
            f'| {r["target"]} | {r["method"]} | {r["test_images"]} | {r["top1"]:.2f} | '
            f'{"-" if again is None else f"{again:.2f}"} | '
            f'{r["stored_bytes"]:,} | {r["byte_ratio"]:.4f} | {r["conv_ratio"]:.4f} |'
        )
    with open(os.path.join(out, f'{name}.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--targets', default='resnet20,resnet56')
    parser.add_argument('--methods', default=','.join(METHODS))
    parser.add_argument('--test_limit', type=int, default=0, help='0: all 10,000 test images')
    parser.add_argument('--cache', default='runs/cache', help='decoded test images')
    parser.add_argument('--out', default=os.path.join(REPO, 'benchmarks/results'))
    parser.add_argument('--name', default='baselines', help='file stem of the outputs')
    parser.add_argument('--merge', action='store_true', help='add to the rows already in --out')
    parser.add_argument(
        '--recalibrate_source',
        default='train',
        choices=('train', 'noise', 'none'),
        help='BatchNorm re-estimation images for the top1_recalibrated column',
    )
    parser.add_argument('--recipe', default='', help='a recipe whose teacher --checkpoint is')
    parser.add_argument('--checkpoint', default='', help='with --recipe: orbax dir or file')
    args = parser.parse_args(argv)
    shared = cifar_targets.shared_dir()
    if shared is None:
        return 0
    methods = args.methods.split(',')
    for method in methods:
        if method not in METHODS:
            raise SystemExit(f'unknown method {method!r}; valid: {",".join(METHODS)}')
    targets = [args.recipe] if args.recipe else args.targets.split(',')
    rows = []
    for target in targets:
        net = cifar_targets.load_net(shared, target, args.recipe, args.checkpoint)
        config = net[0]
        images, labels = cifar_targets.test_images(shared, args.cache, config, args.test_limit)
        calibration = None
        if args.recalibrate_source != 'none':
            source = args.recalibrate_source
            calibration = cifar_targets.calibration_batches(shared, args.cache, config, source)
        name = f'{config.teacher.model}@{config.teacher.width}' if args.recipe else target
        rows += measure(name, net, images, labels, methods, calibration)
    path = os.path.join(args.out, f'{args.name}.json')
    if args.merge and os.path.exists(path):  # keep earlier rows of other (target, method)
        with open(path) as f:
            done = {(r['target'], r['method']) for r in rows}
            rows = [r for r in json.load(f) if (r['target'], r['method']) not in done] + rows
        order = {m: i for i, m in enumerate(METHODS)}
        rows.sort(key=lambda r: (r['target'], order[r['method']]))
    write_tables(rows, args.out, args.name)
    return 0


if __name__ == '__main__':
    sys.exit(main())

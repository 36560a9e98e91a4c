"""Accuracy vs predictor size: reconstruction only, progressive rounds, + distillation, NeRN joint.

  python benchmarks/curve.py --target=resnet20 --widths=140,160,180 --steps=8000 \
      --distill_steps=60 --out=runs/curve

For each width and method it runs `nrnp.pipeline.job.run` (the CLI's code) on the
../shared pretrained net and JPEG CIFAR-10 at equal step budgets:
  recon      reconstruction only, `steps` steps
  rounds     progressive reconstruction, `rounds` rounds over the same `steps`
  distill    reconstruction (`steps`) then decoupled distillation (`distill_steps`)
  joint      reconstruction (`steps`) then NeRN's joint loss (`distill_steps`):
             rec 1 + KD 1e-4 + feature maps 1e-4 at a small learning rate
and writes curve.md, curve.csv and curve.png (top1_reconstructed - top1_original
against the ratio). A (width, method) whose workdir already holds report.json is
read, not rerun, so the script can be resumed or extended. The shared CIFAR-10
is JPEG re-encoded: compare rebuilt vs original on the same images only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from nrnp.configs import c10_r20  # noqa: E402
from nrnp.pipeline import job  # noqa: E402
from nrnp.reporting import plots  # noqa: E402

CHECKPOINTS = {
    'resnet20': 'weights/akamaster-cifar10/resnet20-12fca82f.th',
    'resnet56': 'weights/akamaster-cifar10/resnet56-4bfd9763.th',
}
METHODS = ('recon', 'rounds', 'distill', 'joint')


def method_config(args, shared, width: int, method: str):
    c = c10_r20.get_config()
    c.teacher.model = args.target
    c.teacher.checkpoint = os.path.join(shared, CHECKPOINTS[args.target])
    c.data.image_folder = os.path.join(shared, 'data/cifar10-jpeg')
    c.data.test_limit = args.test_limit
    c.predictor.hidden = width
    c.reconstruct.steps = args.steps
    c.distill.steps = 0
    c.log_every = 1000
    c.checkpoint_every = 100_000
    if method == 'rounds':
        c.reconstruct.rounds = args.rounds
    elif method in ('distill', 'joint'):
        c.distill.steps = args.distill_steps
    if method == 'joint':
        c.distill.kd_weight = 1e-4
        c.distill.fm_weight = 1e-4
        c.distill.reconstruction_weight = 1.0
        c.distill.learning_rate = 1e-5
    return c


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--target', default='resnet20', choices=sorted(CHECKPOINTS))
    parser.add_argument('--widths', default='140,160,180')
    parser.add_argument('--methods', default=','.join(METHODS))
    parser.add_argument('--steps', type=int, default=8000, help='reconstruction steps')
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--distill_steps', type=int, default=60)
    parser.add_argument('--test_limit', type=int, default=0, help='0: all 10,000 test images')
    parser.add_argument('--out', default='runs/curve')
    args = parser.parse_args(argv)
    shared = os.environ.get('NRNP_SHARED', os.path.join(os.path.dirname(REPO), 'shared'))
    if not os.path.isdir(shared):
        print(f'skipped: {shared} (pretrained weights and CIFAR-10) is absent; set NRNP_SHARED')
        return 0
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for width in [int(w) for w in args.widths.split(',')]:
        for method in args.methods.split(','):
            if method not in METHODS:
                raise SystemExit(f'unknown method {method!r}; valid: {METHODS}')
            workdir = os.path.join(args.out, f'{args.target}_h{width}_{method}')
            path = os.path.join(workdir, 'report.json')
            if os.path.exists(path):
                report = json.load(open(path))
            else:
                report = job.run(method_config(args, shared, width, method), workdir)
            rows.append(
                {
                    'target': args.target,
                    'hidden': width,
                    'method': method,
                    'steps': sum(p['steps'] for p in report['phases']),
                    'ratio': report['ratio'],
                    'top1_original': report['top1_original'],
                    'top1_reconstructed': report['top1_reconstructed'],
                    'delta': report['top1_reconstructed'] - report['top1_original'],
                    'rmse': report['reconstruction_rmse'],
                    'wall_seconds': report['wall_seconds'],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    with open(os.path.join(args.out, 'curve.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        '| target | h | method | steps | ratio | top-1 original | top-1 rebuilt | delta | RMSE |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ]
    for r in rows:
        lines.append(
            f'| {r["target"]} | {r["hidden"]} | {r["method"]} | {r["steps"]} | {r["ratio"]:.3f} '
            f'| {r["top1_original"]:.2f} | {r["top1_reconstructed"]:.2f} | {r["delta"]:+.2f} '
            f'| {r["rmse"]:.5f} |'
        )
    with open(os.path.join(args.out, 'curve.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    plots.plot_curve(rows, os.path.join(args.out, 'curve.png'))
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())

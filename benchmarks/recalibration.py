"""BatchNorm re-estimation of rebuilt networks: which images, how many, which estimate.

  python benchmarks/recalibration.py --artifacts=runs/r20/compressed.nrnp \
      --target=resnet20 --json=benchmarks/results/recalibration_r20.json
  python benchmarks/recalibration.py --data_free --target=resnet20 --hidden=180 --steps=3000
  python benchmarks/recalibration.py --recipe=c10_mobilenetv2 --checkpoint=W/teacher \
      --artifacts=W2/compressed.nrnp --images=256 --sources=train

For each artefact (a rebuilt network; its stored statistics are replaced) it measures
top-1 on the JPEG CIFAR-10 test images of ../shared with the artefact's own statistics,
then with statistics re-estimated by nrnp's `training.recalibration` from each
calibration source (`train`: the CLI's seeded subset of unlabeled training images;
`noise`: seeded standard-normal inputs; `synthetic`: noise optimised to match the
original's BatchNorm statistics), each with the 'plain' and the 'relative' estimate, at
each image count. The original network is measured by the same code on the same images,
and with the plain estimate too (its own bias). `--data_free` instead runs the library
call `nrnp.compress(variables, model, predictor__hidden=H, reconstruct__steps=S)` with no
data and no test images (re-estimation on noise by default) and then measures the
artefact it returns beside the same run with `recalibrate__images=0`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, 'benchmarks')]  # nrnp, cifar_targets

import cifar_targets  # noqa: E402

CHECKPOINTS = cifar_targets.CHECKPOINTS


def _setup(args, shared: str):
    """(config, model, variables, (test images, labels), train split) of the target."""
    net = cifar_targets.load_net(shared, args.target, args.recipe, args.checkpoint)
    config = net[0]
    test = cifar_targets.test_images(shared, args.cache, config)
    return (*net, test, cifar_targets.split(shared, 'train', args.cache))


def measure(args, shared: str) -> list[dict]:
    import nrnp
    from nrnp.training import evaluation, recalibration

    config, model, variables, (x, y), train = _setup(args, shared)
    top1 = lambda v: evaluation.top1(model, v, x, y)
    nets = {'original': variables['params']}
    for path in args.artifacts.split(','):
        nets[path] = nrnp.load(path).reconstruct()['params']
    rows = []
    for count in map(int, args.images.split(',')):
        for source in args.sources.split(','):
            start = time.time()
            batches = cifar_targets.calibration_batches(
                shared, args.cache, config, source, count, args.batch, (model, variables), train
            )
            made = time.time() - start
            for name, params in nets.items():
                row = {'net': name, 'images': count, 'source': source, 'make_seconds': made}
                row['top1_stored'] = top1({**variables, 'params': params})
                for mode in ('plain', 'relative'):
                    start = time.time()
                    reestimate = recalibration.Reestimation(model, variables, batches, mode)
                    stats = reestimate(params)
                    row[f'{mode}_seconds'] = time.time() - start
                    row[mode] = top1({'params': params, 'batch_stats': stats})
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def data_free(args, shared: str) -> list[dict]:
    import nrnp
    from nrnp.training import evaluation

    _, model, variables, (x, y), _ = _setup(args, shared)
    rows = []
    for images in (0, 256):
        start = time.time()
        art = nrnp.compress(
            variables,
            model,
            predictor__hidden=args.hidden,
            reconstruct__steps=args.steps,
            recalibrate__images=images,
            log=None,
        )
        seconds = time.time() - start
        rebuilt = art.reconstruct()
        row = {
            'call': f'nrnp.compress(variables, model, predictor__hidden={args.hidden}, '
            f'reconstruct__steps={args.steps}, recalibrate__images={images})',
            'top1_original': evaluation.top1(model, variables, x, y),
            'top1_rebuilt': evaluation.top1(model, rebuilt, x, y),
            'history': [r['kind'] for r in art.history],
            'artifact_bytes': art.size_report()['artifact_bytes'],
            'seconds': seconds,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--target', default='resnet20', choices=sorted(CHECKPOINTS))
    parser.add_argument('--recipe', default='', help='a recipe whose teacher --checkpoint is')
    parser.add_argument('--checkpoint', default='', help='with --recipe: orbax dir or file')
    parser.add_argument('--artifacts', default='', help='comma-separated .nrnp files')
    parser.add_argument('--images', default='256,2048')
    parser.add_argument('--batch', type=int, default=256)
    parser.add_argument('--sources', default='train,noise,synthetic')
    parser.add_argument('--data_free', action='store_true')
    parser.add_argument('--hidden', type=int, default=180)
    parser.add_argument('--steps', type=int, default=3000)
    parser.add_argument('--cache', default='runs/cache')
    parser.add_argument('--json', default='')
    args = parser.parse_args(argv)
    shared = cifar_targets.shared_dir()
    if shared is None:
        return 0
    rows = data_free(args, shared) if args.data_free else measure(args, shared)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())

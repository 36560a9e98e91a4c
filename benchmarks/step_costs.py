"""Measured step costs per recipe on this machine, as the markdown table docs/step_costs.md holds.

  python benchmarks/step_costs.py --shared=../shared > docs/step_costs.md

Runs `nrnp.compress` with each recipe at a few steps (the step costs do not depend on the
weights or on the step count): the digits default on its bundled images, c10_r20 on the
pretrained ResNet20 and the JPEG CIFAR-10 of `--shared` (skipped without it). Each phase's
record gives its compilation (the first step) and its steps per second after it
(evaluations, re-estimations and saves excluded): the table divides a budget by these.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax

import nrnp
from nrnp.data import dataset, sources
from nrnp.nets import loading, models


def digits():
    model = models.build_model('smallcnn', 10)
    train = dataset.load_digits('train')
    return model, models.init_variables(model, (1, 8, 8, 1)), (train.images, train.labels)


def cifar(shared: str):
    model = models.build_model('resnet20', 10)
    weights = os.path.join(shared, 'weights/akamaster-cifar10/resnet20-12fca82f.th')
    variables = loading.load_target(weights, model, (1, 32, 32, 3))
    folder = os.path.join(shared, 'data/cifar10-jpeg')
    train = sources.load_dataset(name='cifar10', split='train', image_folder=folder)
    return model, variables, (train.images, train.labels)


def measure(recipe: str, target, reconstruct_steps: int, distill_steps: int) -> dict:
    model, variables, data = target
    compressed = nrnp.compress(
        variables,
        model,
        data=data,
        recipe=recipe,
        reconstruct__steps=reconstruct_steps,
        distill__steps=distill_steps,
        log=None,
    )
    return {r['kind']: r for r in compressed.history if r['kind'] in ('reconstruct', 'distill')}


def row(recipe: str, records: dict) -> str:
    cells = [f'`{recipe}`']
    for kind, scale, unit in (('reconstruct', 1000, 'ms'), ('distill', 1, 's')):
        record = records[kind]
        rate = record['steps_per_second']
        cells.append(f'{scale / rate:.3g} {unit}' if rate else '-')
        cells.append(f'{record["compile_seconds"]:.1f} s')
    return '| ' + ' | '.join(cells) + ' |'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--shared', default='../shared', help='real weights and images')
    parser.add_argument('--reconstruct_steps', type=int, default=60)
    parser.add_argument('--distill_steps', type=int, default=6)
    parser.add_argument('--note', default='', help='conditions, e.g. what else ran on the CPU')
    args = parser.parse_args()
    steps = (args.reconstruct_steps, args.distill_steps)
    load = os.getloadavg()[0]
    rows = [row('default', measure('default', digits(), *steps))]
    if os.path.isdir(os.path.join(args.shared, 'data/cifar10-jpeg')):
        rows.append(row('c10_r20', measure('c10_r20', cifar(args.shared), *steps)))
    device = jax.devices()[0]
    print('# Step costs per recipe (generated)\n')
    print(
        f'Measured by `python benchmarks/step_costs.py` on {time.strftime("%Y-%m-%d")}: '
        f'{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), JAX '
        f'{jax.__version__} on {device.platform}, {steps[0]} reconstruction and {steps[1]} '
        'distillation steps per recipe, at its batch sizes (c10_r20 on the pretrained '
        "ResNet20 and the JPEG CIFAR-10 of ../shared). A step's cost is the mean after the "
        'first, compiling step (evaluations, BatchNorm re-estimations and checkpoint saves '
        f'excluded). Load average (1 min) {load:.1f} before, {os.getloadavg()[0]:.1f} after: '
        'above the core count, other work shared the CPU and the costs are upper bounds.'
        f'{" " + args.note if args.note else ""}\n'
    )
    print('| recipe | reconstruction step | compilation | distillation step | compilation |')
    print('| --- | --- | --- | --- | --- |')
    print('\n'.join(rows))
    print(
        '\nA run takes about: compilations + reconstruct.steps x the reconstruction step + '
        'distill.steps x the distillation step, plus the kernel table, the evaluations on the '
        'test images and the BatchNorm re-estimations (seconds each). The progress lines '
        "give the whole run's ETA from the step costs the run itself measures."
    )


if __name__ == '__main__':
    main()

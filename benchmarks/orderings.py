"""Wall time of the kernel orderings on every ResNet56 conv and on one 512x512 layer.

  python benchmarks/orderings.py                  # ResNet56 (real weights if present) + 512x512
  python benchmarks/orderings.py --skip_large     # ResNet56 only
  python benchmarks/orderings.py --weights=none   # random ResNet56-shaped kernels

The first ResNet56 pass includes compilation (one per bucket shape), the second
reuses it. Each row prints wall seconds and process CPU seconds (all threads): on a
shared machine the CPU time is the steadier number.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from nrnp.core import orderings

DEFAULT_WEIGHTS = os.path.join(
    os.path.dirname(__file__),
    '..',
    '..',
    'shared',
    'weights',
    'akamaster-cifar10',
    'resnet56-4bfd9763.npz',
)


def resnet56_layers(weights_path: str | None, seed: int = 0) -> list[np.ndarray]:
    """The 55 conv layers of a CIFAR ResNet56 as [O, I, 9] float32 arrays.

    Real akamaster weights (OIHW, keys like `layer1.0.conv1.weight`) when the file
    exists, otherwise random normal kernels of the same shapes.
    """
    if weights_path and os.path.exists(weights_path):
        archive = np.load(weights_path)
        names = ['conv1.weight'] + [
            f'layer{stage}.{block}.conv{conv}.weight'
            for stage in (1, 2, 3)
            for block in range(9)
            for conv in (1, 2)
        ]
        layers = []
        for name in names:
            w = np.asarray(archive[name], np.float32)  # [O, I, 3, 3]
            layers.append(w.reshape(w.shape[0], w.shape[1], -1))  # [O, I, 9]
        return layers
    rng = np.random.default_rng(seed)
    shapes = [(16, 3)]
    for width, first_in in ((16, 16), (32, 16), (64, 32)):
        for block in range(9):
            shapes.append((width, first_in if block == 0 else width))
            shapes.append((width, width))
    return [rng.standard_normal((o, i, 9)).astype(np.float32) for o, i in shapes]


def time_layers(layers: list[np.ndarray], mode: str) -> str:
    """Wall and CPU seconds for `mode` positions of all layers, checking permutations."""
    start, start_cpu = time.perf_counter(), time.process_time()
    for kernels in layers:
        filter_pos, channel_pos = orderings.layer_positions(kernels, mode)
        num_channels = kernels.shape[1]
        slots = np.sort((filter_pos * num_channels + channel_pos).ravel())
        assert np.array_equal(slots, np.arange(slots.size)), mode
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return f'{wall:8.2f} s wall {cpu:8.2f} s cpu'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--weights', default=DEFAULT_WEIGHTS, help="ResNet56 .npz, or 'none' for random kernels"
    )
    parser.add_argument('--skip_large', action='store_true', help='skip the 512x512 layer')
    parser.add_argument(
        '--large_modes', default='crossfilter,infilter', help='modes to time on the 512x512 layer'
    )
    args = parser.parse_args()

    weights = None if args.weights == 'none' else args.weights
    layers = resnet56_layers(weights)
    source = 'real' if weights and os.path.exists(weights) else 'random'
    num_kernels = sum(k.shape[0] * k.shape[1] for k in layers)
    print(f'ResNet56 ({source} weights): {len(layers)} layers, {num_kernels} kernels')
    for mode in ('crossfilter', 'infilter'):
        print(f'  {mode:12s} {time_layers(layers, mode)} (with compilation)')
    for mode in ('crossfilter', 'infilter'):
        print(f'  {mode:12s} {time_layers(layers, mode)} (compiled)')

    if not args.skip_large:
        rng = np.random.default_rng(1)
        large = rng.standard_normal((512, 512, 9)).astype(np.float32)
        for mode in args.large_modes.split(','):
            print(
                f'512x512 random layer (262144 kernels) {mode:12s} {time_layers([large], mode)}',
                flush=True,
            )


if __name__ == '__main__':
    main()

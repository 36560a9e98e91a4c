"""Size and speed of the orderings' codec on the layers of ResNet20 and ResNet18.

  python benchmarks/permutation_codec.py            # random permutations of every layer size

Prints, per network, the kernels, the bytes the artefact stores for the orderings against
one smallest-width index per kernel (format version 1) and log2(n!) / 8, and the wall and
process CPU seconds of encoding and decoding every layer (with an exact round-trip check).
On a shared machine the CPU time is the steadier number.
"""

from __future__ import annotations

import math
import time

import numpy as np

from nrnp.core import coordinates, permutation_codec

# Represented layers (filters x channels) with nrnp's defaults: every 1x1 and 3x3 conv.
RESNET20 = [(16, 3)] + [(16, 16)] * 6 + [(32, 16)] + [(32, 32)] * 5 + [(64, 32)] + [(64, 64)] * 5
RESNET18 = (
    [(64, 64)] * 4
    + [(128, 64), (128, 128), (128, 64)]  # conv1, conv2, 1x1 projection of block 1
    + [(128, 128)] * 2
    + [(256, 128), (256, 256), (256, 128)]
    + [(256, 256)] * 2
    + [(512, 256), (512, 512), (512, 256)]
    + [(512, 512)] * 2
)


def measure(name: str, shapes: list[tuple[int, int]], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(o * i) for o, i in shapes]
    n_total = sum(p.size for p in perms)
    start, cpu = time.perf_counter(), time.process_time()
    encoded = [permutation_codec.encode(p) for p in perms]
    enc_wall, enc_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    decoded = [permutation_codec.decode(e, p.size) for e, p in zip(encoded, perms)]
    dec_wall, dec_cpu = time.perf_counter() - start, time.process_time() - cpu
    assert all(np.array_equal(a, b) for a, b in zip(decoded, perms))
    stored = sum(e.size for e in encoded)
    v1 = sum(p.size * coordinates.position_dtype(p.size).itemsize for p in perms)
    bound = sum(math.lgamma(p.size + 1) / math.log(2) / 8 for p in perms)
    largest = max(p.size for p in perms)
    print(
        f'{name}: {len(shapes)} layers, {n_total:,} kernels (largest {largest:,})'
        f'\n  stored {stored:,} B ({8 * stored / n_total:.2f} bits/kernel), version 1 '
        f'{v1:,} B ({8 * v1 / n_total:.2f}), log2(n!) {bound:,.0f} B ({8 * bound / n_total:.2f})'
        f'\n  encode {enc_wall:.2f} s wall / {enc_cpu:.2f} s CPU, '
        f'decode {dec_wall:.2f} s wall / {dec_cpu:.2f} s CPU (exact round trip checked)'
    )


if __name__ == '__main__':
    measure('ResNet20', RESNET20)
    measure('ResNet18', RESNET18)

"""Images/s of the training input pipeline (`data.train_batches` + `data.prefetch`), no model.

  python benchmarks/data_throughput.py                     # CIFAR-10 JPEGs, TFDS mock, 256px
  python benchmarks/data_throughput.py --steps=20 --json=/tmp/data.json
  python benchmarks/data_throughput.py --step_ms=100       # a consumer busy 100 ms per batch

Sources: the CIFAR-10 JPEG folder in $NRNP_SHARED or <repo>/../shared (skipped with a message
when absent; decoded arrays are cached in a temp dir, so only the first run decodes), TFDS
`mock_data` for cifar10, and random 256x256 images through 'random_resized_crop' to 224 (the
ImageNet path). Each row times `--steps` batches after one warm-up batch, with and without
`prefetch`; `--step_ms` simulates the training step (a sleep, which releases the GIL like
XLA does), showing how much input time prefetch hides.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from nrnp import data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def shared_dir() -> str:
    return os.environ.get('NRNP_SHARED') or os.path.join(REPO, '..', 'shared')


def throughput(
    dataset: data.Dataset,
    batch_size: int,
    steps: int,
    use_prefetch: bool,
    step_ms: float,
    **kwargs,
) -> dict:
    """Times `steps` batches of `train_batches(dataset, ...)` after one warm-up batch."""
    batches = data.train_batches(dataset, batch_size, seed=0, **kwargs)
    if use_prefetch:
        batches = data.prefetch(batches, size=2)
    next(batches)
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(steps):
        images, _ = next(batches)
        if step_ms:
            time.sleep(step_ms / 1000)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    if use_prefetch:
        batches.close()  # stops the producer thread
    return {
        'images_per_s': round(steps * batch_size / seconds, 1),
        'seconds': round(seconds, 3),
        'cpu_seconds': round(cpu, 3),
        'batch_shape': list(images.shape),
    }


def sources(args) -> list[tuple[str, data.Dataset | None, dict, str]]:
    """(name, dataset or None, train_batches kwargs, note) for every source."""
    crop_flip = dict(augment='crop_flip', pad=4, mean=CIFAR_MEAN, std=CIFAR_STD)
    out = []
    root = os.path.join(shared_dir(), 'data', 'cifar10-jpeg')
    if os.path.isdir(root):
        cache = os.path.join(tempfile.gettempdir(), 'nrnp-bench-cache')
        start = time.perf_counter()
        ds = data.load_image_folder(root, 'train', cache_dir=cache)
        note = f'loaded {len(ds)} images in {time.perf_counter() - start:.1f} s (cache {cache})'
        out.append(('cifar10-jpeg train', ds, crop_flip, note))
    else:
        out.append(('cifar10-jpeg train', None, {}, f'skipped: {root} not found (set NRNP_SHARED)'))

    import tensorflow_datasets as tfds

    start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        tfds.testing.mock_data(num_examples=args.mock_examples),
    ):
        ds = data.load_tfds('cifar10', 'train', data_dir=tmp)
    note = f'mock_data: {len(ds)} images in {time.perf_counter() - start:.1f} s'
    out.append(('tfds cifar10 mock', ds, crop_flip, note))

    if not args.skip_imagenet:
        rng = np.random.default_rng(0)
        ds = data.Dataset(
            rng.integers(0, 256, (args.imagenet_examples, 256, 256, 3), dtype=np.uint8),
            np.zeros(args.imagenet_examples, np.int32),
            1,
            ('x',),
        )
        rrc = dict(
            augment='random_resized_crop',
            image_size=224,
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
        )
        out.append(('random 256px -> rrc 224', ds, rrc, f'{len(ds)} random images'))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch_size', type=int, default=256)
    parser.add_argument('--steps', type=int, default=40, help='timed batches per row')
    parser.add_argument('--step_ms', type=float, default=0.0, help='simulated step per batch')
    parser.add_argument('--mock_examples', type=int, default=2048)
    parser.add_argument('--imagenet_examples', type=int, default=512)
    parser.add_argument('--imagenet_steps', type=int, default=4, help='timed 224px batches')
    parser.add_argument('--skip_imagenet', action='store_true')
    parser.add_argument('--json', default='', help='also write the figures to this JSON file')
    args = parser.parse_args()

    rows = []
    print(f'batch {args.batch_size}, simulated step {args.step_ms:g} ms, {os.cpu_count()} CPUs')
    for name, ds, kwargs, note in sources(args):
        print(f'{name}: {note}')
        if ds is None:
            rows.append({'source': name, 'skipped': note})
            continue
        steps = args.imagenet_steps if kwargs['augment'] == 'random_resized_crop' else args.steps
        for use_prefetch in (False, True):
            row = throughput(ds, args.batch_size, steps, use_prefetch, args.step_ms, **kwargs)
            row.update(source=name, augment=kwargs['augment'], prefetch=use_prefetch, steps=steps)
            rows.append(row)
            print(
                f'  {kwargs["augment"]:>19} prefetch={use_prefetch!s:5}: '
                f'{row["images_per_s"]:>9,.0f} images/s ({steps} batches in '
                f'{row["seconds"]:.2f} s, cpu {row["cpu_seconds"]:.2f} s)'
            )
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(
                {'batch_size': args.batch_size, 'step_ms': args.step_ms, 'rows': rows}, f, indent=1
            )
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()

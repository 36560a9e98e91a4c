"""Images/s of the training input pipeline (`batching.train_batches` + `threads.prefetch`)
beside the distillation step's own images/s.

  python benchmarks/data_throughput.py                     # all sources + the ResNet20 step
  python benchmarks/data_throughput.py --steps=20 --json=/tmp/data.json --step_target=none
  python benchmarks/data_throughput.py --step_ms=100       # a consumer busy 100 ms per batch

Sources, in memory and streamed (`folders.FolderSource` / `tfds_reader.TfdsSource`: each
batch's images decoded when drawn): the CIFAR-10 JPEG folder in $NRNP_SHARED or
<repo>/../shared (skipped with a message when absent; the in-memory copy is cached in a temp
dir), TFDS `mock_data` for cifar10, random 256x256 images held in memory and a generated
folder of ImageNet-like JPEGs (300-500 px a side, the size of typical ImageNet photos)
through 'random_resized_crop' to 224. Each row times `--steps` batches after one warm-up
batch, with and without `prefetch`; `--step_ms` simulates the training step (a sleep, which
releases the GIL like XLA does), showing how much input time prefetch hides. Last,
`benchmarks/steps.py` measures the distillation step of `--step_target` (images/s it
consumes) on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
from PIL import Image

from nrnp.data import batching, dataset, folders, grain_loader, tfds_reader, threads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def shared_dir() -> str:
    return os.environ.get('NRNP_SHARED') or os.path.join(REPO, '..', 'shared')


def throughput(
    dataset: dataset.Dataset,
    batch_size: int,
    steps: int,
    use_prefetch: bool,
    step_ms: float,
    grain_workers: int | None = None,
    **kwargs,
) -> dict:
    """Times `steps` batches of `train_batches(dataset, ...)` after warm-up batches (grain:
    after its worker processes have started and delivered a batch each)."""
    if grain_workers is not None:
        batches = grain_loader.train_batches(
            dataset, workers=grain_workers, batch_size=batch_size, seed=0, **kwargs
        )
        for _ in range(max(grain_workers, 1) + 1):
            next(batches)
    else:
        batches = batching.train_batches(dataset, batch_size, seed=0, **kwargs)
        if use_prefetch:
            batches = threads.prefetch(batches, size=2)
        next(batches)
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(steps):
        images, _ = next(batches)
        if step_ms:
            time.sleep(step_ms / 1000)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    if use_prefetch or grain_workers is not None:
        batches.close()  # stops the producer thread or the worker processes
    return {
        'images_per_s': round(steps * batch_size / seconds, 1),
        'seconds': round(seconds, 3),
        'cpu_seconds': round(cpu, 3),
        'batch_shape': list(images.shape),
    }


def sources(args) -> list[tuple[str, object, dict, str]]:
    """(name, dataset or None, train_batches kwargs, note) for every source."""
    crop_flip = dict(augment='crop_flip', pad=4, mean=CIFAR_MEAN, std=CIFAR_STD)
    out = []
    root = os.path.join(shared_dir(), 'data', 'cifar10-jpeg')
    if os.path.isdir(root):
        cache = os.path.join(tempfile.gettempdir(), 'nrnp-bench-cache')
        start = time.perf_counter()
        ds = folders.load_image_folder(root, 'train', cache_dir=cache)
        note = f'loaded {len(ds)} images in {time.perf_counter() - start:.1f} s (cache {cache})'
        out.append(('cifar10-jpeg train', ds, crop_flip, note))
        src = folders.FolderSource(root, 'train')
        out.append(('cifar10-jpeg train, streamed', src, crop_flip, f'{len(src)} files'))
    else:
        out.append(('cifar10-jpeg train', None, {}, f'skipped: {root} not found (set NRNP_SHARED)'))

    start = time.perf_counter()
    tmp = tempfile.mkdtemp()
    ds = tfds_reader.load_tfds('cifar10', 'train', data_dir=tmp)  # under main's mock_data
    note = f'mock_data: {len(ds)} images in {time.perf_counter() - start:.1f} s'
    out.append(('tfds cifar10 mock', ds, crop_flip, note))
    src = tfds_reader.TfdsSource('cifar10', 'train', data_dir=tmp)
    out.append(('tfds cifar10 mock, streamed', src, crop_flip, f'{len(src)} records'))

    if not args.skip_imagenet:
        rng = np.random.default_rng(0)
        ds = dataset.Dataset(
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
        start = time.perf_counter()
        folder = imagenet_like_folder(args.imagenet_examples)
        note = f'{args.imagenet_examples} JPEGs written in {time.perf_counter() - start:.1f} s'
        src = folders.FolderSource(folder, 'train')
        out.append(('ImageNet-like JPEGs -> rrc 224, streamed', src, rrc, note))
    return out


def imagenet_like_folder(count: int) -> str:
    """A temp image folder of `count` JPEGs (quality 90) of 300-500 px a side, photo-like:
    a smooth random field plus mild noise (pure noise decodes slower than photos)."""
    root = tempfile.mkdtemp(prefix='nrnp-bench-imagenet-')
    os.makedirs(os.path.join(root, 'train', 'x'))
    rng = np.random.default_rng(0)
    for i in range(count):
        h, w = rng.integers(300, 501, 2)
        coarse = Image.fromarray(rng.integers(0, 256, (h // 32 + 1, w // 32 + 1, 3), np.uint8))
        img = np.asarray(coarse.resize((int(w), int(h)), Image.BICUBIC), np.int16)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(root, 'train', 'x', f'{i:05d}.jpg'), quality=90)
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch_size', type=int, default=256)
    parser.add_argument('--steps', type=int, default=40, help='timed batches per row')
    parser.add_argument('--step_ms', type=float, default=0.0, help='simulated step per batch')
    parser.add_argument('--mock_examples', type=int, default=2048)
    parser.add_argument('--imagenet_examples', type=int, default=512)
    parser.add_argument('--imagenet_steps', type=int, default=4, help='timed 224px batches')
    parser.add_argument('--skip_imagenet', action='store_true')
    parser.add_argument(
        '--grain_workers',
        default=','.join(map(str, sorted({1, max(1, (os.cpu_count() or 2) - 1)}))),
        help='grain worker-process counts to time on the streamed sources (comma-separated)',
    )
    parser.add_argument(
        '--step_target',
        default='resnet20',
        help="distillation step to measure beside the input (resnet20, resnet56, resnet18; 'none')",
    )
    parser.add_argument('--json', default='', help='also write the figures to this JSON file')
    args = parser.parse_args()
    args.grain_workers = [int(w) for w in args.grain_workers.split(',') if w]

    import tensorflow_datasets as tfds

    rows = []
    print(f'batch {args.batch_size}, simulated step {args.step_ms:g} ms, {os.cpu_count()} CPUs')
    with tfds.testing.mock_data(num_examples=args.mock_examples):
        rows += time_sources(args)
    step = None
    if args.step_target != 'none':
        import steps  # benchmarks/steps.py, next to this file

        print(f'distillation step of {args.step_target} (benchmarks/steps.py):')
        step = steps.main([f'--target={args.step_target}', '--repeats=3'])['distill']
        print(
            f'  the step consumes {step["images_per_s"]:,.0f} images/s '
            f'({step["image_batch"]} images in {step["step_ms"]:.0f} ms)'
        )
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(
                {
                    'batch_size': args.batch_size,
                    'step_ms': args.step_ms,
                    'rows': rows,
                    'distill_step': step,
                },
                f,
                indent=1,
            )
        print(f'wrote {args.json}')


def device_throughput(ds: dataset.Dataset, batch_size: int, steps: int, **kwargs) -> dict:
    """Times the on-device path (`device_data.train_images` jitted: index sampling, crop,
    flip and normalisation on the device) for an in-memory dataset."""
    import jax  # noqa: PLC0415

    from nrnp.training import device_data  # noqa: PLC0415

    split = device_data.place(ds)
    settings = dict(
        batch_size=batch_size,
        augment=kwargs['augment'],
        pad=kwargs.get('pad', 0),
        mean=tuple(kwargs['mean']),
        std=tuple(kwargs['std']),
    )
    draw = jax.jit(device_data.train_images, static_argnames=tuple(settings))
    key = jax.random.key(0)
    jax.block_until_ready(draw(split, key, 0, **settings))
    start = time.perf_counter()
    for step in range(1, steps + 1):
        images = draw(split, key, step, **settings)
    jax.block_until_ready(images)
    seconds = time.perf_counter() - start
    return {
        'images_per_s': round(steps * batch_size / seconds, 1),
        'seconds': round(seconds, 3),
        'batch_shape': list(images.shape),
        'device': str(jax.devices()[0].device_kind),
    }


def time_sources(args) -> list[dict]:
    rows = []
    for name, ds, kwargs, note in sources(args):
        print(f'{name}: {note}')
        if ds is None:
            rows.append({'source': name, 'skipped': note})
            continue
        steps = args.imagenet_steps if kwargs['augment'] == 'random_resized_crop' else args.steps
        variants = [('threads', False, None), ('threads + prefetch', True, None)]
        streamed = not isinstance(ds, dataset.Dataset)
        if streamed and grain_loader.available():
            variants += [(f'grain, {w} workers', False, w) for w in args.grain_workers]
        for label, use_prefetch, workers in variants:
            row = throughput(
                ds, args.batch_size, steps, use_prefetch, args.step_ms, workers, **kwargs
            )
            row.update(
                source=name,
                augment=kwargs['augment'],
                loader=label,
                prefetch=use_prefetch,
                steps=steps,
            )
            rows.append(row)
            print(
                f'  {kwargs["augment"]:>19} {label:>22}: {row["images_per_s"]:>9,.0f} images/s '
                f'({steps} batches in {row["seconds"]:.2f} s, cpu {row["cpu_seconds"]:.2f} s)'
            )
        if not streamed and kwargs['augment'] in ('crop_flip', 'none'):
            row = device_throughput(ds, args.batch_size, args.steps, **kwargs)
            row.update(source=name, augment=kwargs['augment'], loader='on device', steps=args.steps)
            rows.append(row)
            print(
                f'  {kwargs["augment"]:>19} {"on device (" + row["device"] + ")":>22}: '
                f'{row["images_per_s"]:>9,.0f} images/s ({args.steps} batches in '
                f'{row["seconds"]:.2f} s)'
            )
    return rows


if __name__ == '__main__':
    main()

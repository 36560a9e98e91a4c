"""Step benchmarks: reconstruction and distillation steps against a same-run matmul roofline.

  python benchmarks/steps.py --target=resnet20 --hidden=180 --json=/tmp/steps.json
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/steps.py --devices=8
  python benchmarks/steps.py --target=cifar_resnet50 --width=0.25 --hidden=128 --pointwise=both

Prints, per step: median time after compilation, kernels/s, images/s, the
step's FLOPs counted analytically (predictor rows x multiply-adds, the target's
conv and dense FLOPs) beside XLA's own count, the achieved GFLOP/s, the peak
memory, and the ratio to a roofline measured in the same run: a dense matmul
chain with the predictor's shapes over the same rows. The ratio uses the
analytic count: XLA's cost analysis undercounts large fused steps (6.5 GFLOP
for a ResNet18 reconstruction step of ~2 TFLOP). Random target weights of the
right shapes are used (speed does not depend on their values).

`--pointwise=both` runs the same predictor over both 1x1 row layouts (`kernels.pointwise`:
'centre', one row per 1x1 weight, and 'grouped', 9 input channels per row) and prints the
table's rows, the step times, a pass over every row (ceil(rows / batch) steps: what fitting
the whole table costs) and the full rebuild (every row predicted: what each distillation
step and evaluation does), with the ratios between the layouts.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from nrnp.core import encodings, kernel_rows, kernels, predictor
from nrnp.nets import models
from nrnp.training import distillation, optim, reconstruction, sharding

SIZES = {
    'resnet20': 180,
    'resnet56': 320,
    'resnet18': 1256,
    'cifar_resnet50': 128,
    'cifar_mobilenet_v2': 64,
    'resnet50': 1256,
    'mobilenet_v2': 320,
}
IMAGENET = ('resnet18', 'resnet50', 'mobilenet_v2')


def _median_time(fn, args, repeats: int):
    """Median seconds of `fn(*args)` after one compiling call; fn returns (state, metrics)."""
    state, rest = args[0], args[1:]
    state, out = fn(state, *rest)
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        state, out = fn(state, *rest)
        jax.block_until_ready((state, out))
        times.append(time.perf_counter() - t)
    return statistics.median(times), state


def _flops(jitted, *args) -> float:
    """FLOPs of one call: XLA's per-partition count times the number of devices."""
    try:
        cost = jitted.lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return float(cost.get('flops', float('nan'))) * len(jax.devices())
    except Exception:  # cost analysis is best-effort on some backends
        return float('nan')


def predictor_macs(pparams) -> int:
    """Multiply-adds per predicted row: the sum of the Dense kernels' sizes."""
    return sum(x.size for x in jax.tree.leaves(pparams) if x.ndim == 2)


def network_flops(model, variables, images_shape) -> float:
    """Forward FLOPs of the target on a batch: 2 x output positions x kernel size, per
    conv and dense layer (shapes from `jax.eval_shape`, nothing computed)."""
    x = jax.ShapeDtypeStruct(images_shape, jnp.float32)
    apply = lambda x: model.apply(
        variables, x, train=False, capture_intermediates=True, mutable=['intermediates']
    )
    _, state = jax.eval_shape(apply, x)
    flat_params = {
        tuple(kernels.path_names(p)): v for p, v in jax.tree.leaves_with_path(variables['params'])
    }
    total = 0.0
    for path, out in jax.tree.leaves_with_path(state['intermediates']):
        names = tuple(kernels.path_names(path))[:-2]  # drop '__call__' and the tuple index
        kernel = flat_params.get((*names, 'kernel'))
        if kernel is not None and names:
            total += 2.0 * float(np.prod(out.shape[:-1])) * float(np.prod(kernel.shape))
    return total


def roofline(hidden: int, input_dim: int, layers: int, rows: int, repeats: int) -> dict:
    """GFLOP/s of forward+backward-shaped matmuls with the predictor's shapes (no MLP logic)."""
    dims = [input_dim] + [hidden] * (layers - 1) + [kernel_rows.ROW]
    key = jax.random.key(0)
    ws = [jax.random.normal(key, (a, b), jnp.float32) for a, b in zip(dims[:-1], dims[1:])]
    x = jax.random.normal(key, (rows, input_dim), jnp.float32)

    @jax.jit
    def chain(ws, x):
        h, acts = x, []
        for w in ws:
            acts.append(h)
            h = h @ w
        g = h
        grads = []
        for w, a in zip(reversed(ws), reversed(acts)):
            grads.append(a.T @ g)  # weight gradient
            g = g @ w.T  # input gradient
        return grads

    flops = 3 * 2 * rows * sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    jax.block_until_ready(chain(ws, x))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(chain(ws, x))
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    return {'seconds': seconds, 'gflops': flops / seconds / 1e9}


def _peak_memory_mb() -> float:
    stats = jax.devices()[0].memory_stats() or {}
    if 'peak_bytes_in_use' in stats:
        return stats['peak_bytes_in_use'] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # host RSS (KiB on Linux)


def run(args) -> dict:
    mesh = sharding.make_mesh(args.devices)
    hidden = args.hidden or SIZES[args.target]
    num_classes = 1000 if args.target in IMAGENET else 10
    size = 224 if args.target in IMAGENET else 32
    width = {'width_mult': args.width} if args.width != 1.0 else {}
    model = models.build_model(args.target, num_classes, **width)
    shapes = jax.eval_shape(lambda: models.init_variables(model, (1, size, size, 3)))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.05, s.dtype), shapes
    )
    variables['batch_stats'] = jax.tree.map(jnp.abs, variables['batch_stats'])
    sizes = (3,) if args.target == 'resnet18' else (1, 3)
    select = kernels.select_kernels(sizes)
    layout = kernels.kernel_layout(variables['params'], select, args.pointwise)
    table = kernels.gather(layout, variables['params'])
    mask = jnp.asarray(layout.mask())
    coords = np.stack(
        [
            layout.layer_index(),
            np.arange(layout.num_kernels) % 97,
            np.arange(layout.num_kernels) % 89,
        ],
        axis=-1,
    )
    encoded = encodings.nern_encoding(jnp.asarray(coords))
    problem = reconstruction.ReconstructionProblem(
        encoded, table, mask, reconstruction.magnitude_probabilities(table, mask)
    )
    pmodel = predictor.Predictor(hidden=hidden)
    pparams = predictor.init_predictor(pmodel, encoded.shape[1], 0)
    tx = optim.phase_switch(
        {k: optim.make_optimizer('ranger', steps=1000) for k in ('reconstruct', 'distill')}
    )
    state = reconstruction.PredictorState(jnp.zeros([], jnp.int32), pparams, tx.init(pparams))
    state, problem = sharding.replicate((state, problem), mesh)
    batch = min(args.kernel_batch, layout.num_kernels)
    result = {
        'device': str(jax.devices()[0].device_kind),
        'devices': mesh.shape[sharding.DATA],
        'target': args.target,
        'width': args.width,
        'pointwise': args.pointwise,
        'hidden': hidden,
        'predictor_params': sum(x.size for x in jax.tree.leaves(pparams)),
        'num_kernels': layout.num_kernels,
        'kernel_batch': batch,
    }
    rf = roofline(hidden, encoded.shape[1], 5, batch, args.repeats)
    result['roofline_gflops'] = rf['gflops']

    recon = jax.jit(
        functools.partial(
            reconstruction.reconstruction_step,
            model=pmodel,
            tx=tx,
            batch_size=batch,
            mesh=mesh,
        ),
        donate_argnums=0,
    )
    key = jax.random.key(1)
    macs = predictor_macs(pparams)
    xla_flops = _flops(recon, state, problem, key)
    flops = 6.0 * batch * macs  # forward 2, backward 4 multiply-add FLOPs per weight and row
    seconds, state = _median_time(recon, (state, problem, key), args.repeats)
    result['recon'] = {
        'step_ms': 1000 * seconds,
        'kernels_per_s': batch / seconds,
        'gflop': flops / 1e9,
        'xla_gflop': xla_flops / 1e9,
        'gflops': flops / seconds / 1e9,
        'roofline_ratio': flops / seconds / 1e9 / rf['gflops'],
    }
    result['recon']['pass_s'] = -(-layout.num_kernels // batch) * seconds  # every row once
    print_row('reconstruction', result['recon'], result)
    rebuild = jax.jit(lambda p, e: predictor.predict(pmodel, p, e))
    jax.block_until_ready(rebuild(state.pparams, problem.encoded))
    times = []
    for _ in range(max(args.repeats // 4, 3)):
        t = time.perf_counter()
        jax.block_until_ready(rebuild(state.pparams, problem.encoded))
        times.append(time.perf_counter() - t)
    result['rebuild'] = {'all_rows_ms': 1000 * statistics.median(times)}
    print_row('rebuild', result['rebuild'], result)

    if not args.skip_distill:
        setup = distillation.DistillSetup(
            predictor=pmodel,
            target=model,
            teacher=model,
            layout=layout,
            batch_size=batch,
            mesh=mesh,
        )
        frozen = sharding.replicate(
            distillation.Frozen(variables['params'], variables['batch_stats'], variables), mesh
        )
        opt_state = optim.select_phase(state.opt_state, 'distill', tx)
        state = sharding.replicate(state.replace(opt_state=opt_state), mesh)
        images = sharding.global_batch(
            rng.normal(size=(args.image_batch, size, size, 3)).astype(np.float32), mesh
        )
        distill = jax.jit(
            functools.partial(
                distillation.distillation_step,
                setup=setup,
                tx=tx,
                loss_weights=(1.0, 1.0, 0.0),
            ),
            donate_argnums=0,
        )
        xla_flops = _flops(distill, state, problem, frozen, images, key)
        # All rows forward (no gradient), the kernel batch forward + backward, the rebuilt
        # net forward + backward (input and weight gradients: ~3x forward), the teacher forward.
        net = network_flops(model, variables, images.shape)
        flops = 2.0 * layout.num_kernels * macs + 6.0 * batch * macs + 4.0 * net
        seconds, state = _median_time(
            distill, (state, problem, frozen, images, key), max(args.repeats // 4, 3)
        )
        # Time of the ResNet alone (forward + backward w.r.t. the weights) on the same batch,
        # to show how much of the step is the network rather than nrnp's overhead. Only on
        # one device: across simulated CPU devices XLA places this bare function badly.
        net_fn = jax.jit(
            jax.grad(
                lambda p: jnp.sum(
                    model.apply({'params': p, 'batch_stats': variables['batch_stats']}, images)
                )
            )
        )
        net_seconds = float('nan')
        if mesh.size == 1:
            p_rep = sharding.replicate(variables['params'], mesh)
            jax.block_until_ready(net_fn(p_rep))
            t = time.perf_counter()
            for _ in range(3):
                jax.block_until_ready(net_fn(p_rep))
            net_seconds = (time.perf_counter() - t) / 3
        result['distill'] = {
            'step_ms': 1000 * seconds,
            'images_per_s': args.image_batch / seconds,
            'gflop': flops / 1e9,
            'xla_gflop': xla_flops / 1e9,
            'network_forward_gflop': net / 1e9,
            'gflops': flops / seconds / 1e9,
            'resnet_fwd_bwd_ms': 1000 * net_seconds,
            'resnet_share': net_seconds / seconds,
            'image_batch': args.image_batch,
        }
        print_row('distillation', result['distill'], result)
    result['peak_memory_mb'] = _peak_memory_mb()
    print(f'peak memory {result["peak_memory_mb"]:.0f} MiB; roofline {rf["gflops"]:.1f} GFLOP/s')
    return result


def print_row(name, r, meta):
    parts = [
        f'{name}: {meta["target"]} (width {meta["width"]}, 1x1 rows {meta["pointwise"]}, '
        f'{meta["num_kernels"]} rows) h={meta["hidden"]} on {meta["devices"]} x {meta["device"]}'
    ]
    parts += [f'{k}={v:.4g}' for k, v in r.items()]
    print('  '.join(parts), flush=True)


LAYOUTS = ('centre', 'grouped')


def print_comparison(result: dict) -> None:
    """Centre vs grouped 1x1 rows, same predictor: rows, step, pass and rebuild times."""
    c, g = result['centre'], result['grouped']
    lines = [
        ('table rows', c['num_kernels'], g['num_kernels']),
        ('reconstruction step ms', c['recon']['step_ms'], g['recon']['step_ms']),
        ('pass over all rows s', c['recon']['pass_s'], g['recon']['pass_s']),
        ('rebuild (all rows) ms', c['rebuild']['all_rows_ms'], g['rebuild']['all_rows_ms']),
    ]
    if 'distill' in c:
        lines.append(('distillation step ms', c['distill']['step_ms'], g['distill']['step_ms']))
    print(f'{"same predictor, h=" + str(c["hidden"]):<28} {"centre":>12} {"grouped":>12} ratio')
    for name, a, b in lines:
        print(f'{name:<28} {a:>12.4g} {b:>12.4g} {a / b:5.2f}x')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--target', default='resnet20', choices=sorted(SIZES))
    parser.add_argument('--width', type=float, default=1.0, help='width_mult (ResNet50/MNv2)')
    parser.add_argument(
        '--pointwise', default='grouped', choices=('grouped', 'centre', 'both'), help='1x1 rows'
    )
    parser.add_argument('--hidden', type=int, default=0, help='0: the paper size for the target')
    parser.add_argument('--kernel_batch', type=int, default=4096)
    parser.add_argument('--image_batch', type=int, default=256)
    parser.add_argument('--devices', type=int, default=0, help='0: all devices')
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--skip_distill', action='store_true')
    parser.add_argument('--json', default='', help='also write the figures here')
    args = parser.parse_args(argv)
    if args.pointwise == 'both':
        result = {p: run(argparse.Namespace(**{**vars(args), 'pointwise': p})) for p in LAYOUTS}
        print_comparison(result)
    else:
        result = run(args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    sys.exit(0 if main() else 1)

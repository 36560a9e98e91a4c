"""Top-1 against stored bytes: nrnp variants (widths, rounds, quantisation) beside baselines.

  python benchmarks/curve.py --target=resnet20 --widths=140,160,180 --methods=recon,distill \
      --rounds=180-140,180-160-140 --steps=8000 --distill_steps=60 --out=runs/curve \
      --baselines=benchmarks/results/baselines.json

Each nrnp variant is one run of `nrnp.pipeline.job.run` (the CLI's code) on the
../shared pretrained net and JPEG CIFAR-10, all at the same step budgets:
  widths x methods      one predictor of width h
  rounds x methods      progressive rounds of widths w1-w2-..., `steps` split evenly
                        (`reconstruct.round_hidden`), or w1-w2@s1-s2 with steps per
                        round (`reconstruct.round_steps`); the last width is stored
  x quantize            `predictor.quantize` modes ('none', 'bf16', 'int8'..'int2')
  x recalibrate         'on' (the default BatchNorm re-estimation) and/or 'off'
                        (`recalibrate.images=0`, name suffix `_norecal`)
and the methods are
  recon      reconstruction only, `steps` steps
  distill    reconstruction (`steps`) then decoupled distillation (`distill_steps`)
  joint      reconstruction (`steps`) then NeRN's joint loss (`distill_steps`):
             rec 1 + KD 1e-4 + feature maps 1e-4 at a small learning rate
With both recon and distill asked, a recon row is the distill run's record after its
last reconstruction round (the same computation, not rerun; for a quantized predictor
only with re-estimation on, whose record measures the stored predictor); with
re-estimation on, the run also gives the recon row after its re-estimation
('+ BN re-est.').

Every nrnp row names the baseline rows that dominate it (`dominated_by`: at most its
stored bytes and at least its top-1, plain or re-estimated); the plot rings the nrnp
points no baseline dominates.

Stored bytes are the artefact's payload without its JSON header (predictor + orderings
+ copied leaves, `Compressed.size_report`), the measure benchmarks/baselines.py counts
for quantisation and pruning; `--baselines` adds its JSON rows to the table and plot.
Writes curve.md, curve.csv and curve.png. A variant whose workdir already holds
report.json is read, not rerun, so the script can be resumed or extended; `--read_only`
skips the variants not run yet instead of running them. The shared
CIFAR-10 is JPEG re-encoded: compare rebuilt vs original on the same images only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, 'benchmarks')]  # nrnp, cifar_targets

import cifar_targets  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from nrnp.configs import c10_r20  # noqa: E402

CHECKPOINTS = cifar_targets.CHECKPOINTS
METHODS = ('recon', 'distill', 'joint')
BASELINE_SERIES = {  # by the method name's letters
    'fp': 'fp16 cast',
    'ptq': 'per-channel PTQ (packed, fp32 scales)',
    'cq': 'per-channel PTQ, MSE scales, coded',
    'gq': 'per-group-16 PTQ, MSE scales, coded',
    'prune': 'magnitude pruning, per layer',
    'gprune': 'magnitude pruning, global',
}
RECAL = ' + BN re-est.'


def variants(
    widths, rounds, methods, quantize, quantize_rounds=False, recalibrate=('on',)
) -> list[dict]:
    """Every (name, round widths, round steps, method, quantize, recal) asked, each a dict.

    Quantised variants (a mode other than 'none') are made for progressive rounds only
    with `quantize_rounds`. `recalibrate` lists 'on' and/or 'off' (suffix `_norecal`).
    """
    shapes = [(f'h{w}', (w,), ()) for w in widths]
    for spec in rounds:
        hidden, _, steps = spec.partition('@')
        per_round = tuple(int(s) for s in steps.split('-')) if steps else ()
        shapes.append((f'r{spec}', tuple(int(w) for w in hidden.split('-')), per_round))
    out = []
    for shape, hidden, per_round in shapes:
        for method in methods:
            if method not in METHODS:
                raise SystemExit(f'unknown method {method!r}; valid: {",".join(METHODS)}')
            for q in quantize:
                if q != 'none' and len(hidden) > 1 and not quantize_rounds:
                    continue
                for recal in recalibrate:
                    name = f'{shape}_{method}' + ('' if q == 'none' else f'_{q}')
                    name += '' if recal == 'on' else '_norecal'
                    out.append(
                        {
                            'name': name,
                            'hidden': hidden,
                            'round_steps': per_round,
                            'method': method,
                            'quantize': q,
                            'recal': recal,
                        }
                    )
    return out


def variant_config(args, shared: str, variant: dict):
    """The run's config: c10_r20 with the target, the budgets and the variant's fields."""
    c = c10_r20.get_config()
    c.teacher.model = args.target
    c.teacher.checkpoint = os.path.join(shared, CHECKPOINTS[args.target])
    c.data.image_folder = os.path.join(shared, 'data/cifar10-jpeg')
    c.data.test_limit = args.test_limit
    hidden = variant['hidden']
    c.predictor.hidden = hidden[-1]
    if len(hidden) > 1:
        c.reconstruct.round_hidden = hidden
    if variant.get('round_steps'):
        c.reconstruct.round_steps = variant['round_steps']  # summing to `steps` or not
    c.reconstruct.steps = args.steps
    c.distill.steps = args.distill_steps if variant['method'] != 'recon' else 0
    c.log_every = 1000
    c.checkpoint_every = 100_000
    if variant['method'] == 'joint':
        c.distill.kd_weight = 1e-4
        c.distill.fm_weight = 1e-4
        c.distill.reconstruction_weight = 1.0
        c.distill.learning_rate = 1e-5
    c.predictor.quantize = variant['quantize']
    if 'recalibrate' in c and getattr(args, 'recal_when', ''):
        c.recalibrate.when = args.recal_when
    if variant.get('recal', 'on') == 'off':
        if 'recalibrate' not in c:
            return None
        c.recalibrate.images = 0
    return c


def stored_bytes(workdir: str) -> dict:
    """Payload bytes of the run's artefact without its header, and the file's bytes."""
    import nrnp

    sizes = nrnp.load(os.path.join(workdir, 'compressed.nrnp')).size_report()
    return {
        'stored_bytes': sizes['payload_bytes'] - sizes['header_bytes'],
        'artifact_bytes': sizes['artifact_bytes'],
        'original_bytes': sizes['original_bytes'],
    }


def run_row(args, shared: str, variant: dict) -> list[dict]:
    """The variant's row, and the rows of its reconstruction (without and, when it ran, with
    BatchNorm re-estimation) read from a distill run when recon is asked too."""
    from nrnp.pipeline import job

    config = variant_config(args, shared, variant)
    if config is None:
        print(f'skipped {variant["name"]}: this nrnp lacks a field it needs', flush=True)
        return []
    workdir = os.path.join(args.out, f'{args.target}_{variant["name"]}')
    path = os.path.join(workdir, 'report.json')
    if os.path.exists(path):
        with open(path) as f:
            report = json.load(f)
    elif args.read_only:
        print(f'skipped {variant["name"]}: no finished run in {workdir}', flush=True)
        return []
    else:
        report = job.run(config, workdir)
    sizes = stored_bytes(workdir)
    rounds = '-'.join(map(str, variant['hidden']))
    if variant.get('round_steps'):
        rounds += '@' + '-'.join(map(str, variant['round_steps']))
    recal = variant.get('recal', 'on') == 'on' and any(
        p['kind'] == 'recalibrate' for p in report['phases']
    )
    series = f'nrnp {variant["method"]}' + (
        f' rounds {rounds}' if len(variant['hidden']) > 1 else ''
    )
    quantized = '' if variant['quantize'] == 'none' else f' {variant["quantize"]}'
    row = {
        'target': args.target,
        'name': variant['name'],
        'series': series + quantized + (RECAL if recal else ''),
        'hidden': rounds,
        'steps': sum(p['steps'] for p in report['phases']),
        'predictor_params': report['predictor_params'],
        'ratio': report['ratio'],
        **sizes,
        'test_images': report['test_images'],
        'top1_original': report['top1_original'],
        'top1': report['top1_reconstructed'],
        'rmse': report['reconstruction_rmse'],
        'wall_seconds': report['wall_seconds'],
    }
    rows = [row]
    if variant['method'] != 'distill' or 'recon' not in args.methods.split(','):
        return rows
    phases = report['phases']
    last = max(i for i, p in enumerate(phases) if p['kind'] == 'reconstruct')
    recon = {
        **row,
        'name': variant['name'].replace('_distill', '_recon'),
        'series': (series + quantized).replace('distill', 'recon'),
        'steps': sum(p['steps'] for p in phases[: last + 1]),  # the run's own, not --steps
        'top1': phases[last]['top1'],
        'rmse': phases[last]['rmse'],
        'wall_seconds': None,
    }
    if not recal:  # the same reconstruction as the 'on' run: one row for both
        if variant['quantize'] != 'none':
            return rows  # the reconstruct record measured the float predictor
        return [recon, row] if 'on' not in args.recalibrate.split(',') else rows
    after = phases[last + 1] if phases[last + 1]['kind'] == 'recalibrate' else None
    # A quantized run's reconstruct record measured the float predictor: not its bytes.
    out = [recon] if variant['quantize'] == 'none' else []
    if after is not None:
        out.append({**recon, 'series': recon['series'] + RECAL, 'top1': after['top1']})
    return [*out, row]


def baseline_series(method: str) -> str:
    """The plot series of a baselines.py method ('ptq4' -> per-channel PTQ, ...)."""
    letters = method.rstrip('0123456789')
    return BASELINE_SERIES.get(letters, 'fp32 original')


def mark_dominated(rows: list[dict]) -> None:
    """Sets `dominated_by` on every nrnp row: the baseline rows (name, and ' re-est.')
    with at most its stored bytes and at least its top-1."""
    baselines = [r for r in rows if not r['series'].startswith('nrnp')]
    for r in rows:
        if not r['series'].startswith('nrnp'):
            r['dominated_by'] = None
            continue
        r['dominated_by'] = ' '.join(
            b['name'] + (' re-est.' if b['series'].endswith(RECAL) else '')
            for b in baselines
            if b['stored_bytes'] <= r['stored_bytes'] and b['top1'] >= r['top1']
        )


def baseline_rows(path: str, target: str) -> list[dict]:
    """Rows of benchmarks/baselines.py's JSON for `target`, in this table's columns."""
    with open(path) as f:
        found = [r for r in json.load(f) if r['target'] == target]
    rows = [
        {
            'target': target,
            'name': r['method'],
            'series': baseline_series(r['method']),
            'hidden': '',
            'steps': 0,
            'predictor_params': None,
            'ratio': None,
            'stored_bytes': r['stored_bytes'],
            'artifact_bytes': None,
            'original_bytes': r['original_bytes'],
            'test_images': r['test_images'],
            'top1_original': None,
            'top1': r['top1'],
            'rmse': None,
            'wall_seconds': None,
        }
        for r in found
    ]
    for r, source in zip(list(rows), found):  # the same nets with re-estimated statistics
        if source.get('top1_recalibrated') is not None and source['method'] != 'original':
            rows.append({**r, 'series': r['series'] + RECAL, 'top1': source['top1_recalibrated']})
    return rows


def plot(rows: list[dict], path: str) -> None:
    """Top-1 against stored bytes (log axis), one line or marker set per series."""
    fig = Figure(figsize=(7.2, 4.6), layout='constrained')
    ax = fig.add_subplot()
    series: dict[str, list] = {}
    for r in rows:
        series.setdefault(r['series'], []).append((r['stored_bytes'], r['top1']))
    for name, points in series.items():
        points.sort()
        style = 'o-' if name.startswith('nrnp') else 's--'
        ax.plot([b / 1024 for b, _ in points], [t for _, t in points], style, label=name)
    free = [r for r in rows if r['series'].startswith('nrnp') and not r.get('dominated_by')]
    if free:
        ax.plot(
            [r['stored_bytes'] / 1024 for r in free],
            [r['top1'] for r in free],
            'o',
            markersize=12,
            markerfacecolor='none',
            markeredgecolor='black',
            label='nrnp, no baseline dominates',
        )
    ax.set_xscale('log')
    ax.set_xlabel('stored bytes (KiB, log scale)')
    ax.set_ylabel('top-1 (%)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    FigureCanvasAgg(fig)
    fig.savefig(path, format='png', dpi=120)


def write(rows: list[dict], out: str) -> None:
    """curve.csv, curve.md and curve.png in `out`."""
    with open(os.path.join(out, 'curve.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v, spec: '-' if v is None else format(v, spec)
    lines = [
        '| target | variant | h (per round) | steps | ratio | stored bytes | / fp32 | '
        'test images | top-1 | RMSE | dominated by |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ]
    for r in rows:
        lines.append(
            f'| {r["target"]} | {r["name"]} | {r["hidden"] or "-"} | {r["steps"]} | '
            f'{fmt(r["ratio"], ".3f")} | {r["stored_bytes"]:,} | '
            f'{r["stored_bytes"] / r["original_bytes"]:.4f} | {r["test_images"]} | '
            f'{r["top1"]:.2f} | {fmt(r["rmse"], ".5f")} | '
            f'{"-" if r.get("dominated_by") is None else r["dominated_by"] or "none"} |'
        )
    with open(os.path.join(out, 'curve.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    plot(rows, os.path.join(out, 'curve.png'))
    print('\n'.join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--target', default='resnet20', choices=sorted(CHECKPOINTS))
    parser.add_argument('--widths', default='140,160,180', help='single-predictor widths')
    parser.add_argument('--rounds', default='', help='round widths, e.g. 180-140,180-160-140')
    parser.add_argument('--methods', default='recon,distill')
    parser.add_argument(
        '--quantize', default='none', help='predictor.quantize modes (distill runs only)'
    )
    parser.add_argument(
        '--quantize_rounds', action='store_true', help='quantised variants of the rounds too'
    )
    parser.add_argument(
        '--recalibrate', default='on', help="BatchNorm re-estimation: 'on', 'off' or 'on,off'"
    )
    parser.add_argument(
        '--recal_when', default='', help="recalibrate.when ('': the config's default)"
    )
    parser.add_argument('--steps', type=int, default=8000, help='reconstruction steps')
    parser.add_argument('--distill_steps', type=int, default=60)
    parser.add_argument('--test_limit', type=int, default=0, help='0: all 10,000 test images')
    parser.add_argument('--baselines', default='', help="benchmarks/baselines.py's JSON")
    parser.add_argument('--out', default='runs/curve')
    parser.add_argument(
        '--read_only', action='store_true', help='only variants already run in --out (no training)'
    )
    args = parser.parse_args(argv)
    shared = cifar_targets.shared_dir()
    if shared is None:
        return 0
    os.makedirs(args.out, exist_ok=True)
    methods = args.methods.split(',')
    chosen = variants(
        [int(w) for w in args.widths.split(',') if w],
        [s for s in args.rounds.split(',') if s],
        methods,
        args.quantize.split(','),
        args.quantize_rounds,
        args.recalibrate.split(','),
    )
    # A float recon run is the first part of the distill run: its row comes from there.
    shared_part = lambda v: v['method'] == 'recon' and v['quantize'] == 'none'
    chosen = [v for v in chosen if not (shared_part(v) and 'distill' in methods)]
    rows = []
    for variant in chosen:
        rows += run_row(args, shared, variant)
        for r in rows[-2:]:
            print(json.dumps(r), flush=True)
    if args.baselines:
        rows += baseline_rows(args.baselines, args.target)
    mark_dominated(rows)
    write(rows, args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())

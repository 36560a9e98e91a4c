"""End to end against bare steps: the real CLI on a recipe, then `steps.py`'s bare steps for the
same target, in one process; how much of the step rate the whole run keeps.

  python benchmarks/e2e.py --config=c10_r20 --reconstruct_steps=300 --distill_steps=20 \
      --json=/tmp/e2e.json -- --config.data.image_folder=../shared/data/cifar10-jpeg \
      --config.teacher.checkpoint=../shared/weights/akamaster-cifar10/resnet20-12fca82f.th

Everything after `--` goes to the CLI unchanged. Writes and prints
`{"reconstruct": {"cli_steps_per_s", "bare_steps_per_s", "ratio", "host_ms_per_step"},
"distill": {...}, "cli": {...}, "bare": {...}}`: the CLI's rates are report.json's
`steps_per_second` (compilation and evaluation excluded), its `host_ms_per_step` the loop's
own measure of time per step spent outside the jitted step (input preparation,
host-to-device copies, logging); the bare rates are 1000 / `steps.py`'s median step_ms with
the recipe's predictor width, kernel batch and image batch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))

import steps  # noqa: E402

from nrnp import main as cli  # noqa: E402
from nrnp.configs import catalog  # noqa: E402


def _phase_figures(report: dict, kind: str) -> dict:
    """Step rate and host time of one phase kind, weighted by the phases' steps."""
    phases = [p for p in report['phases'] if p['kind'] == kind and p.get('steps_per_second')]
    steps_done = sum(p['steps'] for p in phases)
    if not steps_done:
        return {}
    seconds = sum(p['steps'] / p['steps_per_second'] for p in phases)
    host = sum(p['steps'] * (p.get('host_ms_per_step') or 0.0) for p in phases) / steps_done
    return {'cli_steps_per_s': steps_done / seconds, 'host_ms_per_step': host}


def run(args, passthrough: list[str]) -> dict:
    workdir = args.workdir or tempfile.mkdtemp(prefix='nrnp-e2e-')
    argv = [
        'nrnp',
        f'--config={args.config}',
        f'--workdir={workdir}',
        f'--config.reconstruct.steps={args.reconstruct_steps}',
        f'--config.distill.steps={args.distill_steps}',
        *passthrough,
    ]
    status = cli.main(argv)
    if status:
        raise SystemExit(f'the CLI exited with {status}')
    with open(os.path.join(workdir, 'report.json')) as f:
        report = json.load(f)
    _, spec = catalog.resolve_config_flag([f'--config={args.config}'])
    config = catalog.load(spec)
    for flag in passthrough:  # the overrides that shape the bare steps
        name, _, value = flag.removeprefix('--config.').partition('=')
        if name in ('predictor.hidden', 'reconstruct.batch_size', 'distill.batch_size'):
            section, field = name.split('.')
            config[section][field] = int(value)
    bare = steps.main(
        [
            f'--target={config.teacher.model}',
            f'--hidden={config.predictor.hidden}',
            f'--kernel_batch={config.reconstruct.batch_size}',
            f'--image_batch={config.distill.batch_size}',
            f'--repeats={args.repeats}',
            *(['--skip_distill'] if not args.distill_steps else []),
        ]
    )
    out = {'cli': {'workdir': workdir, 'argv': argv}, 'bare': bare}
    for kind, key in (('reconstruct', 'recon'), ('distill', 'distill')):
        figures = _phase_figures(report, kind)
        if figures and key in bare:
            figures['bare_steps_per_s'] = 1000.0 / bare[key]['step_ms']
            figures['ratio'] = figures['cli_steps_per_s'] / figures['bare_steps_per_s']
        out[kind] = figures
    return out


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = argv[argv.index('--') + 1 :] if '--' in argv else []
    own = argv[: argv.index('--')] if '--' in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='c10_r20')
    parser.add_argument('--reconstruct_steps', type=int, default=300)
    parser.add_argument('--distill_steps', type=int, default=20)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--workdir', default='', help='default: a new temporary directory')
    parser.add_argument('--json', default='', help='also write the figures here')
    args = parser.parse_args(own)
    result = run(args, passthrough)
    summary = {k: result[k] for k in ('reconstruct', 'distill')}
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()

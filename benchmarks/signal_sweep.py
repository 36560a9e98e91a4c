"""One signal at fixed times after launch, over the first seconds of a real run: the table.

  python benchmarks/signal_sweep.py --signal=TERM --start=0.2 --stop=2.0 --runs=36 \
      -- --config=c10_r20:tiny --config.teacher.checkpoint=... --config.data.image_folder=...

Each of RUNS runs (at evenly spaced times from START to STOP) starts `nrnp ARGS
--workdir=<fresh dir>` (the installed console script, else `python -m nrnp.main`), sends
one signal at its time, and records the exit status, the
number of output lines, tracebacks and the first line on stderr. Prints a Markdown table
and the counts; exits 1 when a run did not exit 75 with exactly one `nrnp: stopped` line
on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def command() -> list[str]:
    """The installed `nrnp` beside this Python, else `python -m nrnp.main`."""
    script = os.path.join(os.path.dirname(sys.executable), 'nrnp')
    return [script] if os.path.exists(script) else [sys.executable, '-m', 'nrnp.main']


def one_run(args: list[str], after: float, signum: int, root: str) -> dict:
    """Starts the command, sends `signum` `after` seconds later; what came of it."""
    workdir = tempfile.mkdtemp(dir=root)
    start = time.time()
    proc = subprocess.Popen(
        [*command(), *args, f'--workdir={workdir}/w'],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(max(0.0, after - (time.time() - start)))
    sent = time.time()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=600)
    shutil.rmtree(workdir, ignore_errors=True)
    lines = [x for x in err.splitlines() if x.strip()]
    return {
        'after': after,
        'status': proc.returncode,
        'exit_seconds': time.time() - sent,
        'stdout_lines': len(out.splitlines()),
        'stderr_lines': len(lines),
        'tracebacks': (out + err).count('Traceback'),
        'first': lines[0] if lines else '',
    }


def good(run: dict) -> bool:
    """Exit 75, one `nrnp: stopped` line on stderr, no traceback."""
    one = run['stderr_lines'] == 1 and run['first'].startswith('nrnp: stopped')
    return run['status'] == 75 and one and not run['tracebacks']


def table(runs: list[dict]) -> str:
    rows = ['| after (s) | exit | to exit (s) | stdout lines | stderr lines | first stderr line |']
    rows.append('| --- | --- | --- | --- | --- | --- |')
    for r in runs:
        first = r['first'].replace('|', '\\|')
        rows.append(
            f'| {r["after"]:.2f} | {r["status"]} | {r["exit_seconds"]:.2f} | '
            f'{r["stdout_lines"]} | {r["stderr_lines"]} | `{first}` |'
        )
    return '\n'.join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--signal', default='TERM', choices=('TERM', 'INT'))
    parser.add_argument('--start', type=float, default=0.2)
    parser.add_argument('--stop', type=float, default=2.0)
    parser.add_argument('--runs', type=int, default=36)
    parser.add_argument('args', nargs='+', help='the nrnp arguments (after --)')
    options = parser.parse_args()
    signum = getattr(signal, f'SIG{options.signal}')
    span = (options.stop - options.start) / max(options.runs - 1, 1)
    times = [options.start + i * span for i in range(options.runs)]
    with tempfile.TemporaryDirectory(prefix='nrnp-sweep-') as root:
        runs = [one_run(options.args, t, signum, root) for t in times]
    print(table(runs))
    statuses = sorted({r['status'] for r in runs})
    counts = ', '.join(f'{sum(r["status"] == s for r in runs)} exit {s}' for s in statuses)
    bad = [r for r in runs if not good(r)]
    print(
        f'\n{len(runs)} runs, SIG{options.signal} {options.start}-{options.stop} s: {counts}; '
        f'{sum(r["tracebacks"] for r in runs)} tracebacks; {len(bad)} not exit 75 with one line; '
        f'slowest exit {max(r["exit_seconds"] for r in runs):.2f} s'
    )
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())

"""One run per workdir: a fingerprint of what a run computes, stored in `W/run.json`.

  fp = fingerprint(config, inputs={'teacher': 'sha256:..', 'data': '...'})
  claim(workdir, fp, overwrite=False, style='cli')   # new run, or resume, or WorkdirError

The fingerprint holds the resolved config (less the fields that cannot change a result:
logging, checkpoint and evaluation cadence, device count), the identity of the inputs
(the teacher checkpoint's sha256, the data source) and the nrnp version. The same
fingerprint resumes; a different one is refused before anything is written, naming the
fields that differ (unless the earlier start failed before writing any result).
`overwrite=True` deletes nrnp's own files of the old run (never anything else) and
starts again; the decoded-image cache and a trained teacher, which are keyed on their
own inputs, stay.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import ml_collections

from nrnp import errors, files
from nrnp.version import __version__

RUN_FILE = 'run.json'
# Fields that change how a run is watched or placed, not what it computes.
IGNORED = (
    'log_every',
    'checkpoint_every',
    'eval_every',
    'eval_init',
    'num_devices',
    'model_axis',
    'data.eval_batch_size',
    'data.streaming',
    'data.on_device',
    'data.loader',
    'data.workers',
)
# What nrnp writes into a workdir (overwrite deletes these and nothing else).
RUN_OUTPUTS = (
    RUN_FILE,
    'checkpoints',
    'compressed.nrnp',
    'report.json',
    'report.md',
    'report.png',
    'log.txt',
    'metrics.jsonl',
    'tensorboard',
)
# What makes a workdir worth protecting: a start that failed before any of these (a typo
# in a data path, say) leaves only run.json and log.txt, and the next start replaces them.
RESULTS = ('checkpoints', 'compressed.nrnp', 'report.json')


def _flat(config: ml_collections.ConfigDict, prefix: str = '') -> dict:
    out = {}
    for key, value in config.items():
        name = f'{prefix}{key}'
        if isinstance(value, ml_collections.ConfigDict):
            out.update(_flat(value, name + '.'))
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def fingerprint(config, inputs: dict) -> dict:
    """The identity of a run: config fields (less IGNORED), input identities, nrnp version."""
    fields = {k: v for k, v in _flat(config).items() if k not in IGNORED}
    return {'nrnp': __version__, 'config': fields, 'inputs': dict(inputs)}


def file_identity(path: str) -> str:
    """'sha256:<hex>' of a file, or of a directory's file names, sizes and contents."""
    path = os.path.expanduser(path)
    if os.path.isfile(path):
        return 'sha256:' + files.sha256_file(path)
    digest = hashlib.sha256()
    for root, dirs, names in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            digest.update(f'{os.path.relpath(full, path)}\0'.encode())
            digest.update(files.sha256_file(full).encode())
    return 'sha256-dir:' + digest.hexdigest()


def folder_identity(root: str) -> str:
    """A cheap identity of an image folder: every file's relative path and size."""
    digest, count = hashlib.sha256(), 0
    for base, dirs, names in sorted(os.walk(os.path.expanduser(root))):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(base, name)
            digest.update(f'{os.path.relpath(full, root)}\0{os.path.getsize(full)}\n'.encode())
            count += 1
    return f'{count} files, sha256 of names+sizes {digest.hexdigest()[:16]}'


def differences(old: dict, new: dict) -> list[str]:
    """'field: old -> new' for every entry that differs between two fingerprints."""
    out = []
    if old.get('nrnp') != new.get('nrnp'):
        out.append(f'nrnp version: {old.get("nrnp")} -> {new.get("nrnp")}')
    for part in ('config', 'inputs'):
        a, b = old.get(part, {}), new.get(part, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key, '<absent>') != b.get(key, '<absent>'):
                name = key if part == 'config' else f'input {key}'
                out.append(f'{name}: {a.get(key, "<absent>")!r} -> {b.get(key, "<absent>")!r}')
    return out


def _remove_outputs(workdir: str) -> None:
    for name in RUN_OUTPUTS:
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def claim(workdir: str, fp: dict, *, overwrite: bool = False, style: str = 'cli') -> str:
    """Makes `workdir` this run's: 'new' (fingerprint written) or 'resume' (it matches).

    Raises:
      errors.WorkdirError: the workdir holds another run, or nrnp files without a
        fingerprint (an older nrnp), and `overwrite` is False.
    """
    how = (
        'use a new --workdir, or add --overwrite to replace that run (rerunning the '
        'original command resumes it)'
        if style == 'cli'
        else 'pass another workdir=, or overwrite=True to replace that run (calling '
        'again with the original arguments resumes it)'
    )
    path = os.path.join(workdir, RUN_FILE)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise errors.WorkdirError(f'{workdir} is a file, not a directory; choose a directory')
    results = [n for n in RESULTS if os.path.exists(os.path.join(workdir, n))]
    if os.path.exists(path) and not results:
        os.remove(path)  # an earlier start that failed before any result: nothing to keep
    if os.path.exists(path):
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise errors.WorkdirError(f'{path} is unreadable ({e}); {how}') from None
        diff = differences(old, fp)
        if not diff:
            return 'resume'
        if not overwrite:
            shown = '\n  '.join(diff[:8]) + (
                f'\n  ... {len(diff) - 8} more' if len(diff) > 8 else ''
            )
            raise errors.WorkdirError(
                f'{workdir} holds another run ({len(diff)} difference(s) from this one):\n  '
                f'{shown}\n{how}'
            )
    elif os.path.isdir(workdir):
        leftovers = results
        if leftovers and not overwrite:
            raise errors.WorkdirError(
                f'{workdir} holds nrnp files ({", ".join(leftovers)}) but no {RUN_FILE}: a run '
                f'of an older nrnp or an unfinished start; {how}'
            )
    if overwrite:
        _remove_outputs(workdir)
    os.makedirs(workdir, exist_ok=True)
    files.atomic_write(path, json.dumps(fp, indent=1, sort_keys=True) + '\n')
    return 'new'

"""One run per workdir: an OS lock while a run owns it, and a fingerprint of what the run
computes, stored in `W/run.json`.

  locks.check_location(workdir, fix)  # before any work: can it be created and written?
  fp = fingerprint(config, inputs={'teacher': 'sha256:..', 'data': '...'})
  claim = claim(workdir, fp, overwrite=False, style='cli')  # locks; new run, resume, or refused
  claim.status                      # 'new', 'resume' or 'branch'; claim.release() at the end

`claim` first takes an exclusive `fcntl.flock` on `W/.lock` (which holds the owner's pid,
host and start time): a second run in the same workdir is refused at once, naming the
owner. The kernel drops the lock when its process ends, however it ends, so a killed run
never leaves a stale lock. Under the lock, temporary files an interrupted run left behind
(orbax `*.orbax-checkpoint-tmp*` directories, `cache/*.tmp`, `.*.tmp-<pid>`) are deleted
(by a single-process run: the processes of a multi-process run write there side by side).

The fingerprint holds the resolved config (less the fields that cannot change a result:
logging, checkpoint and evaluation cadence, device count), the identity of the inputs
(the teacher checkpoint's sha256, the data source) and the nrnp version; a local teacher
file or image folder counts by that identity, not by how its path is spelt (`BY_CONTENT`:
'../shared/x' and '/work/shared/x' are one run). The same fingerprint resumes; one that
differs only in fields later phases read (`BRANCHABLE`: the distillation and
re-estimation sections, `predictor.quantize_fraction`, `keep`) branches off the run held
there (the loop reuses the phases the two share, `training.loop`); any other difference
is refused before anything is written, naming the fields that differ (unless the earlier
start failed before writing any result: a checkpoint step, the artefact or the report).
`overwrite=True` deletes nrnp's own files of the old run (never anything else) and starts
again; the decoded-image cache and a trained teacher, which are keyed on their own
inputs, stay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil

import jax
import ml_collections

from nrnp import errors, files
from nrnp.pipeline.locks import WorkdirLock, location_fix
from nrnp.training import schedule
from nrnp.training.loop import PHASES_DIR
from nrnp.version import __version__

RUN_FILE = 'run.json'
# Sections and fields only later phases read (`training.schedule.READS`) or only the
# artefact's choice of phase: a run changing nothing else branches off the run held there.
BRANCHABLE = (*sorted({s for sections in schedule.READS.values() for s in sections}), 'keep')
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
    PHASES_DIR,
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
# `checkpoints` counts only when it holds a checkpoint step.
RESULTS = ('checkpoints', 'compressed.nrnp', 'report.json')
# Left behind by an interrupted write, per directory of the workdir ('' is the workdir).
STALE = {
    '': r'^\..+\.tmp-\d+$|\.orbax-checkpoint-tmp',
    'cache': r'\.tmp(-\d+)?$',
    'checkpoints': r'\.orbax-checkpoint-tmp',
    PHASES_DIR: r'\.orbax-checkpoint-tmp',
    'teacher_checkpoints': r'\.orbax-checkpoint-tmp',
}


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


def digest(fp: dict) -> str:
    """The sha256 of a fingerprint (a finished run's report names its run by it)."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()


def branchable(name: str) -> bool:
    """Whether a config field is one a later run in the same workdir may change."""
    return any(name == b or name.startswith(b + '.') for b in BRANCHABLE)


def _fixed(fp: dict) -> dict:
    """`fp` less the `BRANCHABLE` fields."""
    config = {k: v for k, v in fp.get('config', {}).items() if not branchable(k)}
    return {**fp, 'config': config}


def file_identity(path: str) -> str:
    """'sha256:<hex>' of a file, or of a directory's files (`files.checksums`: every file's
    relative path and sha256)."""
    path = os.path.expanduser(path)
    if os.path.isfile(path):
        return 'sha256:' + files.sha256_file(path)
    listing = json.dumps(files.checksums(path), sort_keys=True).encode()
    return 'sha256-dir:' + hashlib.sha256(listing).hexdigest()


def folder_identity(root: str) -> str:
    """A cheap identity of an image folder: every file's relative path and size."""
    digest, count = hashlib.sha256(), 0
    for base, dirs, names in sorted(os.walk(os.path.expanduser(root))):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(base, name)
            entry = f'{os.path.relpath(full, root)}\0{os.path.getsize(full)}\n'
            digest.update(entry.encode(**files.ENCODING))
            count += 1
    return f'{count} files, sha256 of names+sizes {digest.hexdigest()[:16]}'


# Path fields whose input entry identifies the content (`input_identities`: a file's
# sha256, an image folder's absolute path and listing): how the path is spelt
# ('../shared/x' or '/work/shared/x') does not change the run.
BY_CONTENT = {
    'teacher.checkpoint': ('teacher', 'sha256'),
    'data.image_folder': ('data', 'image folder '),
    'distill.teacher_checkpoint': ('distill_teacher', 'sha256'),
}


def differences(old: dict, new: dict) -> list[str]:
    """'field: old -> new' for every entry that differs between two fingerprints
    (`files.differences`, the one same-run rule); a `BY_CONTENT` path counts only
    through its input's identity."""
    out = files.differences({'nrnp version': old.get('nrnp')}, {'nrnp version': new.get('nrnp')})
    out += files.differences(_spelt_free(old), _spelt_free(new))
    return out + files.differences(old.get('inputs', {}), new.get('inputs', {}), 'input ')


def _spelt_free(fp: dict) -> dict:
    """`fp`'s config less the `BY_CONTENT` paths its inputs identify by content."""
    inputs = fp.get('inputs', {})

    def by_content(field: str) -> bool:
        entry, prefix = BY_CONTENT.get(field, ('', None))
        return prefix is not None and str(inputs.get(entry, '')).startswith(prefix)

    return {k: v for k, v in fp.get('config', {}).items() if not by_content(k)}


def _remove_outputs(workdir: str) -> None:
    for name in RUN_OUTPUTS:
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def _has_results(workdir: str) -> list[str]:
    """The RESULTS present in `workdir` (`checkpoints` only when it holds a step)."""
    found = []
    for name in RESULTS:
        path = os.path.join(workdir, name)
        if name == 'checkpoints':
            if checkpoint_steps(path):
                found.append(name)
        elif os.path.exists(path):
            found.append(name)
    return found


def checkpoint_steps(directory: str) -> list[int]:
    """The committed checkpoint steps in `directory` (its all-digit entries), ascending."""
    try:
        return sorted(int(n) for n in os.listdir(directory) if n.isdigit())
    except OSError:
        return []


@dataclasses.dataclass
class Claim:
    """What `claim` returns.

    Attributes:
      status: 'new' (fingerprint written), 'resume' (it matches) or 'branch' (it differs
        only in `BRANCHABLE` fields: the new one written, the loop reuses what it can).
      changed: the differences of a 'branch' ('field: old -> new').
      lock: the workdir's lock (None when not taken: processes other than 0).
      removed: the stale temporary files and directories deleted under the lock.
    """

    status: str
    lock: WorkdirLock | None
    removed: list[str]
    changed: list[str] = dataclasses.field(default_factory=list)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def claim(
    workdir: str,
    fp: dict,
    *,
    overwrite: bool = False,
    style: str = 'cli',
    lock: bool | None = None,
    clean: bool | None = None,
) -> Claim:
    """Makes `workdir` this run's: locked, then 'new' (fingerprint written) or 'resume'.

    Args:
      workdir: the run directory (created when missing).
      fp: this run's `fingerprint`.
      overwrite: replace another run held there.
      style: 'cli' or 'library': how messages name the fixes.
      lock: take the workdir lock; None: on process 0 only (the P processes of one run
        share the workdir).
      clean: delete the stale temporary files under the lock; None: only in a one-process
        run (with several, another process's temporary files, its `run.json` or cache,
        may be in flight).

    Raises:
      errors.WorkdirError: another run holds the lock; or the workdir holds another run,
        or nrnp files without a fingerprint (an older nrnp), and `overwrite` is False.
      errors.StorageError: the workdir cannot be created or written.
    """
    how = (
        'use a new --workdir, or add --overwrite to replace that run (rerunning the '
        'original command resumes it)'
        if style == 'cli'
        else 'pass another workdir=, or overwrite=True to replace that run (calling '
        'again with the original arguments resumes it)'
    )
    lock = jax.process_index() == 0 if lock is None else lock
    clean = jax.process_count() == 1 if clean is None else clean
    fix = location_fix(style)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise errors.StorageError(f'the workdir {workdir} is a file, not a directory; {fix}')
    with errors.writing(workdir, 'the workdir', fix):
        os.makedirs(workdir, exist_ok=True)
        held = WorkdirLock(workdir, style) if lock else None
    try:
        status, changed = _claim_locked(workdir, fp, overwrite, how, fix)
        removed = _remove_stale(workdir) if lock and clean else []
    except BaseException:
        if held is not None:
            held.release()
        raise
    return Claim(status, held, removed, changed)


def _remove_stale(workdir: str) -> list[str]:
    removed = []
    for sub, pattern in STALE.items():
        directory = os.path.join(workdir, sub) if sub else workdir
        removed += [os.path.join(sub, n) for n in files.remove_stale(directory, pattern)]
    return removed


def _claim_locked(workdir: str, fp: dict, overwrite: bool, how: str, fix: str):
    path = os.path.join(workdir, RUN_FILE)
    results = _has_results(workdir)
    if os.path.exists(path) and not results:  # an earlier start failed before any result
        with contextlib.suppress(FileNotFoundError):  # (another process of this run did it)
            os.remove(path)
    status = 'new'
    if os.path.exists(path):
        try:
            with open(path, **files.ENCODING) as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise errors.WorkdirError(f'{path} is unreadable ({e}); {how}') from None
        diff = differences(old, fp)
        if not diff:
            return 'resume', []
        if not overwrite and not differences(_fixed(old), _fixed(fp)):
            status = 'branch'
        elif not overwrite:
            shown = '\n  '.join(diff[:8]) + (
                f'\n  ... {len(diff) - 8} more' if len(diff) > 8 else ''
            )
            raise errors.WorkdirError(
                f'{workdir} holds another run ({len(diff)} difference(s) from this one):\n  '
                f'{shown}\n{how}'
            )
    elif results and not overwrite:
        raise errors.WorkdirError(
            f'{workdir} holds nrnp files ({", ".join(results)}) but no {RUN_FILE}: a run '
            f'of an older nrnp or an unfinished start; {how}'
        )
    with errors.writing(path, 'the run fingerprint', fix):
        if overwrite:
            _remove_outputs(workdir)
        files.atomic_write(path, json.dumps(fp, indent=1, sort_keys=True) + '\n')
    return status, diff if status == 'branch' else []

"""Run checkpoints: predictor state, round targets and position, with orbax, checksummed.

  ckpt = RunCheckpointer(os.path.join(workdir, 'checkpoints'), log=print)
  ckpt.save(step, {'state': state, 'round_target': rows}, meta)   # atomic (tmp dir + rename)
  restored, meta = ckpt.restore_latest(like={'state': state, 'round_target': rows})
  restored, meta = ckpt.restore_latest(like=lambda meta: template_for(meta))

Each saved step gets `<step>/nrnp_checksums.json`: the sha256 of every file orbax wrote,
written atomically once the step is complete. Restoring verifies it first; a checkpoint
that fails verification (one without that file included) or cannot be read is set aside
(renamed `<step>.corrupt-<time>`, never deleted) with a one-line warning, and the next
newest is tried; when none is left the run starts over. A verified checkpoint that does
not fit `like` is another config's, and refused. A full or read-only disk while saving
raises `errors.StorageError` (the half-written step is removed; the older checkpoints
stay).

The frozen teacher, the original weights and the encodings are never saved: they
are rebuilt from the config, deterministically, on resume.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import jax
import orbax.checkpoint as ocp

from nrnp import errors, files


class RunCheckpointer:
    """A thin `ocp.CheckpointManager` for one run directory, with verified restores.

    Args:
      directory: where the steps go (created).
      max_to_keep: how many steps orbax keeps (None: all; the phase boundaries).
      log: sink of the one-line warnings about checkpoints set aside.
    """

    def __init__(self, directory: str, max_to_keep: int | None = 2, log: Callable = print):
        self.directory = os.path.abspath(directory)
        self.log = log
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
        )
        with errors.writing(self.directory, 'the checkpoint directory'):
            self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._bad: set[int] = set()  # set aside here (another process renames them)

    def latest_step(self) -> int | None:
        """The newest step not set aside (unverified: `restore_latest` checks it)."""
        steps = [s for s in self.manager.all_steps() if s not in self._bad]
        return max(steps, default=None)

    def latest_meta(self) -> dict | None:
        """The JSON `meta` of the newest readable checkpoint (arrays not read), or None."""
        while (step := self._verified_latest()) is not None:
            try:
                return self._read_meta(step)
            except Exception as e:  # noqa: BLE001 (any failure to read: set it aside)
                self._set_aside(step, f'its metadata cannot be read ({_brief(e)})')
        return None

    def save(self, step: int, arrays: dict, meta: dict) -> None:
        """Saves `arrays` (a pytree of arrays) and `meta` (JSON) as checkpoint `step`.

        An existing checkpoint of the same step is replaced (the older ones stay).

        Raises:
          errors.StorageError: the disk is full or read-only; nothing of `step` is left.
        """
        where = os.path.join(self.directory, str(step))
        fix = (
            'free some space (or choose another --workdir), then rerun the same command: it '
            'resumes from the last complete checkpoint'
        )
        try:
            if step in self.manager.all_steps():
                self.manager.delete(step)
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
            self.manager.wait_until_finished()
            if jax.process_index() == 0:
                files.seal(where)
        except Exception as e:
            error = errors.storage_error(e, where, 'checkpoint', fix)
            if error is None:
                raise
            files.remove_stale(self.directory, rf'^{step}\.orbax-checkpoint-tmp')
            raise error from e
        self._bad.discard(step)

    def restore_latest(self, like: dict | Callable[[dict], dict]) -> tuple[dict, dict] | None:
        """(arrays, meta) of the newest good checkpoint, or None when there is none.

        Checkpoints that fail verification or cannot be read are set aside, newest first.

        Args:
          like: a pytree with the structure, shapes and dtypes to restore into, or a
            function from the checkpoint's meta to that pytree (when the shapes depend
            on where the run stopped); it may raise ValueError to refuse the checkpoint.

        Raises:
          ValueError: a verified checkpoint does not match `like` (another config).
        """
        while (step := self._verified_latest()) is not None:
            restored = self._restore_step(step, like)
            if restored is not None:
                return restored
        return None

    def restore(self, step: int, like) -> tuple[dict, dict] | None:
        """(arrays, meta) of checkpoint `step` (as `restore_latest`), or None when it is
        missing or damaged (then set aside)."""
        if step not in self.manager.all_steps() or step in self._bad:
            return None
        problem = files.verify(os.path.join(self.directory, str(step)))
        if problem:
            self._set_aside(step, problem)
            return None
        return self._restore_step(step, like)

    def meta(self, step: int) -> dict | None:
        """The JSON `meta` of checkpoint `step` (verified; arrays not read), or None."""
        where = os.path.join(self.directory, str(step))
        if step in self._bad or files.verify(where):
            return None
        try:
            return self._read_meta(step)
        except Exception:  # noqa: BLE001 (unreadable: not usable)
            return None

    def steps(self) -> list[int]:
        """The saved steps not set aside, ascending."""
        return sorted(s for s in self.manager.all_steps() if s not in self._bad)

    def clear(self) -> None:
        """Deletes every checkpoint (another run's, when a run branches off it)."""
        for step in self.manager.all_steps():
            self.manager.delete(step)

    def _restore_step(self, step: int, like) -> tuple[dict, dict] | None:
        try:
            meta = self._read_meta(step)
        except Exception as e:  # noqa: BLE001
            self._set_aside(step, f'its metadata cannot be read ({_brief(e)})')
            return None
        try:
            target = like(meta) if callable(like) else like
        except ValueError:
            raise  # a refusal: another run's checkpoint
        except Exception as e:  # noqa: BLE001 (a damaged meta)
            self._set_aside(step, f'its metadata does not describe a run ({_brief(e)})')
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        args = ocp.args.Composite(
            arrays=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        )
        try:
            restored = self.manager.restore(step, args=args)
        except Exception as e:  # noqa: BLE001
            if isinstance(e, ValueError | KeyError | TypeError):  # verified: intact
                raise ValueError(
                    f'the checkpoint {self.directory}/{step} is intact but does not match '
                    f'this run (another config?): {_brief(e)}. Use a new --workdir.'
                ) from e
            self._set_aside(step, f'it cannot be restored ({_brief(e)})')
            return None
        return restored['arrays'], restored['meta']

    def close(self):
        self.manager.close()

    def _read_meta(self, step: int) -> dict:
        args = ocp.args.Composite(meta=ocp.args.JsonRestore())
        meta = self.manager.restore(step, args=args)['meta']
        if not isinstance(meta, dict):
            raise ValueError(f'meta is {type(meta).__name__}, not a dict')
        return meta

    def _verified_latest(self) -> int | None:
        """The newest step whose checksums match, setting aside the newer ones."""
        while (step := self.latest_step()) is not None:
            problem = files.verify(os.path.join(self.directory, str(step)))
            if not problem:
                return step
            self._set_aside(step, problem)
        return None

    def _set_aside(self, step: int, problem: str) -> None:
        """Renames checkpoint `step` to `<step>.corrupt-<time>` (process 0) and warns."""
        self._bad.add(step)
        source = os.path.join(self.directory, str(step))
        aside = f'{source}.corrupt-{time.strftime("%Y%m%d-%H%M%S")}'
        if jax.process_index() == 0 and os.path.isdir(source):
            try:
                os.replace(source, aside)
            except OSError:
                aside = f'{source} (could not be renamed; skipped)'
        older = [s for s in self.manager.all_steps() if s not in self._bad and s < step]
        then = f'trying checkpoint {max(older)}' if older else 'no older checkpoint: starting over'
        self.log(f'warning: checkpoint {step} is damaged ({problem}): set aside as {aside}; {then}')
        self.manager.reload()


def _brief(e: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, cut to `limit` characters."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= limit else text[:limit] + '...'

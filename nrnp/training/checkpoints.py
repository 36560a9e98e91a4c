"""Run checkpoints: predictor state, round targets and position, with orbax.

  ckpt = RunCheckpointer(os.path.join(workdir, 'checkpoints'))
  ckpt.save(step, {'state': state, 'round_target': rows}, meta)   # atomic (tmp dir + rename)
  restored, meta = ckpt.restore_latest(like={'state': state, 'round_target': rows})
  restored, meta = ckpt.restore_latest(like=lambda meta: template_for(meta))

The frozen teacher, the original weights and the encodings are never saved: they
are rebuilt from the config, deterministically, on resume.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import orbax.checkpoint as ocp


class RunCheckpointer:
    """A thin `ocp.CheckpointManager` for one run directory."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def latest_meta(self) -> dict | None:
        """The JSON `meta` of the newest checkpoint (its arrays are not read), or None."""
        step = self.manager.latest_step()
        if step is None:
            return None
        args = ocp.args.Composite(meta=ocp.args.JsonRestore())
        return self.manager.restore(step, args=args)['meta']

    def save(self, step: int, arrays: dict, meta: dict) -> None:
        """Saves `arrays` (a pytree of arrays) and `meta` (JSON) as checkpoint `step`.

        An existing checkpoint of the same step is replaced (the older ones stay).
        """
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

    def restore_latest(self, like: dict | Callable[[dict], dict]) -> tuple[dict, dict] | None:
        """(arrays, meta) of the newest checkpoint, or None when there is none.

        Args:
          like: a pytree with the structure, shapes and dtypes to restore into, or a
            function from the checkpoint's meta to that pytree (when the shapes depend
            on where the run stopped); it may raise ValueError to refuse the checkpoint.

        Raises:
          ValueError: when the checkpoint does not match `like` (another config).
        """
        step = self.manager.latest_step()
        if step is None:
            return None
        if callable(like):
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
                'meta'
            ]
            like = like(meta)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    arrays=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f'the checkpoint {self.directory}/{step} does not match this run '
                f'(another config?): {e}. Use a new --workdir or delete the checkpoints.'
            ) from e
        return restored['arrays'], restored['meta']

    def close(self):
        self.manager.close()

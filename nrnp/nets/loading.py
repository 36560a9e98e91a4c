"""Getting a target's variables: from a state dict file or an orbax directory, and saving them.

variables = load_target('resnet20-12fca82f.th', model, (1, 32, 32, 3))   # or .npz / orbax dir
save_variables('/tmp/target', variables); variables = load_variables('/tmp/target')
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from nrnp.errors import CheckpointError
from nrnp.nets import models, state_dicts


def save_variables(path: str | os.PathLike, variables: dict) -> None:
    """Saves variables as an orbax checkpoint (written to a tmp dir, then renamed).

    Args:
      path: the checkpoint directory; must not exist yet.
      variables: any pytree of arrays, normally ``{'params', 'batch_stats'}``.
    """
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.abspath(path), variables)


def load_variables(path: str | os.PathLike, template: dict | None = None) -> dict:
    """Restores variables saved by ``save_variables``.

    Args:
      path: the checkpoint directory.
      template: optional pytree (concrete or ``jax.eval_shape``) fixing structure,
        shapes and dtypes; a mismatch raises.

    Returns:
      The restored variables.

    Raises:
      CheckpointError: missing directory or a checkpoint that does not fit ``template``.
    """
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f'{path}: no such checkpoint directory')
    with ocp.StandardCheckpointer() as checkpointer:
        try:
            return checkpointer.restore(path, template)
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise CheckpointError(f'{path}: cannot restore variables ({e})') from e


def load_target(path: str | os.PathLike, model, input_shape: tuple[int, ...]) -> dict:
    """Loads a target network's variables from a torch/npz file or an orbax directory.

    Args:
      path: ``.npz``/``.th``/``.pt``/``.pth`` file, or a ``save_variables`` directory.
      model: the Linen module the variables belong to.
      input_shape: NHWC input shape used to build the template, e.g. ``(1, 32, 32, 3)``.

    Returns:
      ``{'params', 'batch_stats'}`` for ``model``.

    Raises:
      CheckpointError: missing path, unreadable file or mismatching variables.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f'{path}: no such checkpoint')
    template = jax.eval_shape(lambda: models.init_variables(model, input_shape))
    if os.path.isdir(path):
        return load_variables(path, template)
    return state_dicts.state_dict_to_variables(state_dicts.read_state_dict(path), template)

"""Getting a target's variables: from a local file or directory, a URL or a registry name.

variables = load_target('resnet20-12fca82f.th', model, (1, 32, 32, 3))   # or .npz / orbax dir
variables = load_target('cifar100_resnet56', model, (1, 32, 32, 3))       # registry name
save_variables('/tmp/target', variables); variables = load_variables('/tmp/target')

URLs and registry names are resolved to a local file by `checkpoint_files` (downloaded
once, checked against a sha256).
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from nrnp import files
from nrnp.errors import CheckpointError, NonFiniteError
from nrnp.nets import models, state_dicts
from nrnp.nets.checkpoint_files import CheckpointSource, resolve_checkpoint


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


def _check_finite(variables: dict, where: str) -> None:
    for path, leaf in jax.tree.flatten_with_path(variables)[0]:
        leaf = np.asarray(leaf)
        if np.issubdtype(leaf.dtype, np.floating) and not np.isfinite(leaf).all():
            name = jax.tree_util.keystr(path, simple=True, separator='/')
            raise NonFiniteError(
                f'{where}: {name} holds {int((~np.isfinite(leaf)).sum())} NaN or infinite '
                f'values of {leaf.size}'
            )


def load_target(
    path: str | os.PathLike | CheckpointSource,
    model,
    input_shape: tuple[int, ...],
    *,
    sha256: str = '',
    download: bool = True,
    log=print,
    flags=None,
) -> dict:
    """Loads a target network's variables from a file, an orbax dir, a URL or a registry name.

    Args:
      path: ``.npz``/``.th``/``.pt``/``.pth`` file, a ``save_variables`` directory, an
        http(s) URL or a registry name (see ``resolve_checkpoint``), or its result.
      model: the Linen module the variables belong to.
      input_shape: NHWC input shape used to build the template, e.g. ``(1, 32, 32, 3)``.
      sha256, download, log: for a URL or registry name (``resolve_checkpoint``).
      flags: the config fields a mismatch hint names (``layouts.TEACHER_FLAGS``, the
        default, or ``layouts.DISTILL_TEACHER_FLAGS``).

    Returns:
      ``{'params', 'batch_stats'}`` for ``model``.

    Raises:
      CheckpointError: missing path, unreadable file, a directory whose files do not match
        its `files.CHECKSUMS` (when it has them: a cached teacher), or mismatching
        variables (with the architecture the checkpoint looks like and the flags to set).
      NonFiniteError: a NaN or infinite value, naming the leaf.
      DownloadError: a URL or registry checkpoint that cannot be fetched.
    """
    source = path
    if not isinstance(source, CheckpointSource):
        source = resolve_checkpoint(path, sha256=sha256, download=download, log=log)
    where = source.spec if source.path == source.spec else f'{source.spec} ({source.path})'
    template = jax.eval_shape(lambda: models.init_variables(model, input_shape))
    if os.path.isdir(source.path):
        sealed = os.path.exists(os.path.join(source.path, files.CHECKSUMS))
        if sealed and (problem := files.verify(source.path)):  # e.g. an earlier run's W/teacher
            raise CheckpointError(f'{where} is damaged: {problem}; use an intact copy')
        variables = load_variables(source.path, template)
        _check_finite(variables, where)
        return variables
    state_dict = state_dicts.read_state_dict(source.path)
    layout = source.entry.layout if source.entry else 'auto'
    try:
        return state_dicts.state_dict_to_variables(state_dict, template, layout=layout, flags=flags)
    except (CheckpointError, NonFiniteError) as e:
        raise type(e)(f'{where}: {e}') from e

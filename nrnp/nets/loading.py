"""Getting a target's variables: from a local file or directory, a URL or a registry name.

variables = load_target('resnet20-12fca82f.th', model, (1, 32, 32, 3))   # or .npz / orbax dir
variables = load_target('cifar100_resnet56', model, (1, 32, 32, 3))       # registry name
source = resolve_checkpoint('https://host/net-1a2b3c4d.pt#sha256=<hex>')  # downloaded, checked
save_variables('/tmp/target', variables); variables = load_variables('/tmp/target')

URLs and registry entries are downloaded once into `nrnp.files.cache_dir()/checkpoints`
(`data.downloads.fetch`: resumable, atomic) and checked against a sha256: the caller's
(`teacher.checkpoint_sha256`), the URL fragment `#sha256=<hex>`, or the torch-hub prefix
in the file name (`name-<8+ hex digits>.pt`) or registry entry.
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse

import jax
import numpy as np
import orbax.checkpoint as ocp

from nrnp import files
from nrnp.data import downloads
from nrnp.errors import CheckpointError, NonFiniteError
from nrnp.nets import models, registry, state_dicts


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


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """Where a `teacher.checkpoint` value led.

    Attributes:
      spec: the value as given (path, URL or registry name).
      path: the local file or orbax directory.
      url: where it was downloaded from ('' for a local path).
      sha256: its full hex sha256 when it was downloaded ('' otherwise).
      entry: the registry entry, for a registry name.
    """

    spec: str
    path: str
    url: str = ''
    sha256: str = ''
    entry: registry.Entry | None = None

    def describe(self) -> str:
        """The spec for a local path; else what it is, where from, its sha256 and file."""
        if not self.url:
            return self.spec
        what = self.entry.describe() if self.entry else self.url
        where = f', {self.url}' if self.entry else ''
        return f'{what}{where}, sha256 {self.sha256}, in {self.path}'


def _hash_in_name(filename: str) -> str | None:
    """torch hub's convention: `resnet20-12fca82f.th` -> '12fca82f' (8+ hex digits)."""
    match = re.search(r'-([0-9a-f]{8,64})\.[^.]+$', filename)
    return match.group(1) if match else None


def resolve_checkpoint(
    spec: str | os.PathLike, *, sha256: str = '', download: bool = True, log=print
) -> CheckpointSource:
    """A local path for a checkpoint given as a path, an https:// URL or a registry name.

    Args:
      spec: a `.th/.pt/.pth/.npz` file or orbax directory; an http(s) URL, optionally
        with `#sha256=<hex>`; or a `nets.registry` name.
      sha256: the expected full sha256 (wins over the fragment and file-name prefix).
      download: False never touches the network (a file not yet cached raises).
      log: download progress sink.

    Raises:
      CheckpointError: not a path, URL or registry name.
      DownloadError: not downloadable (offline, download=False) or a checksum mismatch.
    """
    spec = os.fspath(spec)
    if os.path.exists(os.path.expanduser(spec)):
        return CheckpointSource(spec, os.path.expanduser(spec))
    entry = registry.ENTRIES.get(spec)
    if entry is None and not re.match(r'https?://', spec):
        raise CheckpointError(
            f'{spec}: no such checkpoint file or directory, and neither an http(s) URL nor a '
            f'registered name (known: {", ".join(registry.names())})'
        )
    url, fragment = urllib.parse.urldefrag(entry.url if entry else spec)
    filename = urllib.parse.unquote(os.path.basename(urllib.parse.urlsplit(url).path))
    if not filename:
        raise CheckpointError(f'{url}: the URL names no file')
    in_fragment = re.fullmatch(r'sha256=([0-9a-fA-F]{64})', fragment)
    sha256 = sha256 or (in_fragment.group(1) if in_fragment else '')
    prefix = None if sha256 else (entry.sha256_prefix if entry else _hash_in_name(filename))
    path = downloads.fetch(
        url,
        os.path.join(files.cache_dir(), 'checkpoints', filename),
        sha256=sha256 or None,
        sha256_prefix=prefix,
        download=download,
        log=log,
        hint='or set --config.teacher.checkpoint=PATH to a local copy',
    )
    digest = downloads.file_digest(path)
    return CheckpointSource(spec, path, url, digest, entry)


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
      CheckpointError: missing path, unreadable file or mismatching variables (with the
        architecture the checkpoint looks like and the flags to set).
      NonFiniteError: a NaN or infinite value, naming the leaf.
      DownloadError: a URL or registry checkpoint that cannot be fetched.
    """
    source = path
    if not isinstance(source, CheckpointSource):
        source = resolve_checkpoint(path, sha256=sha256, download=download, log=log)
    where = source.spec if source.path == source.spec else f'{source.spec} ({source.path})'
    template = jax.eval_shape(lambda: models.init_variables(model, input_shape))
    if os.path.isdir(source.path):
        variables = load_variables(source.path, template)
        _check_finite(variables, where)
        return variables
    state_dict = state_dicts.read_state_dict(source.path)
    layout = source.entry.layout if source.entry else 'auto'
    try:
        return state_dicts.state_dict_to_variables(state_dict, template, layout=layout, flags=flags)
    except (CheckpointError, NonFiniteError) as e:
        raise type(e)(f'{where}: {e}') from e

"""Reading `.nrnp` files back: `load(path) -> Compressed`, with every part checked.

  compressed = load('r20.nrnp')      # nrnp.load
  variables = compressed.reconstruct()

Nothing is unpickled (`np.load(allow_pickle=False)`); a missing, truncated, foreign or
wrong-version file raises `ArtifactError` naming the file and the problem.
"""

from __future__ import annotations

import json
import os
import zipfile

import jax.numpy as jnp
import numpy as np

from nrnp.artifact.compressed import (
    _HEADER_KEYS,
    FORMAT,
    VERSION,
    Compressed,
    LeafSpec,
    _from_storable,
)
from nrnp.core import kernels
from nrnp.errors import ArtifactError
from nrnp.nets.trees import unflatten


def load(path: str | os.PathLike) -> Compressed:
    """Reads a `.nrnp` file written by `Compressed.save`.

    Raises:
      ArtifactError: naming the path and the problem, for a missing, truncated,
        foreign (plain npz, pickle, random bytes) or wrong-version file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        inside = os.path.join(path, 'compressed.nrnp')
        hint = f'; did you mean {inside}?' if os.path.isfile(inside) else ''
        raise ArtifactError(f'{path} is a directory; an nrnp artefact is one file{hint}')
    if not os.path.isfile(path):
        raise ArtifactError(f'{path}: no such file')
    with open(path, 'rb') as f:
        magic = f.read(8)
    if not magic.startswith(b'PK'):  # every .nrnp is a zip (.npz); say what it is instead
        known = {b'\x89HDF': 'an HDF5 file', b'\x93NUMPY': 'a single .npy array'}
        kind = next((v for k, v in known.items() if magic.startswith(k)), None)
        kind = kind or ('a pickle' if magic[:1] == b'\x80' else f'starts with {magic!r}')
        raise ArtifactError(f'{path}: not an nrnp artefact ({kind}; .nrnp files are zip archives)')
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ArtifactError(f'{path}: not an nrnp artefact (a single .npy array)')
        with archive:
            files = set(archive.files)
            if 'header' not in files:
                raise ArtifactError(f'{path}: not an nrnp artefact (an .npz without a header)')
            header = json.loads(bytes(archive['header'].astype(np.uint8)).decode())
            _check_header(path, header)
            members = {k: archive[k] for k in files if k != 'header'}
            return _from_members(path, header, members)
    except ArtifactError:
        raise
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise ArtifactError(
            f'{path}: not a readable nrnp artefact ({type(e).__name__}: {e})'
        ) from e


def _check_header(path: str, header) -> None:
    if not isinstance(header, dict) or header.get('format') != FORMAT:
        got = header.get('format') if isinstance(header, dict) else type(header).__name__
        raise ArtifactError(f'{path}: not an nrnp artefact (format {got!r}, expected {FORMAT!r})')
    if header.get('version') != VERSION:
        raise ArtifactError(
            f'{path}: artefact version {header.get("version")!r} is not supported '
            f'(this nrnp reads version {VERSION}; use the nrnp that wrote it)'
        )
    missing = [k for k in _HEADER_KEYS if k not in header]
    if missing:
        raise ArtifactError(f'{path}: header lacks {", ".join(missing)}')


def _member(path, members, key, shape, dtype):
    if key not in members:
        raise ArtifactError(f'{path}: missing array {key!r}')
    value = _from_storable(members[key], dtype) if dtype else members[key]
    if tuple(value.shape) != tuple(shape) or (dtype and value.dtype != jnp.dtype(dtype)):
        raise ArtifactError(
            f'{path}: array {key!r} is {value.dtype}{list(value.shape)}, expected {dtype}{shape}'
        )
    return value


def _from_members(path: str, header: dict, members: dict) -> Compressed:
    try:
        leaves = [
            LeafSpec(tuple(x['path']), tuple(x['shape']), x['dtype'], bool(x['represented']))
            for x in header['leaves']
        ]
        layers = tuple(
            kernels.LayerSpec(
                tuple(x['path']), tuple(x['shape']), x['dtype'], x['offset'], x['tiles'], x['rank']
            )
            for x in header['layout']
        )
    except (KeyError, TypeError) as e:
        raise ArtifactError(f'{path}: malformed leaves/layout in the header ({e!r})') from e
    layout = kernels.KernelLayout(layers)
    represented = {leaf.path[1:] for leaf in leaves if leaf.represented}
    if represented != {layer.path for layer in layers} or not layers:
        raise ArtifactError(f'{path}: represented leaves do not match the layout')
    copied = {
        leaf.path: _member(path, members, f'copied/{i}', leaf.shape, leaf.dtype)
        for i, leaf in enumerate(leaves)
        if not leaf.represented
    }
    pleaves = {
        tuple(x['path']): _member(path, members, f'predictor/{i}', x['shape'], x['dtype'])
        for i, x in enumerate(header['predictor_leaves'])
    }
    positions = []
    if header['ordering'] != 'none':
        for i, layer in enumerate(layers):
            n = layer.filters * layer.channels
            value = _member(path, members, f'ordering/{i}', (n,), None)
            if not np.array_equal(np.sort(value), np.arange(n)):
                raise ArtifactError(f'{path}: ordering/{i} is not a permutation of 0..{n - 1}')
            positions.append(value)
    return Compressed(
        leaves=leaves,
        copied=copied,
        layout=layout,
        ordering=header['ordering'],
        positions=positions,
        encoding=header['encoding'],
        predictor_settings=header['predictor'],
        predictor_params=unflatten(pleaves),
        bare=bool(header['bare']),
        frozen=bool(header.get('frozen', False)),  # absent in files of nrnp <= 0.1.0
        config=header['config'],
        history=header['history'],
        metrics=header['metrics'],
    )

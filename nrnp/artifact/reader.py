"""Reading `.nrnp` files back: `load(path) -> Compressed`, with every part checked.

  compressed = load('r20.nrnp')      # nrnp.load
  variables = compressed.reconstruct()

Reads format versions 1 (one member per array), 2 (compressed header, one blob per
part, `storage`), 3 (version 2 with grouped 1x1 rows in the layout) and 4 (int
predictors with group scales, entropy-coded; float16 leaves). Nothing is
unpickled (`np.load(allow_pickle=False)`); a missing, truncated, foreign or wrong-version
file raises `ArtifactError` naming the file and the problem.
"""

from __future__ import annotations

import os
import zipfile

import jax.numpy as jnp
import numpy as np

from nrnp.artifact import storage
from nrnp.artifact.compressed import (
    _HEADER_KEYS,
    FORMAT,
    READABLE_VERSIONS,
    VERSION,
    Compressed,
    LeafSpec,
)
from nrnp.artifact.provenance import full_config
from nrnp.core import coordinates, kernel_rows, quantize
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
            header = storage.decode_header(archive['header'])
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
    if header.get('version') not in READABLE_VERSIONS:
        readable = ' and '.join(map(str, READABLE_VERSIONS))
        raise ArtifactError(
            f'{path}: artefact version {header.get("version")!r} is not supported '
            f'(this nrnp reads versions {readable} and writes {VERSION}; use the nrnp that '
            'wrote it)'
        )
    keys = [k for k in _HEADER_KEYS if k != 'config' or 'config_changes' not in header]
    missing = [k for k in keys if k not in header]
    if missing:
        raise ArtifactError(f'{path}: header lacks {", ".join(missing)}')


def _config(header: dict) -> dict:
    """The run's config: stored whole (versions 1-3) or as its changes from nrnp's defaults."""
    if 'config_changes' in header:
        return full_config(header['config_changes'])
    return header['config']


def _from_storable(x: np.ndarray, dtype: str) -> np.ndarray:
    """Version 1 stored bfloat16 (and other non-numpy dtypes) as same-width unsigned ints."""
    target = jnp.dtype(dtype)
    return x if x.dtype == target else x.view(target)


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
            LeafSpec(
                tuple(x['path']),
                tuple(x['shape']),
                x['dtype'],
                bool(x['represented']),
                x.get('stored', ''),  # version 4: the dtype a copied leaf is stored at
            )
            for x in header['leaves']
        ]
        layers = tuple(
            kernel_rows.LayerSpec(
                tuple(x['path']),
                tuple(x['shape']),
                x['dtype'],
                x['offset'],
                x['tiles'],
                x['rank'],
                int(x.get('group', 1)),  # absent before the grouped 1x1 rows (version <= 2)
                bool(x.get('depthwise', False)),
            )
            for x in header['layout']
        )
    except (KeyError, TypeError) as e:
        raise ArtifactError(f'{path}: malformed leaves/layout in the header ({e!r})') from e
    for layer in layers:
        if layer.group not in (1, kernel_rows.GROUP) or (
            layer.group > 1 and layer.kernel_size != 1
        ):
            raise ArtifactError(f'{path}: layer {layer.name} has rows of {layer.group} channels')
    layout = kernel_rows.KernelLayout(layers)
    represented = {leaf.path[1:] for leaf in leaves if leaf.represented}
    if represented != {layer.path for layer in layers} or not layers:
        raise ArtifactError(f'{path}: represented leaves do not match the layout')
    read = _parts_v1 if header['version'] == 1 else _parts_v2
    copied, stored, positions = read(path, header, members, leaves, layers)
    settings = dict(header['predictor'])
    settings.setdefault('quantize', 'none')  # absent in version 1 files
    return Compressed(
        leaves=leaves,
        copied=copied,
        layout=layout,
        ordering=header['ordering'],
        positions=positions,
        encoding=header['encoding'],
        predictor_settings=settings,
        predictor_params=unflatten({p: quantize.dequantize_leaf(s) for p, s in stored.items()}),
        bare=bool(header['bare']),
        frozen=bool(header.get('frozen', False)),  # absent in files of nrnp <= 0.1.0
        config=_config(header),
        history=header['history'],
        metrics=header['metrics'],
        predictor_storage=stored,
    )


def _parts_v1(path, header, members, leaves, layers):
    """Version 1: `copied/<i>`, `predictor/<i>` (float32) and `ordering/<l>` index arrays."""
    copied = {
        leaf.path: _member(path, members, f'copied/{i}', leaf.shape, leaf.dtype)
        for i, leaf in enumerate(leaves)
        if not leaf.represented
    }
    stored = {}
    for i, x in enumerate(header['predictor_leaves']):
        value = _member(path, members, f'predictor/{i}', x['shape'], x['dtype'])
        stored[tuple(x['path'])] = quantize.quantize_leaf(value, quantize.NONE)
    positions = []
    if header['ordering'] != 'none':
        for i, layer in enumerate(layers):
            n = layer.kernel_slots
            value = _member(path, members, f'ordering/{i}', (n,), None)
            if not np.array_equal(np.sort(value), np.arange(n)):
                raise ArtifactError(f'{path}: ordering/{i} is not a permutation of 0..{n - 1}')
            positions.append(value)
    return copied, stored, positions


def _parts_v2(path, header, members, leaves, layers):
    """Versions 2 to 4: the `predictor`, `ordering` and `copied` blobs (`storage`)."""
    wanted = ['predictor', 'copied'] + (['ordering'] if header['ordering'] != 'none' else [])
    for key in wanted:
        if key not in members:
            raise ArtifactError(f'{path}: missing array {key!r}')
        if members[key].dtype != np.uint8 or members[key].ndim != 1:
            raise ArtifactError(f'{path}: array {key!r} is not a byte blob ([bytes] uint8)')
    codec = header.get('ordering_codec')
    known = (storage.ORDERING_CODEC, storage.SEPARABLE_CODEC)
    if header['ordering'] != 'none' and codec not in known:
        raise ArtifactError(
            f'{path}: unknown ordering codec {codec!r} (this nrnp reads {", ".join(known)})'
        )
    kept = [leaf for leaf in leaves if not leaf.represented]
    try:
        specs = [(x.shape, x.stored or x.dtype) for x in kept]
        values = storage.unpack_leaves(members['copied'], specs)
        values = [v.astype(x.dtype) for v, x in zip(values, kept)]
        coding_name = header.get('predictor_coding', 'none')
        stored = storage.unpack_predictor(
            members['predictor'], header['predictor_leaves'], coding_name
        )
        positions = []
        if header['ordering'] != 'none':
            sizes = [layer.kernel_slots for layer in layers]
            if codec == storage.SEPARABLE_CODEC:
                shapes = [(layer.filters, layer.channel_slots) for layer in layers]
                perms = storage.unpack_separable(members['ordering'], shapes)
            else:
                perms = storage.unpack_orderings(members['ordering'], sizes)
            positions = [p.astype(coordinates.position_dtype(n)) for p, n in zip(perms, sizes)]
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f'{path}: {e}') from e
    return dict(zip([leaf.path for leaf in kept], values)), stored, positions

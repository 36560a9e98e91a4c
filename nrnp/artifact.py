"""The compressed artefact: predictor, orderings and copied leaves in one `.nrnp` file.

  compressed.save('r20.nrnp')                 # one uncompressed .npz, written atomically
  variables = nrnp.load('r20.nrnp').reconstruct()
  compressed.size_report()                    # bytes per part, NeRN and on-disk ratios

File format (`FORMAT`, version `VERSION`): an uncompressed `.npz` (a zip of `.npy`
members, read with `np.load(allow_pickle=False)`, so nothing is ever unpickled):

  header        [bytes] uint8   UTF-8 JSON: format, version, leaves (path, shape,
                                dtype, represented), layout (KernelLayout fields),
                                ordering, encoding, predictor settings and leaves,
                                config, history, metrics
  predictor/<i> predictor leaf i of header['predictor_leaves']
  ordering/<l>  [O * I] uint8/16/32, represented layer l: kernel slot f * I + c gets
                coordinate (p // I, p % I) with p = ordering[l][f * I + c]
                (absent for ordering 'none', whose coordinates are the storage order)
  copied/<i>    leaf i of header['leaves'] when not represented (BatchNorm, dense, ...)

Leaves whose dtype numpy cannot store natively (bfloat16) are stored as unsigned
integers of the same width and viewed back on load.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from nrnp import compression, importers, kernels, predictor

# Moved to nrnp.export; the redundant aliases re-export them as `artifact.export_state_dict` etc.
from nrnp.export import export_state_dict as export_state_dict
from nrnp.export import generic_state_dict as generic_state_dict

FORMAT = 'nrnp.compressed'
VERSION = 1
_HEADER_KEYS = (
    'format',
    'version',
    'bare',
    'leaves',
    'layout',
    'ordering',
    'encoding',
    'predictor',
    'predictor_leaves',
    'config',
    'history',
    'metrics',
)


class ArtifactError(ValueError):
    """A `.nrnp` file is missing, truncated, foreign or of an unsupported version."""


@dataclasses.dataclass(frozen=True)
class LeafSpec:
    """One leaf of the compressed variables: `path` starts with the collection name."""

    path: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    represented: bool


def _to_storable(x: np.ndarray) -> np.ndarray:
    """bfloat16 and other non-native dtypes as unsigned ints of the same width."""
    return x if x.dtype.kind in 'biufc' else x.view(f'u{x.dtype.itemsize}')


def _from_storable(x: np.ndarray, dtype: str) -> np.ndarray:
    target = jnp.dtype(dtype)
    return x if x.dtype == target else x.view(target)


def position_dtype(n: int) -> np.dtype:
    """The smallest unsigned int holding 0..n-1 (the width `coordinates.ordering_bytes` counts)."""
    return np.dtype(np.uint8 if n <= 2**8 else np.uint16 if n <= 2**16 else np.uint32)


def layer_positions(layout: kernels.KernelLayout, coords: np.ndarray) -> list[np.ndarray]:
    """Per layer, the flat position `filter_pos * I + channel_pos` of every kernel slot.

    Args:
      layout: the kernel table layout.
      coords: `[N, 3]` int32 from `coordinates.kernel_coordinates`.

    Returns:
      One `[O * I]` array per layer, in the smallest unsigned int type.
    """
    out = []
    for layer in layout.layers:
        rows = coords[layer.offset : layer.offset + layer.num_rows]
        rows = rows.reshape(layer.filters * layer.channels, layer.tiles, 3)[:, 0]  # [O * I, 3]
        flat = rows[:, 1].astype(np.int64) * layer.channels + rows[:, 2] // layer.tiles
        out.append(flat.astype(position_dtype(layer.filters * layer.channels)))
    return out


def positions_to_coordinates(layout: kernels.KernelLayout, positions) -> np.ndarray:
    """Inverse of `layer_positions`: the `[N, 3]` int32 coordinates, exactly as computed.

    `positions=None` gives the storage order (ordering 'none').
    """
    out = []
    for index, layer in enumerate(layout.layers):
        n = layer.filters * layer.channels
        flat = np.arange(n) if positions is None else np.asarray(positions[index], np.int64)
        fpos = (flat // layer.channels).astype(np.int32).reshape(layer.filters, layer.channels)
        cpos = (flat % layer.channels).astype(np.int32).reshape(layer.filters, layer.channels)
        fpos = np.repeat(fpos[..., None], layer.tiles, axis=-1)
        cpos = cpos[..., None] * layer.tiles + np.arange(layer.tiles, dtype=np.int32)
        lpos = np.full_like(fpos, index)
        out.append(np.stack([lpos, fpos, cpos], axis=-1).reshape(layer.num_rows, 3))
    return np.concatenate(out, axis=0)


def flatten_variables(tree, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], np.ndarray]:
    """A nested dict of arrays as `{path: numpy array}` (dict order kept).

    Raises:
      TypeError: for a node that is neither a mapping nor an array.
    """
    out = {}
    for key, value in tree.items():
        path = (*prefix, str(key))
        if hasattr(value, 'items'):
            out.update(flatten_variables(value, path))
        elif hasattr(value, 'shape') and hasattr(value, 'dtype'):
            out[path] = np.asarray(value)
        else:
            raise TypeError(f'{"/".join(path)}: expected nested dicts of arrays, got {type(value)}')
    return out


def unflatten(flat: dict[tuple[str, ...], object]) -> dict:
    """Inverse of `flatten_variables`: `{path: leaf}` -> nested dicts."""
    tree: dict = {}
    for path, leaf in flat.items():
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = leaf
    return tree


@dataclasses.dataclass
class Compressed:
    """A compressed network: everything needed to rebuild its variables, nothing else.

    Attributes:
      leaves: every leaf of the input variables, paths starting with the collection
        ('params', 'batch_stats', ...); represented ones are rebuilt by the predictor.
      copied: `{path: array}` of the leaves that are not represented, as given.
      layout: the kernel table layout of the represented params.
      ordering: 'none' | 'infilter' | 'crossfilter'.
      positions: per represented layer `[O * I]` unsigned ints (empty for 'none').
      encoding: {'kind', 'levels', 'base', 'features', 'scale', 'seed'}.
      predictor_settings: {'hidden', 'layers', 'init', 'residual', 'input_dim'}.
      predictor_params: the predictor's params pytree (numpy).
      bare: the input was a bare params tree (no 'params' key); `reconstruct` returns one.
      config: the run's config as JSON-compatible dict.
      history: per-phase records ('init', 'reconstruct', 'distill').
      metrics: 'top1_original', 'top1_reconstructed', 'reconstruction_rmse' (None if unknown).
    """

    leaves: list[LeafSpec]
    copied: dict
    layout: kernels.KernelLayout
    ordering: str
    positions: list[np.ndarray]
    encoding: dict
    predictor_settings: dict
    predictor_params: dict
    bare: bool = False
    config: dict = dataclasses.field(default_factory=dict)
    history: list = dataclasses.field(default_factory=list)
    metrics: dict = dataclasses.field(default_factory=dict)

    # ------------------------------------------------------------ rebuilding

    def coordinates(self) -> np.ndarray:
        """`[num_kernels, 3]` int32 coordinates, identical to those used in training."""
        return positions_to_coordinates(self.layout, self.positions or None)

    def predictor_module(self) -> predictor.Predictor:
        s = self.predictor_settings
        return predictor.Predictor(
            hidden=s['hidden'], layers=s['layers'], initializer=s['init'], residual=s['residual']
        )

    def encoded(self) -> jax.Array:
        """`[num_kernels, input_dim]` float32, the predictor's inputs (as `compression.prepare`)."""
        encode, input_dim = compression.make_encoder(
            types.SimpleNamespace(**self.encoding), self.encoding['seed']
        )
        if input_dim != self.predictor_settings['input_dim']:
            raise ValueError(f'encoding width {input_dim} != {self.predictor_settings}')
        return jnp.asarray(encode(self.coordinates()), jnp.float32)

    def reconstruct(self) -> dict:
        """The variables with every represented kernel predicted (numpy leaves).

        Returns:
          The input's tree: `{'params', 'batch_stats', ...}` (or bare params when
          compressed from bare params), same structure, shapes and dtypes; copied
          leaves are the stored arrays themselves, bit for bit.
        """
        params = {}
        for leaf in self.leaves:
            if leaf.path[0] == 'params':
                value = self.copied.get(leaf.path)
                if value is None:
                    value = jnp.zeros(leaf.shape, leaf.dtype)  # replaced by the predictor
                params[leaf.path[1:]] = value
        pparams = jax.tree.map(jnp.asarray, self.predictor_params)
        rebuilt = predictor.reconstruct(
            self.predictor_module(), self.layout, pparams, self.encoded(), unflatten(params)
        )
        flat_rebuilt = flatten_variables(rebuilt, ('params',))
        out = {}
        for leaf in self.leaves:
            if leaf.represented:
                out[leaf.path] = np.asarray(flat_rebuilt[leaf.path]).astype(leaf.dtype, copy=False)
            else:
                out[leaf.path] = self.copied[leaf.path]
        tree = unflatten(out)
        return tree['params'] if self.bare else tree

    @property
    def batch_stats(self) -> dict | None:
        """The stored BatchNorm statistics (None when the input had none)."""
        stats = {p[1:]: v for p, v in self.copied.items() if p[0] == 'batch_stats'}
        return unflatten(stats) if stats else None

    # ------------------------------------------------------------ serialisation

    def _header(self) -> dict:
        return {
            'format': FORMAT,
            'version': VERSION,
            'bare': self.bare,
            'leaves': [dataclasses.asdict(leaf) for leaf in self.leaves],
            'layout': [dataclasses.asdict(layer) for layer in self.layout.layers],
            'ordering': self.ordering,
            'encoding': self.encoding,
            'predictor': self.predictor_settings,
            'predictor_leaves': [
                {'path': list(p), 'shape': list(v.shape), 'dtype': str(v.dtype)}
                for p, v in flatten_variables(self.predictor_params).items()
            ],
            'config': self.config,
            'history': self.history,
            'metrics': self.metrics,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """Every member of the `.nrnp` file, by key (see the module docstring)."""
        header = json.dumps(self._header()).encode()
        out = {'header': np.frombuffer(header, np.uint8)}
        for i, value in enumerate(flatten_variables(self.predictor_params).values()):
            out[f'predictor/{i}'] = _to_storable(value)
        for i, value in enumerate(self.positions):
            out[f'ordering/{i}'] = value
        for i, leaf in enumerate(self.leaves):
            if not leaf.represented:
                out[f'copied/{i}'] = _to_storable(self.copied[leaf.path])
        return out

    def to_bytes(self) -> bytes:
        """The `.nrnp` file's bytes."""
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays())
        return buffer.getvalue()

    def save(self, path: str | os.PathLike) -> str:
        """Writes the artefact to `path` (conventionally `*.nrnp`) atomically.

        Returns:
          The path written.
        """
        path = os.fspath(path)
        _atomic_write(path, self.to_bytes())
        return path

    # ------------------------------------------------------------ sizes

    def size_report(self) -> dict:
        """Bytes per part and the compression ratios.

        Returns:
          predictor_bytes, ordering_bytes, copied_bytes (of which copied_params_bytes
          and batch_stats_bytes), header_bytes; payload_bytes (their sum);
          artifact_bytes (the `.nrnp` file, payload + zip/npy framing); original_bytes
          (all input leaves); represented_params, predictor_params, param_ratio
          (predictor / represented params, NeRN's measure) and disk_ratio
          (artifact_bytes / original_bytes).
        """
        arrays = self.arrays()

        def nbytes(prefix):
            return sum(v.nbytes for k, v in arrays.items() if k.startswith(prefix))

        copied = {leaf.path: self.copied[leaf.path] for leaf in self.leaves if not leaf.represented}
        n_pred = sum(v.size for v in jax.tree.leaves(self.predictor_params))
        original = sum(
            math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize for leaf in self.leaves
        )
        out = {
            'predictor_bytes': nbytes('predictor/'),
            'ordering_bytes': nbytes('ordering/'),
            'copied_bytes': nbytes('copied/'),
            'copied_params_bytes': sum(v.nbytes for p, v in copied.items() if p[0] == 'params'),
            'batch_stats_bytes': sum(v.nbytes for p, v in copied.items() if p[0] == 'batch_stats'),
            'header_bytes': nbytes('header'),
            'artifact_bytes': len(self.to_bytes()),
            'original_bytes': int(original),
            'represented_params': int(self.layout.num_params),
            'predictor_params': int(n_pred),
        }
        parts = ('predictor_bytes', 'ordering_bytes', 'copied_bytes', 'header_bytes')
        out['payload_bytes'] = sum(out[k] for k in parts)
        out['param_ratio'] = out['predictor_params'] / out['represented_params']
        out['disk_ratio'] = out['artifact_bytes'] / out['original_bytes']
        return out

    def summary(self) -> str:
        """A readable multi-line description: layers, predictor, sizes, accuracy."""
        s, p = self.size_report(), self.predictor_settings
        lines = [
            f'nrnp compressed network: {len(self.layout.layers)} represented layers, '
            f'{self.layout.num_kernels} kernels, {s["represented_params"]:,} params',
            f'  predictor: hidden {p["hidden"]}, {p["layers"]} layers, {s["predictor_params"]:,} '
            f'params (ratio {s["param_ratio"]:.4f}); ordering {self.ordering}; '
            f'encoding {self.encoding["kind"]}',
            f'  bytes: predictor {s["predictor_bytes"]:,}, orderings {s["ordering_bytes"]:,}, '
            f'copied {s["copied_bytes"]:,}, header {s["header_bytes"]:,}',
            f'  file {s["artifact_bytes"]:,} B vs original {s["original_bytes"]:,} B '
            f'(on-disk ratio {s["disk_ratio"]:.4f})',
        ]
        m = self.metrics
        if m.get('top1_original') is not None or m.get('top1_reconstructed') is not None:
            fmt = lambda v: '-' if v is None else f'{v:.2f} %'
            lines.append(
                f'  top-1 original {fmt(m.get("top1_original"))}, '
                f'rebuilt {fmt(m.get("top1_reconstructed"))}'
            )
        return '\n'.join(lines)

    def __str__(self) -> str:
        return self.summary()

    # ------------------------------------------------------------ export

    def export_flax(self, path: str | os.PathLike) -> None:
        """The rebuilt variables as an orbax checkpoint (`importers.save_variables`)."""
        importers.save_variables(path, self.reconstruct())

    def export_torch(self, path: str | os.PathLike, naming: str = 'auto') -> dict:
        """The rebuilt variables as a PyTorch-layout state dict `.npz` (`export_state_dict`)."""
        variables = self.reconstruct()
        return export_state_dict({'params': variables} if self.bare else variables, path, naming)


def _atomic_write(path: str, payload: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.tmp-{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            f.write(payload)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path: str | os.PathLike) -> Compressed:
    """Reads a `.nrnp` file written by `Compressed.save`.

    Raises:
      ArtifactError: naming the path and the problem, for a missing, truncated,
        foreign (plain npz, pickle, random bytes) or wrong-version file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ArtifactError(f'{path}: no such file')
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
        config=header['config'],
        history=header['history'],
        metrics=header['metrics'],
    )

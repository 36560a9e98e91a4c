"""The compressed artefact: predictor, orderings and copied leaves in one `.nrnp` file.

  compressed.save('r20.nrnp')                 # one uncompressed .npz, written atomically
  variables = nrnp.load('r20.nrnp').reconstruct()     # reader.load
  compressed.size_report()                    # bytes per part, NeRN and on-disk ratios
  compressed.evaluate(model, images, labels)  # top-1 % of the rebuilt network (`scoring`)

File format (`FORMAT`, versions 2 to 4): an uncompressed `.npz` (a zip of `.npy`
members, read with `np.load(allow_pickle=False)`, so nothing is ever unpickled) of four
uint8 members (`storage` has the byte layout):

  header     zlib-compressed UTF-8 JSON: format, version, leaves (path, shape, dtype,
             represented, and 'stored': the dtype a copied leaf is stored at, version 4),
             layout (LayerSpec fields; 'group' and 'depthwise' may be absent: 1, false),
             ordering and its codec, encoding, predictor settings (with 'quantize' and
             'quantize_group') and leaves (path, shape, dtype, storage, bits, group), the
             predictor's coding, config (version 4: 'config_changes', the fields that differ
             from nrnp's default config, which the reader fills in), history (version 4:
             each phase's measurements, `compact_record`), metrics
  predictor  version 4: per predictor leaf its float values (float32, bfloat16 or
             float16) or, for an int leaf (`core.quantize`), its float16 column scales;
             then every int leaf's codes and scale multipliers, one rANS stream
             (`coding`) or bit-packed, whichever is smaller ('predictor_coding').
             Versions 2/3: per leaf its values (float32, bfloat16, int8, or int4 two per
             byte), then for int8/int4 kernels one float32 scale per output column
  ordering   per represented layer l, its permutation (kernel slot f * S + c gets coordinate
             (p // S, p % S), p = positions[l][f * S + c], S = the layer's channel slots:
             I, or ceil(I / 9) for grouped 1x1 rows) as `permutation_codec` bytes
             (about log2(n!) / n bits per kernel; absent for ordering 'none'); for
             'separable' (codec `storage.SEPARABLE_CODEC`) its two factors, the filter
             permutation [O] then the channel-slot one [S] (p = f_pos * S + c_pos)
  copied     every leaf of header['leaves'] that is not represented (BatchNorm, dense, ...),
             raw little-endian bytes at its stored dtype, in header order

Version 4 (int predictors, float16 leaves) and 3 (grouped 1x1 rows) are written only
where an older nrnp would misread the file, else 2; version 1 files (plain JSON header,
one member per array) are still read.
"""

from __future__ import annotations

import dataclasses
import io
import os

import jax
import jax.numpy as jnp
import numpy as np

from nrnp import errors, files
from nrnp.artifact import provenance, scoring, sizes, storage
from nrnp.core import coordinates, encodings, kernel_rows, predictor, quantize
from nrnp.nets import loading, state_dicts
from nrnp.nets.trees import flatten_variables, unflatten

FORMAT = 'nrnp.compressed'
VERSION = 4  # the newest written; `minimum_version` is what a file needs
READABLE_VERSIONS = (1, 2, 3, 4)
_HEADER_KEYS = tuple(
    'format version bare leaves layout ordering encoding predictor predictor_leaves config '
    'history metrics'.split()
)


@dataclasses.dataclass(frozen=True)
class LeafSpec:
    """One leaf of the compressed variables: `path` starts with the collection name."""

    path: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    represented: bool
    stored: str = ''  # a copied leaf's dtype in the file ('': `dtype`)


@dataclasses.dataclass
class Compressed:
    """A compressed network: everything needed to rebuild its variables, nothing else.

    Attributes:
      leaves: every leaf of the input variables, paths starting with the collection
        ('params', 'batch_stats', ...); represented ones are rebuilt by the predictor.
      copied: `{path: array}` of the leaves that are not represented: as given, or (float32
        leaves of a quantized artefact, `LeafSpec.stored` 'float16') rounded to float16 and
        back on construction, the values the file holds.
      layout: the kernel table layout of the represented params.
      ordering: 'none' | 'infilter' | 'crossfilter' | 'separable'.
      positions: per represented layer `[O * I]` unsigned ints (empty for 'none').
      encoding: {'kind', 'levels', 'base', 'features', 'scale', 'seed'}.
      predictor_settings: {'hidden', 'layers', 'init', 'residual', 'input_dim', 'quantize',
        'quantize_group'} (`core.quantize.Scheme`; absent: 'none', 16).
      predictor_params: the predictor's params pytree (numpy float32): the values the
        artefact rebuilds with, i.e. the stored predictor dequantized. Given float
        params and a 'quantize' mode (and no `predictor_storage`), they are quantized
        on construction and replaced by their dequantized values.
      predictor_storage: `{path: core.quantize.QuantizedLeaf}`, the predictor as stored
        (None: made from `predictor_params` and the 'quantize' setting).
      bare: the input was a bare params tree (no 'params' key); `reconstruct` returns one.
      frozen: the input was a Flax FrozenDict; `reconstruct` returns one.
      config: the run's config as JSON-compatible dict.
      history: per-phase records ('init', 'reconstruct', 'distill', 'quantize').
      metrics: 'top1_original', 'top1_reconstructed', 'reconstruction_rmse' (None if
        unknown; those of the stored predictor), and with a quantized predictor
        'top1_reconstructed_fp32', 'reconstruction_rmse_fp32' (before storage).
    """

    leaves: list[LeafSpec]
    copied: dict
    layout: kernel_rows.KernelLayout
    ordering: str
    positions: list[np.ndarray]
    encoding: dict
    predictor_settings: dict
    predictor_params: dict
    bare: bool = False
    frozen: bool = False
    config: dict = dataclasses.field(default_factory=dict)
    history: list = dataclasses.field(default_factory=list)
    metrics: dict = dataclasses.field(default_factory=dict)
    predictor_storage: dict | None = None

    def __post_init__(self):
        if self.predictor_storage is None:
            stored = quantize.quantize_tree(self.predictor_params, self.scheme)  # {layer: {..}}
            self.predictor_storage = {
                (layer, name): leaf
                for layer, leaves in stored.items()
                for name, leaf in leaves.items()
            }
            self.predictor_params = unflatten(
                {p: quantize.dequantize_leaf(s) for p, s in self.predictor_storage.items()}
            )
        for leaf in self.leaves:
            if leaf.stored and leaf.stored != leaf.dtype and leaf.path in self.copied:
                value = np.asarray(self.copied[leaf.path]).astype(leaf.stored)
                self.copied[leaf.path] = value.astype(leaf.dtype)

    @property
    def quantize(self) -> str:
        """How the predictor is stored: 'none' (float32), 'bf16' or 'int2'..'int8'."""
        return self.predictor_settings.get('quantize', 'none')

    @property
    def scheme(self) -> quantize.Scheme:
        """The predictor's storage (`core.quantize.Scheme`)."""
        old = {'int8': 'int8', 'int4': 'int4'}  # nrnp 0.2's per-column modes read as such
        group = self.predictor_settings.get('quantize_group', 0 if self.quantize in old else 16)
        return quantize.Scheme(self.quantize, group, self.predictor_settings.get('edge_bits', 0))

    # ------------------------------------------------------------ rebuilding

    def coordinates(self) -> np.ndarray:
        """`[num_kernels, 3]` int32 coordinates, identical to those used in training."""
        return coordinates.positions_to_coordinates(self.layout, self.positions or None)

    def predictor_module(self) -> predictor.Predictor:
        """The predictor module; apply it to `predictor_params` (the dequantized weights)."""
        s = self.predictor_settings
        return predictor.Predictor(
            hidden=s['hidden'], layers=s['layers'], initializer=s['init'], residual=s['residual']
        )

    def encoded(self) -> jax.Array:
        """`[num_kernels, input_dim]` float32, the predictor's inputs (as the run computed them)."""
        e = self.encoding
        encode, input_dim = encodings.make_encoder(
            e['kind'],
            levels=e['levels'],
            base=e['base'],
            features=e['features'],
            scale=e['scale'],
            seed=e['seed'],
        )
        if input_dim != self.predictor_settings['input_dim']:
            raise ValueError(f'encoding width {input_dim} != {self.predictor_settings}')
        return jnp.asarray(encode(self.coordinates()), jnp.float32)

    def reconstruct(self) -> dict:
        """The variables with every represented kernel predicted (numpy leaves).

        Returns:
          The input's tree: `{'params', 'batch_stats', ...}` (or bare params when
          compressed from bare params; a FrozenDict when given one), same structure,
          shapes and dtypes; copied leaves are the stored arrays themselves, bit for bit.
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
        tree = tree['params'] if self.bare else tree
        if self.frozen:
            from flax.core import freeze  # noqa: PLC0415  (flax is imported by jax users anyway)

            return freeze(tree)
        return tree

    def evaluate(self, model, images, labels, batch_size: int = 500, mean=None, std=None):
        """Top-1 percent of the rebuilt network on `images` [N, H, W, C] and `labels` [N]
        (`scoring.evaluate`: uint8 images normalised with the run's data.mean/std)."""
        return scoring.evaluate(self, model, images, labels, batch_size, mean, std)

    @property
    def batch_stats(self) -> dict | None:
        """The stored BatchNorm statistics (None when the input had none)."""
        stats = {p[1:]: v for p, v in self.copied.items() if p[0] == 'batch_stats'}
        return unflatten(stats) if stats else None

    # ------------------------------------------------------------ serialisation

    def minimum_version(self) -> int:
        """4 with int or float16 leaves, 3 with grouped 1x1 rows, else 2 (an older reader
        would misread such a file)."""
        new = {'int', 'float16'} & {leaf.storage for leaf in self.predictor_storage.values()}
        if new or any(leaf.stored for leaf in self.leaves):
            return 4
        return 3 if any(layer.group > 1 for layer in self.layout.layers) else 2

    def _leaf_header(self, leaf: LeafSpec) -> dict:
        out = dataclasses.asdict(leaf)
        if not leaf.stored:
            del out['stored']
        return out

    def _header(self, version: int, coding: str) -> dict:
        if version >= 4:  # compact: what a reader cannot rebuild, and no step timings
            remembered = {
                'predictor_coding': coding,
                'config_changes': provenance.config_changes(self.config),
                'history': [provenance.compact_record(r) for r in self.history],
            }
        else:
            remembered = {'config': self.config, 'history': self.history}
        return {
            'format': FORMAT,
            'version': version,
            'bare': self.bare,
            'frozen': self.frozen,
            'leaves': [self._leaf_header(leaf) for leaf in self.leaves],
            'layout': [dataclasses.asdict(layer) for layer in self.layout.layers],
            'ordering': self.ordering,
            'ordering_codec': storage.ordering_codec(self.ordering),
            'encoding': self.encoding,
            'predictor': {**self.predictor_settings, 'quantize': self.quantize},
            'predictor_leaves': storage.predictor_entries(self.predictor_storage),
            **remembered,
            'metrics': self.metrics,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """Every member of the `.nrnp` file, by key (see the module docstring)."""
        return self._arrays()[0]

    def _arrays(self) -> tuple[dict[str, np.ndarray], tuple[int, int], str]:
        """(the members, (bytes of the predictor's integer codes as stored, bit-packed), and
        the predictor's coding)."""
        version = self.minimum_version()
        predictor_blob, coding, packed = storage.pack_predictor(self.predictor_storage, version)
        out = {
            'header': storage.encode_header(self._header(version, coding)),
            'predictor': predictor_blob,
        }
        if self.ordering != 'none':
            out['ordering'] = (
                storage.pack_separable(
                    self.positions, [x.channel_slots for x in self.layout.layers]
                )
                if self.ordering == 'separable'
                else storage.pack_orderings(self.positions)
            )
        out['copied'] = storage.pack_leaves(
            [
                np.asarray(self.copied[leaf.path]).astype(leaf.stored or leaf.dtype)
                for leaf in self.leaves
                if not leaf.represented
            ]
        )
        return out, packed, coding

    def to_bytes(self) -> bytes:
        """The `.nrnp` file's bytes."""
        return _npz(self.arrays())

    def save(self, path: str | os.PathLike) -> str:
        """Writes the artefact to `path` (conventionally `*.nrnp`) atomically.

        Returns:
          The path written.

        Raises:
          errors.StorageError: the directory is read-only, full or missing.
        """
        path = os.fspath(path)
        with errors.writing(path, 'the artefact', 'free some space or choose another path'):
            files.atomic_write(path, self.to_bytes())
        return path

    # ------------------------------------------------------------ sizes

    def size_report(self) -> dict:
        """Every byte of the file, by part, and the compression ratios (`sizes.size_report`)."""
        arrays, codes, coding = self._arrays()
        return sizes.size_report(self, arrays, codes, coding, len(_npz(arrays)))

    def summary(self) -> str:
        """A readable multi-line description: layers, predictor, sizes, accuracy."""
        return sizes.summary(self)

    def __str__(self) -> str:
        return self.summary()

    # ------------------------------------------------------------ export

    def export_flax(self, path: str | os.PathLike) -> None:
        """The rebuilt variables as an orbax checkpoint (`loading.save_variables`)."""
        loading.save_variables(path, self.reconstruct())

    def export_torch(self, path: str | os.PathLike, naming: str = 'auto') -> dict:
        """The rebuilt variables as a PyTorch-layout `.npz` (`state_dicts.export_state_dict`)."""
        variables = self.reconstruct()
        return state_dicts.export_state_dict(
            {'params': variables} if self.bare else variables, path, naming
        )


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    """The uncompressed `.npz` holding `arrays`."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()

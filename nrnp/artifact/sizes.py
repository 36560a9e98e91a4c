"""The sizes of an artefact, part by part, and its one-paragraph summary.

sizes = compressed.size_report()   # size_report(...) below: bytes per part, ratios
print(compressed.summary())        # summary(compressed)
"""

from __future__ import annotations

import math
import zlib

import jax
import jax.numpy as jnp


def size_report(art, arrays: dict, codes: tuple[int, int], coding: str, file_bytes: int) -> dict:
    """Every byte of `art`'s file, by part, and the compression ratios.

    Args:
      art: the `Compressed` artefact.
      arrays: its members (`Compressed.arrays`); codes: its integer codes' bytes (as
        stored, bit-packed); coding: the predictor's coding; file_bytes: the file's size.

    Returns:
      predictor_bytes (stored values, scales and codes; predictor_codes_bytes of them
      the integer codes and multipliers as stored, predictor_codes_raw_bytes those
      bit-packed, predictor_coding how: 'ans', 'packed', or 'none' before version 4),
      ordering_bytes, copied_bytes (of which copied_params_bytes and
      batch_stats_bytes, at their stored dtypes), header_bytes (as stored,
      compressed; header_json_bytes uncompressed); payload_bytes (the four parts);
      framing_bytes (zip and npy headers); artifact_bytes (the `.nrnp` file: payload
      + framing); original_bytes (all input leaves at their dtypes); quantize;
      represented_params, predictor_params, param_ratio (predictor / represented
      params, NeRN's measure); predictor_bits_per_param; ordering_bits_per_kernel;
      artifact_ratio = disk_ratio (artifact_bytes / original_bytes).
    """
    codes, codes_raw = codes
    copied = {
        leaf.path: math.prod(leaf.shape) * jnp.dtype(leaf.stored or leaf.dtype).itemsize
        for leaf in art.leaves
        if not leaf.represented
    }
    n_pred = sum(v.size for v in jax.tree.leaves(art.predictor_params))
    original = sum(math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize for leaf in art.leaves)
    size = lambda key: int(arrays[key].nbytes) if key in arrays else 0
    out = {
        'predictor_bytes': size('predictor'),
        'ordering_bytes': size('ordering'),
        'copied_bytes': size('copied'),
        'predictor_codes_bytes': codes,
        'predictor_codes_raw_bytes': codes_raw,
        'predictor_coding': coding,
        'copied_params_bytes': sum(n for p, n in copied.items() if p[0] == 'params'),
        'batch_stats_bytes': sum(n for p, n in copied.items() if p[0] == 'batch_stats'),
        'header_bytes': size('header'),
        'header_json_bytes': len(zlib.decompress(arrays['header'].tobytes())),
        'artifact_bytes': file_bytes,
        'original_bytes': int(original),
        'quantize': art.quantize,
        'represented_params': int(art.layout.num_params),
        'predictor_params': int(n_pred),
    }
    parts = ('predictor_bytes', 'ordering_bytes', 'copied_bytes', 'header_bytes')
    out['payload_bytes'] = sum(out[k] for k in parts)
    out['framing_bytes'] = out['artifact_bytes'] - out['payload_bytes']
    out['param_ratio'] = out['predictor_params'] / out['represented_params']
    out['predictor_bits_per_param'] = 8 * out['predictor_bytes'] / max(n_pred, 1)
    kernels_ordered = art.layout.num_kernels if art.ordering != 'none' else 0
    out['ordering_bits_per_kernel'] = 8 * out['ordering_bytes'] / max(kernels_ordered, 1)
    out['disk_ratio'] = out['artifact_bytes'] / out['original_bytes']
    out['artifact_ratio'] = out['disk_ratio']
    return out


def summary(art) -> str:
    """`art` described in a few lines: layers, predictor, sizes, accuracy."""
    s, p = art.size_report(), art.predictor_settings
    lines = [
        f'nrnp compressed network: {len(art.layout.layers)} represented layers, '
        f'{art.layout.num_kernels} kernels, {s["represented_params"]:,} params',
        f'  predictor: hidden {p["hidden"]}, {p["layers"]} layers, {s["predictor_params"]:,} '
        f'params (ratio {s["param_ratio"]:.4f}), stored {art.quantize}; '
        f'ordering {art.ordering}; encoding {art.encoding["kind"]}',
        f'  bytes: predictor {s["predictor_bytes"]:,}, orderings {s["ordering_bytes"]:,}, '
        f'copied {s["copied_bytes"]:,}, header {s["header_bytes"]:,}, '
        f'framing {s["framing_bytes"]:,}',
        f'  file {s["artifact_bytes"]:,} B vs original {s["original_bytes"]:,} B '
        f'(on-disk ratio {s["disk_ratio"]:.4f})',
    ]
    m = art.metrics
    if m.get('top1_original') is not None or m.get('top1_reconstructed') is not None:
        fmt = lambda v: '-' if v is None else f'{v:.2f} %'
        lines.append(
            f'  top-1 original {fmt(m.get("top1_original"))}, '
            f'rebuilt {fmt(m.get("top1_reconstructed"))}'
        )
    return '\n'.join(lines)

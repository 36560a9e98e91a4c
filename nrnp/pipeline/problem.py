"""The compression problem of one target: kernel table, coordinates, encodings, predictor.

  prep = prepare(params, config, log=print)
  layout = layout_of(params, config.kernels, style='library')   # or a ConfigError with the fix
  prep.problem      # ReconstructionProblem: encoded [N, F], target/mask [N, 9], probs [N]
  prep.pmodel, prep.input_dim, prep.predictor_seed, prep.keys

Computed once per run from the target's params and the `kernels`, `encoding`,
`predictor` and `seed` sections of the config; deterministic, so a resumed run
rebuilds exactly the same problem.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from nrnp.core import coordinates, encodings, kernel_rows, kernels, predictor
from nrnp.errors import ConfigError
from nrnp.training import reconstruction, schedule


@dataclasses.dataclass
class Prepared:
    """Everything computed once per target (see module docstring)."""

    layout: kernel_rows.KernelLayout
    table: np.ndarray  # [N, 9] original rows
    mask: np.ndarray  # [N, 9]
    coords: np.ndarray  # [N, 3] int32
    encoded: jax.Array  # [N, input_dim]
    pmodel: predictor.Predictor  # at the width the run ends with (its last round's)
    input_dim: int
    predictor_seed: int
    predictor_params: int  # of the final predictor
    keys: dict
    problem: reconstruction.ReconstructionProblem
    ordering_seconds: float


def predictor_module(p, hidden: int | None = None) -> predictor.Predictor:
    """The predictor section as a module (of width `hidden`, default `p.hidden`)."""
    return predictor.Predictor(hidden=hidden or p.hidden, layers=p.layers)


def named_keys(seed: int) -> dict:
    """One root key split into named keys once (randomness is a function of seed and step)."""
    root = jax.random.key(seed)
    names = ['predictor', 'reconstruct', 'distill', 'data']
    return {name: jax.random.fold_in(root, i) for i, name in enumerate(names)}


def selection(k) -> kernels.Predicate:
    """The kernels section as the representation predicate."""
    return kernels.select_kernels(tuple(k.sizes), k.exclude, k.large, dense=k.dense)


def _option(name: str, value, style: str) -> str:
    return (
        f'kernels__{name}={value!r}' if style == 'library' else f'--config.kernels.{name}={value}'
    )


def layout_of(params, k, style: str = 'cli', depthwise=()) -> kernel_rows.KernelLayout:
    """The kernel layout the `kernels` section `k` selects from `params`.

    `depthwise`: paths of depthwise kernels (`nets.layers.depthwise_kernels`), for their kind.

    Raises:
      errors.ConfigError: nothing is selected; the message names the options that would
        represent something (`kernels__dense=True`, `kernels__large='tile'`, more
        `sizes`, no `exclude`), in the caller's `style` ('cli' or 'library').
    """
    try:
        return kernels.kernel_layout(params, selection(k), k.pointwise, depthwise)
    except ValueError:
        pass
    leaves = [(kernels.path_names(p), np.shape(x)) for p, x in jax.tree.leaves_with_path(params)]
    squares = {s[0] for _, s in leaves if len(s) == 4 and s[0] == s[1]}
    sizes = tuple(sorted(set(k.sizes) | {n for n in squares if n <= 3}))
    options = [
        ('dense', True, dict(dense=True)),
        ('large', 'tile', dict(large='tile')),
        ('sizes', sizes, dict(sizes=sizes)),
        ('exclude', '', dict(exclude='')),
    ]
    hints = []
    for name, value, change in options:
        if value == k[name]:
            continue
        fields = {f: change.get(f, k[f]) for f in ('sizes', 'exclude', 'large', 'dense')}
        predicate = kernels.select_kernels(
            tuple(fields['sizes']), fields['exclude'], fields['large'], dense=fields['dense']
        )
        try:
            layout = kernels.kernel_layout(params, predicate, k.pointwise, depthwise)
        except ValueError:
            continue
        shown = ', '.join(layer.name for layer in layout.layers[:4])
        more = f' and {len(layout.layers) - 4} more' if len(layout.layers) > 4 else ''
        hints.append(f'{_option(name, value, style)} represents {shown}{more}')
    listed = ', '.join(f'{"/".join(p)} {s}' for p, s in leaves[:8])
    listed += f' and {len(leaves) - 8} more' if len(leaves) > 8 else ''
    setting = f'sizes {tuple(k.sizes)}, large {k.large!r}, dense {k.dense}, exclude {k.exclude!r}'
    raise ConfigError(
        f'nothing to represent: the kernels settings ({setting}) select none of the '
        f"network's leaves ({listed}); "
        + ('; '.join(hints) if hints else 'the network has no conv or Dense kernel leaves')
    )


def prepare(params, config, log=print, depthwise=()) -> Prepared:
    """Builds the kernel table, orderings, encodings and predictor module of `params`.

    `depthwise`: paths of depthwise kernels (`nets.layers.depthwise_kernels`), for their kind.
    """
    k = config.kernels
    layout = layout_of(params, k, depthwise=depthwise)
    table = np.asarray(kernels.gather(layout, params))  # [N, 9]
    mask = layout.mask()  # [N, 9]
    start = time.time()
    coords = coordinates.kernel_coordinates(layout, table, config.kernels.ordering, log)
    ordering_seconds = time.time() - start
    e = config.encoding
    encode, input_dim = encodings.make_encoder(e.kind, levels=e.levels, seed=config.seed)
    encoded = jnp.asarray(encode(coords), jnp.float32)  # [N, input_dim]
    kinds = kernels.params_by_kind(layout, params)
    shown = ', '.join(f'{kind} {n}' for kind, n in kinds.items() if n and kind != 'copied')
    log(
        f'kernel table: {layout.num_kernels} rows in {len(layout.layers)} layers, '
        f'{layout.num_params} represented params ({shown}; 1x1 rows {k.pointwise}); '
        f'{config.kernels.ordering} ordering {ordering_seconds:.1f}s'
    )
    hidden = schedule.final_hidden(config)
    pmodel = predictor_module(config.predictor, hidden)
    keys = named_keys(config.seed)
    predictor_seed = int(jax.random.randint(keys['predictor'], (), 0, 2**30))
    n_pred = predictor.num_params(hidden, input_dim, config.predictor.layers, kernel_rows.ROW)
    rounds = schedule.rounds_of(config)
    if len(rounds) > 1:
        log(
            'reconstruction rounds (steps, hidden): '
            + ', '.join(f'({steps}, {h})' for steps, h in rounds)
            + '; each round after the first fits the last rebuild with a fresh predictor'
        )
    log(
        f'predictor: hidden {hidden}, {config.predictor.layers} layers, '
        f'{n_pred} params, ratio {n_pred / layout.num_params:.4f}'
    )
    table_j, mask_j = jnp.asarray(table), jnp.asarray(mask)
    problem = reconstruction.ReconstructionProblem(
        encoded, table_j, mask_j, reconstruction.magnitude_probabilities(table_j, mask_j)
    )
    return Prepared(
        layout=layout,
        table=table,
        mask=mask,
        coords=coords,
        encoded=encoded,
        pmodel=pmodel,
        input_dim=input_dim,
        predictor_seed=predictor_seed,
        predictor_params=n_pred,
        keys=keys,
        problem=problem,
        ordering_seconds=ordering_seconds,
    )

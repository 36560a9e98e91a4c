"""Every config field with its value and meaning, as `nrnp fields [--config=R]` prints them.

  listing.fields()        # [('predictor.hidden', '64', 'width h of the predictor MLP'), ...]
  listing.lines(config)   # ['predictor.hidden = 180  # (default 64) width h ...', ...]

The fields, their defaults as written and their meanings are read from `default.py`'s
source, where each is declared once with its comment. Standard library and
ml_collections only, so a listing does not import JAX.
"""

from __future__ import annotations

import pathlib
import re

import ml_collections


def fields() -> list[tuple[str, str, str]]:
    """(dotted name, default as written, meaning) of every field in `default.py`.

    Read from the source, where each field is declared once with a one-line comment
    (comment lines just above a field are part of its meaning).
    """
    out, pending = [], []
    for line in (pathlib.Path(__file__).resolve().parent / 'default.py').read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith('def _tiny'):
            break
        if stripped.startswith('#'):
            pending.append(stripped.lstrip('# ').strip())
            continue
        m = re.match(r'c\.([\w.]+) = (.*?)(?:\s+#\s*(.*))?$', stripped)
        if m and not m.group(2).startswith('ml_collections.ConfigDict'):
            meaning = ' '.join([*pending, m.group(3) or '']).strip()
            out.append((m.group(1), m.group(2), meaning))
        pending = [] if stripped else pending
    return out


def lines(config: ml_collections.ConfigDict | None = None) -> list[str]:
    """`name = value  # meaning` for every field: `config`'s values (a value that differs
    from the default says the default's), or the defaults as written (None)."""
    from nrnp.configs import default  # noqa: PLC0415 (a recipe module of this package)

    defaults, out = default.get_config(), []
    for name, written, meaning in fields():
        value = written if config is None else repr(_get(config, name))
        if value != written and value != repr(_get(defaults, name)):
            meaning = f'(default {written}) {meaning}'
        out.append(f'{name} = {value}' + (f'  # {meaning}' if meaning.strip() else ''))
    return out


def _get(config: ml_collections.ConfigDict, dotted: str):
    for name in dotted.split('.'):
        config = config[name]
    return config

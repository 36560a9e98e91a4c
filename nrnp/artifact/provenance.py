"""What an artefact remembers of the run that made it, compactly (format version 4).

  header['config_changes'] = config_changes(config_dict)   # fields off nrnp's defaults
  config_dict = full_config(header['config_changes'])       # the reader's direction
  header['history'] = [compact_record(r) for r in records]  # measurements, no timings

Nothing here is needed to rebuild the network; it is kept small because every byte of
the file counts against the compression.
"""

from __future__ import annotations

import json

from nrnp.configs import default

_RECORD_KEYS = (
    'kind round cycle steps hidden seconds top1_before top1 rmse mode images source'.split()
)


def compact_record(record: dict) -> dict:
    """A phase record as a version 4 file keeps it: what it measured, not how it was timed."""
    out = {k: record[k] for k in _RECORD_KEYS if record.get(k) is not None}
    if 'seconds' in out:
        out['seconds'] = round(out['seconds'], 1)
    return out


def config_changes(config: dict) -> dict:
    """The fields of a run's config (as a dict) that differ from nrnp's default config."""

    def diff(given, base):
        out = {}
        for key, value in given.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                inner = diff(value, base[key])
                if inner:
                    out[key] = inner
            elif key not in base or _plain(base[key]) != _plain(value):
                out[key] = value
        return out

    return diff(config, json.loads(default.get_config().to_json_best_effort()))


def full_config(changes: dict) -> dict:
    """Inverse of `config_changes`: nrnp's default config with `changes` applied."""

    def merge(base, given):
        for key, value in given.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value
        return base

    return merge(json.loads(default.get_config().to_json_best_effort()), changes)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value

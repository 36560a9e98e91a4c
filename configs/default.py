"""the embedded default (digits): `--config=configs/default.py` from a checkout.

The recipe, its docstring and its fields live in `nrnp/configs/default.py`, shipped with
the package, so `--config=default` works from any directory.
"""

from nrnp.configs.default import get_config

__all__ = ['get_config']

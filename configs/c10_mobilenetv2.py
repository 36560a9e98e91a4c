"""`--config=configs/c10_mobilenetv2.py` from a checkout.

The recipe, its docstring and its fields live in `nrnp/configs/c10_mobilenetv2.py`,
shipped with the package, so `--config=c10_mobilenetv2` works from any directory.
"""

from nrnp.configs.c10_mobilenetv2 import get_config

__all__ = ['get_config']

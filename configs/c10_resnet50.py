"""`--config=configs/c10_resnet50.py` from a checkout.

The recipe, its docstring and its fields live in `nrnp/configs/c10_resnet50.py`,
shipped with the package, so `--config=c10_resnet50` works from any directory.
"""

from nrnp.configs.c10_resnet50 import get_config

__all__ = ['get_config']

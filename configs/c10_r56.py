"""ResNet56 on CIFAR-10: `--config=configs/c10_r56.py` from a checkout.

The recipe, its docstring and its fields live in `nrnp/configs/c10_r56.py`, shipped with
the package, so `--config=c10_r56` works from any directory.
"""

from nrnp.configs.c10_r56 import get_config

__all__ = ['get_config']

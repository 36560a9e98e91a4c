"""ResNet20 on CIFAR-10: `--config=configs/c10_r20.py` from a checkout.

The recipe, its docstring and its fields live in `nrnp/configs/c10_r20.py`, shipped with
the package, so `--config=c10_r20` works from any directory.
"""

from nrnp.configs.c10_r20 import get_config

__all__ = ['get_config']

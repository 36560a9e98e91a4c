"""ResNet56 on CIFAR-100: `--config=configs/c100.py` from a checkout.

The recipe, its docstring and its fields live in `nrnp/configs/c100.py`, shipped with
the package, so `--config=c100` works from any directory.
"""

from nrnp.configs.c100 import get_config

__all__ = ['get_config']

"""ResNet20 distilled from ResNet56: `--config=configs/c10_r20_r56teacher.py` from a checkout.

The recipe, its docstring and its fields live in `nrnp/configs/c10_r20_r56teacher.py`,
shipped with the package, so `--config=c10_r20_r56teacher` works from any directory.
"""

from nrnp.configs.c10_r20_r56teacher import get_config

__all__ = ['get_config']

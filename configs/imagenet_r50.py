"""`--config=configs/imagenet_r50.py` from a checkout.

The recipe, its docstring and its fields live in `nrnp/configs/imagenet_r50.py`,
shipped with the package, so `--config=imagenet_r50` works from any directory.
"""

from nrnp.configs.imagenet_r50 import get_config

__all__ = ['get_config']

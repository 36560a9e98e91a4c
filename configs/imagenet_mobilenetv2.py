"""`--config=configs/imagenet_mobilenetv2.py` from a checkout.

The recipe, its docstring and its fields live in `nrnp/configs/imagenet_mobilenetv2.py`,
shipped with the package, so `--config=imagenet_mobilenetv2` works from any directory.
"""

from nrnp.configs.imagenet_mobilenetv2 import get_config

__all__ = ['get_config']

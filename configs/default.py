"""The embedded default: compress a small CNN on scikit-learn's handwritten digits, offline.

Recipe (2-core CPU, no GPU, no download: the data ships inside scikit-learn):

  pip install -e . && python -m nrnp.main --config=configs/default.py --workdir=/tmp/nrnp

trains a small CNN teacher on the 8x8 digits (cached in the workdir), then
compresses its three convs with a predictor and reports the accuracy of the
original and rebuilt nets on the 360 held-out digits. `--config=configs/default.py:tiny`
is the smoke-test size the tests use.

Every field any nrnp config uses is declared here once, with its meaning;
experiment configs import this file and override a few fields.
"""

from nrnp.defaults import get_config

__all__ = ['get_config']

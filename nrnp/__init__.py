"""nrnp: compress a CNN's conv weights into a small coordinate-to-kernel predictor.

python -m nrnp.main --config=configs/c10_r20.py --workdir=/tmp/r20
"""

__version__ = '0.1.0'

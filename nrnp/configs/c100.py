"""ResNet56 on CIFAR-100, the paper's headline (NeRN: h=360, ratio 0.56 -> 70.51 %).

The user's command, from nothing, on a connected machine (`nrnp` is the installed command;
`python -m nrnp.main --config=configs/c100.py` is the same from a checkout):

  nrnp --config=c100

downloads the official cifar-100-binary.tar.gz (161 MiB, sha256 58a81ae1...) and the
public chenyaofo/pytorch-cifar-models CIFAR-100 ResNet56 (option B: 1x1 conv + BN
downsample; published top-1 72.63 %; trained on inputs normalised with the CIFAR-100
mean/std below) into ~/.cache/nrnp (`$NRNP_CACHE`), verifies both, compresses the net
with NeRN's h=360 predictor and writes runs/c100/. Offline it stops at once naming the
files to fetch, where to put them and the flags for local copies
(`--config.teacher.checkpoint=PATH`, `--config.data.data_dir=DIR` holding the archive or
a prepared TFDS cifar100, or `--config.data.image_folder=DIR`).
`--config=c100:tiny` is the smoke-test size.
"""

from nrnp.configs import c10_r20


def get_config(arg: str = ''):
    c = c10_r20.get_config(arg)
    c.teacher.checkpoint = 'cifar100_resnet56'  # registry name (nets/registry.py)
    c.teacher.model = 'resnet56'
    c.teacher.shortcut = 'B'
    c.data.name = 'cifar100'
    c.data.num_classes = 100
    c.data.mean = (0.5070, 0.4865, 0.4409)  # what that checkpoint was trained with
    c.data.std = (0.2673, 0.2564, 0.2761)
    if not arg:
        c.predictor.hidden = 360
    return c

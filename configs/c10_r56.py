"""ResNet56 (akamaster, option A) on CIFAR-10, NeRN's h=320 predictor (ratio 0.46).

Recipe:

  python -m nrnp.main --config=configs/c10_r56.py --workdir=/tmp/c10_r56 \
    --config.teacher.checkpoint=../shared/weights/akamaster-cifar10/resnet56-4bfd9763.th \
    --config.data.image_folder=../shared/data/cifar10-jpeg
"""

from configs import c10_r20


def get_config(arg: str = ''):
    c = c10_r20.get_config(arg)
    c.teacher.model = 'resnet56'
    if not arg:
        c.predictor.hidden = 320
    return c

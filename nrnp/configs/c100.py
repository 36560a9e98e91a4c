"""ResNet56 on CIFAR-100 (NeRN: h=360, ratio 0.56 -> 70.51 %; h=400 -> 71.70 %).

Recipe (needs a CIFAR-100 ResNet56 checkpoint and the data; nothing is downloaded):

  python -m nrnp.main --config=configs/c100.py --workdir=/tmp/c100 \
    --config.teacher.checkpoint=PATH/resnet56_cifar100.th \
    --config.data.data_dir=DIR   # prepared ArrayRecord cifar100, or
    # put cifar-100-binary.tar.gz in DIR/downloads/manual, or use data.image_folder
"""

from nrnp.configs import c10_r20


def get_config(arg: str = ''):
    c = c10_r20.get_config(arg)
    c.teacher.model = 'resnet56'
    c.data.name = 'cifar100'
    c.data.num_classes = 100
    if not arg:
        c.predictor.hidden = 360
    return c

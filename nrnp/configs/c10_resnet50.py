"""Bottleneck ResNet50 (32x32 variant, width 0.125) on CIFAR-10, trained here.

No public CIFAR-10 ResNet50 checkpoint is registered, so the recipe trains its teacher
first (`teacher.checkpoint=''`, cached in W/teacher), then compresses it.

  nrnp --config=c10_resnet50 --config.data.image_folder=../shared/data/cifar10-jpeg

`--config=c10_resnet50:tiny` is the smoke-test size (a 20-step teacher).
"""

from nrnp.configs import c10_r20


def get_config(arg: str = ''):
    c = c10_r20.get_config(arg)
    c.teacher.model = 'cifar_resnet50'
    c.teacher.width = 0.125
    c.teacher.checkpoint = ''  # trained here (no published CIFAR-10 ResNet50)
    c.teacher.train_steps = 2000
    c.data.mean = (0.4914, 0.4822, 0.4465)  # CIFAR-10's own statistics (teacher trained here)
    c.data.std = (0.2023, 0.1994, 0.2010)
    c.predictor.hidden = 64
    if arg == 'tiny':
        c.teacher.train_steps = 20
        c.teacher.train_batch_size = 32
        c.predictor.hidden = 16
    return c

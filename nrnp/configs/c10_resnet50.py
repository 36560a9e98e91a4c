"""Bottleneck ResNet50 (32x32 variant, width 0.125) on CIFAR-10, trained here.

No public CIFAR-10 ResNet50 checkpoint is registered, so the recipe trains its teacher
first (`teacher.checkpoint=''`, cached in W/teacher), then compresses it.

  nrnp --config=c10_resnet50 --config.data.image_folder=../shared/data/cifar10-jpeg

`--config=c10_resnet50:tiny` is the smoke-test size (a 20-step teacher).
"""

from nrnp.configs import c10_r20


def get_config(arg: str = ''):
    # h=64 (ratio 0.078) collapsed to 10 % at 4,000 + 60 steps; h=192 is ratio 0.434.
    return c10_r20.trained_here(arg, 'cifar_resnet50', width=0.125, hidden=192)

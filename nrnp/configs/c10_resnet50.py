"""Bottleneck ResNet50 (32x32 variant, width 0.125) on CIFAR-10, trained here.

No public CIFAR-10 ResNet50 checkpoint is registered, so the recipe trains its teacher
first (`teacher.checkpoint=''`, 1,500 SGD steps, cached in W/teacher), then compresses it
with an h=192 predictor (ratio 0.434: 159,177 params for 366,552 represented, 189,504 of
them pointwise, in 42,496 kernel rows):

  nrnp --config=c10_resnet50 --config.data.image_folder=../shared/data/cifar10-jpeg

What its teacher reached and what a shortened run (`--config.teacher.checkpoint=W/teacher
--config.reconstruct.steps=8000 --config.distill.steps=30`) measured on the 2-core CPU are
in docs/results.md ("Bottleneck ResNet50 and MobileNetV2"). The full recipe (20,000 +
300 steps) needs a GPU.

`--config=c10_resnet50:tiny` is the smoke-test size (a 20-step teacher).
"""

from nrnp.configs import c10_r20


def get_config(arg: str = ''):
    # h=64 (ratio 0.078) collapsed to 10 % at 4,000 + 60 steps; h=192 is ratio 0.434.
    return c10_r20.trained_here(arg, 'cifar_resnet50', width=0.125, hidden=192)

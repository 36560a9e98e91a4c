"""MobileNetV2 (32x32 variant, width 0.25) on CIFAR-10, trained here: pointwise + depthwise.

No public CIFAR-10 MobileNetV2 checkpoint is registered, so the recipe trains its teacher
first (`teacher.checkpoint=''`, 1,500 SGD steps, cached in W/teacher), then compresses it
with an h=128 predictor (ratio 0.359: 81,545 params for 227,456 represented, 210,752 of
them pointwise and 16,488 depthwise, in 26,192 kernel rows):

  nrnp --config=c10_mobilenetv2 --config.data.image_folder=../shared/data/cifar10-jpeg

What its teacher reached and what a shortened run (`--config.teacher.checkpoint=W/teacher
--config.reconstruct.steps=8000 --config.distill.steps=30`) measured on the 2-core CPU are
in docs/results.md ("Bottleneck ResNet50 and MobileNetV2"). The full recipe (20,000 +
300 steps) needs a GPU: distillation steps take seconds each on a CPU.

`--config=c10_mobilenetv2:tiny` is the smoke-test size (a 20-step teacher).
"""

from nrnp.configs import c10_r20


def get_config(arg: str = ''):
    return c10_r20.trained_here(arg, 'cifar_mobilenet_v2', width=0.25, hidden=128)

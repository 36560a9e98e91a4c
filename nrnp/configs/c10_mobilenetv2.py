"""MobileNetV2 (32x32 variant, width 0.25) on CIFAR-10, trained here: pointwise + depthwise.

No public CIFAR-10 MobileNetV2 checkpoint is registered, so the recipe trains its teacher
first (`teacher.checkpoint=''`, cached in W/teacher), then compresses it. Measured numbers
are in benchmarks/results/architectures_cpu.md (filled in below once measured).

  nrnp --config=c10_mobilenetv2 --config.data.image_folder=../shared/data/cifar10-jpeg

`--config=c10_mobilenetv2:tiny` is the smoke-test size (a 20-step teacher).
"""

from nrnp.configs import c10_r20


def get_config(arg: str = ''):
    return c10_r20.trained_here(arg, 'cifar_mobilenet_v2', width=0.25, hidden=128)

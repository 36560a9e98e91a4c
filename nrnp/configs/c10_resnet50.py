"""Bottleneck ResNet50 (32x32 variant, width 0.125) on CIFAR-10, trained here.

No public CIFAR-10 ResNet50 checkpoint is registered, so the recipe trains its teacher
first (`teacher.checkpoint=''`, 1,500 SGD steps, cached in W/teacher), then compresses it
with an h=192 predictor (ratio 0.434: 159,177 params for 366,552 represented, 189,504 of
them pointwise, in 42,496 kernel rows):

  nrnp --config=c10_resnet50 --config.data.image_folder=../shared/data/cifar10-jpeg

Measured on the 2-core CPU, JPEG CIFAR-10 of ../shared, 10,000 test images
(docs/results.md): the teacher's 1,500 steps took 63 min (sharing the CPU with a second
training) and reached 60.68 %. Then, reusing it (`--config.teacher.checkpoint=W/teacher
--config.reconstruct.steps=8000 --config.distill.steps=30`, 10 min): rebuilt 13.73 %,
re-estimated 51.36 %, distilled 52.90 %; artefact 753,699 B (0.493 of the float32
variables; 4-bit PTQ: 60.38 % at 0.170). The full recipe (20,000 + 2,000 steps) needs a
GPU.

`--config=c10_resnet50:tiny` is the smoke-test size (a 20-step teacher).
"""

from nrnp.configs import c10_r20


def get_config(arg: str = ''):
    # h=64 (ratio 0.078) collapsed to 10 % at 4,000 + 60 steps; h=192 is ratio 0.434.
    return c10_r20.trained_here(arg, 'cifar_resnet50', width=0.125, hidden=192)

"""ResNet56 (akamaster, option A) on CIFAR-10, NeRN's h=320 predictor (ratio 0.46).

From nothing, on a connected machine: `nrnp --config=c10_r56` (downloads the CIFAR-10
archive and the akamaster ResNet56, published top-1 93.39 %). Offline, from ../shared:

  python -m nrnp.main --config=configs/c10_r56.py --workdir=/tmp/c10_r56 \
    --config.teacher.checkpoint=../shared/weights/akamaster-cifar10/resnet56-4bfd9763.th \
    --config.data.image_folder=../shared/data/cifar10-jpeg

Its step times on 2 CPU cores (benchmarks/steps.py) and the original's top-1 on the JPEG
test images are in docs/results.md ("Recipes measured"): run the distillation on a GPU.
"""

from nrnp.configs import c10_r20


def get_config(arg: str = ''):
    c = c10_r20.get_config(arg)
    c.teacher.model = 'resnet56'
    c.teacher.checkpoint = 'akamaster_resnet56'
    if not arg:
        c.predictor.hidden = 320
    return c

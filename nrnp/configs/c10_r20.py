"""ResNet20 (akamaster, option A) on CIFAR-10, NeRN's h=180 predictor (ratio 0.533).

From nothing, on a connected machine (downloads cifar-10-binary.tar.gz, 162 MiB, and the
akamaster ResNet20, published top-1 91.73 %, into ~/.cache/nrnp; `nrnp` is the installed
command, `python -m nrnp.main` the same from a checkout):

  nrnp --config=c10_r20

Recipe, on the JPEG copy of CIFAR-10 and the pretrained net in ../shared (offline):

  python -m nrnp.main --config=configs/c10_r20.py --workdir=/tmp/c10_r20 \
    --config.teacher.checkpoint=../shared/weights/akamaster-cifar10/resnet20-12fca82f.th \
    --config.data.image_folder=../shared/data/cifar10-jpeg

With TFDS instead: --config.data.data_dir=DIR holding a prepared ArrayRecord cifar10.

Timed on 2 CPU cores (no GPU): a reconstruction step 25 ms, a distillation step
(256 images) 2.05 s, so the full recipe takes ~1.3 h on that CPU. Measured with
`--config.reconstruct.steps=8000 --config.distill.steps=60` (~8 min there):
original 81.03 %, rebuilt 72.62 % after reconstruction, 79.60 % after
distillation, on the 10,000 JPEG test images (README "Results"). NeRN trains
68,600 steps.
"""

from nrnp.configs import default


def get_config(arg: str = ''):
    c = default.get_config()
    c.teacher.model = 'resnet20'
    c.teacher.shortcut = 'A'
    c.teacher.checkpoint = 'akamaster_resnet20'  # registry name: downloaded when missing
    c.teacher.train_steps = 0  # with checkpoint='', steps to train a teacher here
    c.data.name = 'cifar10'
    c.data.num_classes = 10
    c.data.image_size = 32
    c.data.channels = 3
    c.data.mean = (0.485, 0.456, 0.406)  # what the akamaster nets were trained with
    c.data.std = (0.229, 0.224, 0.225)
    c.data.pad = 4
    c.predictor.hidden = 180
    c.reconstruct.steps = 20_000
    c.reconstruct.batch_size = 4096
    c.distill.steps = 2_000  # ~6 s/step on 2 CPU cores: override on CPU, or use a GPU
    c.distill.batch_size = 256
    if arg == 'tiny':
        c.predictor.hidden = 16
        c.reconstruct.steps = 20
        c.reconstruct.batch_size = 256
        c.data.test_limit = 200
        c.distill.steps = 4
        c.distill.batch_size = 16
        c.distill.kernel_batch_size = 256
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; valid: '' or 'tiny'")
    return c

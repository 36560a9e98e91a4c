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

Its step times on 2 CPU cores and what it measured (after reconstruction, BatchNorm
re-estimation and distillation, at this and smaller budgets) are in docs/results.md
("Recipes measured" and "BatchNorm re-estimation"): distillation steps are slow on a CPU,
so the full recipe belongs on a GPU. NeRN trains 68,600 steps.

Teacher training, when there is no checkpoint: `teacher.checkpoint=''` with
`teacher.train_steps=N` first trains the ResNet20 with the standard CIFAR recipe set
below (SGD momentum 0.9, lr 0.1, batch 128, weight decay 5e-4 on kernels, cosine, crop
pad 4 + flip; 200 epochs are 78,200 steps), cached in W/teacher. On 8 simulated CPU
devices (docs/results.md, "Recipes measured", has what it took and reached):

  XLA_FLAGS='--xla_force_host_platform_device_count=8
    --xla_cpu_collective_call_terminate_timeout_seconds=3600
    --xla_cpu_collective_call_warn_stuck_timeout_seconds=600' \
  python -m nrnp.main --config=configs/c10_r20.py --workdir=W \
    --config.teacher.train_steps=3128 --config.teacher.train_checkpoint_every=500 \
    --config.data.image_folder=../shared/data/cifar10-jpeg \
    --config.reconstruct.steps=2000 --config.distill.steps=20 --config.log_every=100

The compression after it stalled on the 8 simulated devices (no progress and no CPU time
from the first reconstruction steps on), so it was rerun on 1 device, reusing the cached
teacher.
"""

from nrnp.configs import default


def get_config(arg: str = ''):
    c = default.get_config()
    c.teacher.model = 'resnet20'
    c.teacher.shortcut = 'A'
    c.teacher.checkpoint = 'akamaster_resnet20'  # registry name: downloaded when missing
    c.teacher.train_steps = 0  # with checkpoint='', N trains one here (200 epochs: 78,200)
    c.teacher.train_optimizer = 'sgd'  # the standard CIFAR recipe (He et al. 2016)
    c.teacher.train_learning_rate = 0.1
    c.teacher.train_momentum = 0.9
    c.teacher.train_weight_decay = 5e-4
    c.teacher.train_schedule = 'cosine'
    c.teacher.train_batch_size = 128
    c.teacher.train_augment = 'crop_flip'  # pad data.pad = 4, random crop, horizontal flip
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


def trained_here(arg: str, model: str, width: float, hidden: int):
    """c10_r20 for a CIFAR-10 `model` at `width` with no public checkpoint: its teacher is
    trained first (`teacher.checkpoint=''`, 1,500 steps), on CIFAR-10's own statistics."""
    c = get_config(arg)
    c.teacher.model = model
    c.teacher.width = width
    c.teacher.checkpoint = ''
    c.teacher.train_steps = 20 if arg == 'tiny' else 1500
    c.data.mean = (0.4914, 0.4822, 0.4465)
    c.data.std = (0.2023, 0.1994, 0.2010)
    c.predictor.hidden = 16 if arg == 'tiny' else hidden
    if arg == 'tiny':
        c.teacher.train_batch_size = 32
    return c

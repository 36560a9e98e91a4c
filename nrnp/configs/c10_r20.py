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
`--config.reconstruct.steps=8000 --config.distill.steps=60` (~9 min there), on the
10,000 JPEG test images (docs/results.md): original 81.03 %; rebuilt 74.00 % after
reconstruction, 78.64 % once its BatchNorm statistics are re-estimated (256 unlabeled
training images, 4 s, the default `recalibrate` section), 79.09 % after distillation
(79.04 % with `--config.recalibrate.images=0`). 20,000 reconstruction steps alone and the
re-estimation give 80.29 % (77.55 % without it). NeRN trains 68,600 steps.

Teacher training, when there is no checkpoint: `teacher.checkpoint=''` with
`teacher.train_steps=N` first trains the ResNet20 with the standard CIFAR recipe set
below (SGD momentum 0.9, lr 0.1, batch 128, weight decay 5e-4 on kernels, cosine, crop
pad 4 + flip; 200 epochs are 78,200 steps), cached in W/teacher. Measured on the 2-core
CPU shared with other jobs (load average 7-14), 8 simulated devices:

  XLA_FLAGS='--xla_force_host_platform_device_count=8
    --xla_cpu_collective_call_terminate_timeout_seconds=3600
    --xla_cpu_collective_call_warn_stuck_timeout_seconds=600' \
  python -m nrnp.main --config=configs/c10_r20.py --workdir=W \
    --config.teacher.train_steps=3128 --config.teacher.train_checkpoint_every=500 \
    --config.data.image_folder=../shared/data/cifar10-jpeg \
    --config.reconstruct.steps=2000 --config.distill.steps=20 --config.log_every=100

8 epochs (3,128 steps) took 94 min (1.81 s/step, compilation included): top-1 81.28 %
on the 10,000 JPEG test images (the pretrained akamaster net: 81.03 %). The compression
after it stalled on the 8 simulated devices (no progress and no CPU time from the first
reconstruction steps on), so it was rerun on 1 device, reusing the cached teacher: 2,000
reconstruction steps 36.47 %, + 20 distillation steps 52.95 % (6 min); with
`reconstruct.steps=8000 distill.steps=60` (22 min): 75.80 %, + distillation 79.97 %
(the pretrained net at that budget: 72.62 % / 79.60 %).
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

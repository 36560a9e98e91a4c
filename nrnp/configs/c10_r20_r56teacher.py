"""ResNet20 on CIFAR-10 distilled from the larger ResNet56 (the two-phase paper's larger teacher).

The c10_r20 recipe (NeRN's h=180 predictor over ResNet20's convs), but the distillation
phase's teacher is the pretrained akamaster ResNet56 instead of the original ResNet20:
KD on the logits only (`distill.fm_weight=0`: ResNet56's 55 feature maps do not pair
with ResNet20's 19). From nothing, on a connected machine: `nrnp --config=c10_r20_r56teacher`
(downloads both akamaster nets and CIFAR-10). Offline, from ../shared:

  python -m nrnp.main --config=configs/c10_r20_r56teacher.py --workdir=/tmp/r20_r56t \
    --config.teacher.checkpoint=../shared/weights/akamaster-cifar10/resnet20-12fca82f.th \
    --config.distill.teacher_checkpoint=../shared/weights/akamaster-cifar10/resnet56-4bfd9763.th \
    --config.data.image_folder=../shared/data/cifar10-jpeg

The same flags on any recipe give a larger teacher (`distill.teacher_checkpoint`, a file,
URL or registry name; `distill.teacher_model`; `distill.fm_weight=0` across
architectures). Compare at equal budget with self-distillation (c10_r20 with
`--config.distill.fm_weight=0`, or with feature maps as shipped).

Measured on 2 shared CPU cores (other jobs running; wall times are upper bounds) at a
small equal budget, see benchmarks/results/teachers_cpu.md for the commands and numbers.
A distillation step with the ResNet56 teacher costs about one more ResNet56 forward
pass over the batch than self-distillation.
"""

from nrnp.configs import c10_r20


def get_config(arg: str = ''):
    c = c10_r20.get_config(arg)
    c.distill.teacher_checkpoint = 'akamaster_resnet56'  # registry name: downloaded when missing
    c.distill.teacher_model = 'resnet56'
    c.distill.teacher_shortcut = 'A'
    c.distill.fm_weight = 0.0  # feature maps do not pair across depths: KD on the logits
    return c

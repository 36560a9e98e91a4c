"""ImageNet ResNet18 (torchvision naming): NeRN represents the 16 block 3x3 convs, h=1256.

The 7x7 stem, the 1x1 downsample convs, BatchNorm and fc are copied
(`kernels.sizes=(3,)`). Recipe (needs the torchvision checkpoint and a prepared
imagenet2012 ArrayRecord data_dir; nothing is downloaded). The images are streamed:
each process decodes only its rows of each batch (random-resized-crop + flip for
training, the central 87.5 % square resized to 224 for evaluation):

  python -m nrnp.main --config=configs/imagenet_r18.py --workdir=/tmp/r18 \
    --config.teacher.checkpoint=PATH/resnet18-f37072fd.pth --config.data.data_dir=DIR
"""

from nrnp.configs import default


def get_config(arg: str = ''):
    c = default.get_config()
    c.teacher.model = 'resnet18'
    c.teacher.train_steps = 0
    c.data.name = 'imagenet2012'
    c.data.test_split = 'validation'
    c.data.num_classes = 1000
    c.data.image_size = 224
    c.data.channels = 3
    c.data.mean = (0.485, 0.456, 0.406)
    c.data.std = (0.229, 0.224, 0.225)
    c.data.eval_batch_size = 250
    c.data.augment = 'random_resized_crop'
    c.data.streaming = True
    c.data.eval_crop = 'center'
    c.kernels.sizes = (3,)
    c.predictor.hidden = 1256
    c.reconstruct.steps = 100_000
    c.reconstruct.batch_size = 65_536
    if arg == 'tiny':
        c.predictor.hidden = 32
        c.reconstruct.steps = 10
        c.reconstruct.batch_size = 1024
        c.data.test_limit = 16
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; valid: '' or 'tiny'")
    return c

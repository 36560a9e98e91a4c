"""ImageNet ResNet50 (torchvision, V2 weights): every 1x1 and 3x3 conv represented, h=1256.

The bottleneck's 1x1 convs hold 12.1 M of the 23.4 M represented weights; with grouped
1x1 rows (`kernels.pointwise='grouped'`, 9 input channels per row) the kernel table has
2,613,632 rows instead of 13,385,728 (one per 1x1 weight). The 7x7 stem, BatchNorm and fc
are copied. h=1256: 4.75 M predictor params, ratio 0.20. Recipe (needs a prepared
imagenet2012 ArrayRecord data_dir; the checkpoint, torchvision's resnet50-11ad3fa6.pth,
published top-1 80.858 % at resize 232 / crop 224, is downloaded by its registry name):

  python -m nrnp.main --config=configs/imagenet_r50.py --workdir=/tmp/r50 \
    --config.data.data_dir=DIR

`--config.teacher.checkpoint=resnet50_imagenet1k_v1` takes the V1 weights (76.130 %,
crop 224 / 256: also set --config.data.crop_fraction=0.875). Not measured here (no
ImageNet on this machine); `:tiny` is the smoke-test size.
"""

from nrnp.configs import imagenet_r18


def get_config(arg: str = ''):
    c = imagenet_r18.get_config(arg)
    c.teacher.checkpoint = 'resnet50_imagenet1k_v2'  # registry name (nets/registry.py): downloaded
    c.teacher.model = 'resnet50'
    c.data.crop_fraction = 224 / 232  # how the V2 weights are evaluated (resize 232)
    c.kernels.sizes = (1, 3)
    c.kernels.pointwise = 'grouped'
    return c

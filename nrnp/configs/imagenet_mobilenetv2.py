"""ImageNet MobileNetV2 (torchvision, V2 weights): pointwise and depthwise convs, h=320.

97 % of MobileNetV2's 2.19 M represented conv weights are 1x1 (pointwise); its 17
depthwise 3x3 convs are one row per channel. With grouped 1x1 rows the table has 247,240
rows instead of 2,131,904. The classifier and BatchNorm are copied. h=320: 0.39 M
predictor params, ratio 0.18. Recipe (needs a prepared imagenet2012 ArrayRecord
data_dir; torchvision's mobilenet_v2-7ebf99e0.pth, published top-1 72.154 % at resize
232 / crop 224, is downloaded by its registry name):

  python -m nrnp.main --config=configs/imagenet_mobilenetv2.py --workdir=/tmp/mnv2 \
    --config.data.data_dir=DIR

Not measured here (no ImageNet on this machine); `:tiny` is the smoke-test size.
"""

from nrnp.configs import imagenet_r18


def get_config(arg: str = ''):
    c = imagenet_r18.get_config(arg)
    c.teacher.checkpoint = (
        'mobilenet_v2_imagenet1k_v2'  # registry name (nets/registry.py): downloaded
    )
    c.teacher.model = 'mobilenet_v2'
    c.data.crop_fraction = 224 / 232  # how the V2 weights are evaluated (resize 232)
    c.kernels.sizes = (1, 3)
    c.kernels.pointwise = 'grouped'
    if not arg:
        c.predictor.hidden = 320
        c.reconstruct.batch_size = 16_384
    return c

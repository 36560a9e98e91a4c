"""The names and choices of nrnp's settings, each declared once (standard library only).

  from nrnp import choices
  choices.MODEL_NAMES        # every target network `teacher.model` names
  choices.PHASE_KINDS        # what a schedule's phases do

`pipeline.validation` checks every config value against these before any work (it imports
nothing heavy); the modules that act on a choice take its names from here.
"""

# Target networks (`nets.models.build_model`): the CIFAR ResNets of depth 6n + 2, torchvision's
# ImageNet ResNets and MobileNetV2, the 32x32 variants of the two that take a width, a
# small digits CNN.
CIFAR_RESNET_DEPTHS = {
    'resnet20': 20,
    'resnet32': 32,
    'resnet44': 44,
    'resnet56': 56,
    'resnet110': 110,
}
IMAGENET_RESNET_STAGES = {
    'resnet18': (2, 2, 2, 2),
    'resnet34': (3, 4, 6, 3),
    'resnet50': (3, 4, 6, 3),
}
WIDTH_MODELS = ('resnet50', 'mobilenet_v2', 'cifar_resnet50', 'cifar_mobilenet_v2')  # width_mult
IMAGENET_RESNETS = ('resnet18', 'resnet34', 'resnet50')  # `nets.resnet.ARCHITECTURES`
MODEL_NAMES = (*CIFAR_RESNET_DEPTHS, 'resnet18', 'resnet34', *WIDTH_MODELS, 'smallcnn')
SHORTCUTS = ('A', 'B')  # CIFAR ResNets: zero-padded identity or 1x1 conv + BatchNorm

# Data (`data.batching`, `data.sources`, `training.device_data`).
AUGMENTATIONS = ('crop_flip', 'random_resized_crop', 'none')
EVAL_CROPS = ('none', 'center')
ON_DEVICE = ('auto', 'true', 'false')
LOADERS = ('grain', 'threads')
CHANNELS = (1, 3)

# The representation (`core`).
LARGE_KERNELS = ('copy', 'tile')
POINTWISE_LAYOUTS = ('grouped', 'centre')
ORDERINGS = ('none', 'infilter', 'crossfilter', 'separable')
ENCODINGS = ('nern', 'gaussian')
PREDICTOR_INITS = ('torch', 'lecun')
QUANTIZE_MODES = ('none', 'bf16', 'lowbit', *(f'int{b}' for b in range(8, 1, -1)))
EDGE_BITS = (0, *range(8, 1, -1))  # predictor.quantize_edge_bits (0: the mode's)

# Training (`training`).
PHASE_KINDS = ('reconstruct', 'quantize', 'distill', 'recalibrate')
OPTIMIZERS = ('ranger', 'adam', 'adamw')
TEACHER_OPTIMIZERS = ('sgd', 'adam')
TEACHER_SCHEDULES = ('cosine', 'step')
GRAD_THROUGH = ('batch', 'all')
DISTILL_BATCH_NORM = ('running', 'batch')
RECALIBRATE_MODES = ('relative', 'plain')
CALIBRATION_SOURCES = ('auto', 'train', 'noise', 'synthetic')
RECALIBRATE_WHEN = ('reconstruct', 'distill', 'both')
KEEP = ('best', 'last')  # which phase's net the artefact holds (`training.keeping`)

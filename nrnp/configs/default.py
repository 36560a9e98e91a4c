"""The embedded default: compress a small CNN on scikit-learn's handwritten digits, offline.

Recipe (2-core CPU, no GPU, no download: the data ships inside scikit-learn):

  pip install -e . && python -m nrnp.main --config=default --workdir=/tmp/nrnp

trains a small CNN teacher on the 8x8 digits (cached in the workdir), then
compresses its three convs with a predictor and reports the accuracy of the
original and rebuilt nets on the 360 held-out digits. `--config=default:tiny`
is the smoke-test size the tests use.

Every field any nrnp config uses is declared here once, with its meaning, one section per
function below; the other recipes import this file and override a few fields. Settings
no recipe, test or benchmark varies are named constants beside the code that uses them
(e.g. `training.schedule.RECONSTRUCT_OPTIMIZER`, `core.encodings.NERN_BASE`).

  from nrnp.configs import default
  config = default.get_config()          # the digits default
  config = default.get_config('tiny')    # the smoke-test size
"""

import ml_collections


def get_config(arg: str = '') -> ml_collections.ConfigDict:
    """The default config; `arg='tiny'` gives the smoke-test size.

    Args:
      arg: '' (the default) or 'tiny'.

    Returns:
      A ConfigDict holding every field any nrnp config uses.

    Raises:
      ValueError: for another `arg`.
    """
    c = ml_collections.ConfigDict()
    c.seed = 0  # root PRNG seed: predictor init, kernel batches, data order
    for section in (_teacher, _data, _representation, _training, _recalibrate, _run):
        section(c)
    if arg == 'tiny':
        _tiny(c)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; valid: '' or 'tiny'")
    return c


def _teacher(c: ml_collections.ConfigDict) -> None:
    """The target network, loaded or trained (`pipeline.targets`)."""
    c.teacher = ml_collections.ConfigDict()
    # resnet20/32/44/56/110 (CIFAR), resnet18/34/50, mobilenet_v2 (ImageNet, torchvision names),
    # cifar_resnet50, cifar_mobilenet_v2 (their 32x32 variants), smallcnn
    c.teacher.model = 'smallcnn'
    c.teacher.width = 1.0  # channel multiplier (width_mult) of the resnet50/mobilenet_v2 models
    c.teacher.shortcut = 'A'  # CIFAR ResNets: 'A' zero-pad (akamaster) or 'B' 1x1 conv + BN
    c.teacher.checkpoint = ''  # file, orbax dir, https URL or registry name ('' = train one)
    c.teacher.checkpoint_sha256 = ''  # expected sha256 of a checkpoint URL ('' = none/from URL)
    c.teacher.train_steps = 600  # only when checkpoint == '': steps to train a teacher (cached)
    c.teacher.train_optimizer = 'adam'  # teacher training: 'sgd' (momentum 0.9) or 'adam'
    c.teacher.train_learning_rate = 3e-3  # its peak learning rate
    c.teacher.train_schedule = 'cosine'  # 'cosine' (to 0) or 'step' (x0.1 at 50 % and 75 %)
    c.teacher.train_weight_decay = 0.0  # L2 on conv/dense kernels only (not BN, not biases)
    c.teacher.train_batch_size = 128  # images per teacher training step
    # Its augmentation: 'crop_flip' (pad data.pad), 'none', 'random_resized_crop'; '' follows
    # the data: random_resized_crop when data.augment is (images of mixed sizes), else none.
    c.teacher.train_augment = ''
    c.teacher.train_checkpoint_every = 1000  # steps between its checkpoints (W/teacher_checkpoints)


def _data(c: ml_collections.ConfigDict) -> None:
    """The images: where they come from, their size and normalisation, how they are read."""
    c.data = ml_collections.ConfigDict()
    c.data.name = 'digits'  # TFDS name (cifar10, cifar100, imagenet2012, ...) or 'digits'
    c.data.data_dir = ''  # TFDS data_dir or CIFAR archive dir ('' = TFDS default/nrnp cache)
    c.data.download = True  # fetch missing CIFAR archives and checkpoint URLs (False: never)
    c.data.download_url = ''  # mirror URL of the CIFAR archive ('' = the official one)
    c.data.download_sha256 = ''  # its sha256 when not the official archive ('' = official)
    c.data.image_folder = ''  # <root>/<split>/<class>/*.jpg|png; overrides data.name when set
    c.data.train_split = 'train'  # split used for teacher training and distillation
    c.data.test_split = 'test'  # split every accuracy in the report is measured on
    c.data.num_classes = 10  # classes of the target's head
    c.data.image_size = 8  # input height = width
    c.data.channels = 1  # input channels
    c.data.mean = (0.5,)  # normalisation: (x / 255 - mean) / std, per channel
    c.data.std = (0.25,)  # per-channel std of that normalisation
    c.data.test_limit = 0  # evaluate on a seeded, class-balanced subset of N test images (0 = all)
    c.data.eval_batch_size = 500  # images per evaluation forward pass
    c.data.augment = 'crop_flip'  # 'crop_flip' (CIFAR-sized), 'random_resized_crop', 'none'
    c.data.pad = 1  # crop padding in pixels (CIFAR: 4)
    c.data.streaming = False  # True: decode each batch on demand (ImageNet); False: in memory
    # In-memory data on the device (sampling, crop, flip, normalisation and evaluation inside
    # jit): 'auto' when it fits a quarter of the free device memory, 'true', or 'false'.
    c.data.on_device = 'auto'
    c.data.loader = 'grain'  # streamed data: 'grain' (worker processes) or 'threads' (in-process)
    c.data.workers = 0  # grain worker processes (0 = one per core less one)
    c.data.eval_crop = 'none'  # 'none' (as stored) or 'center' (ImageNet evaluation crop)
    c.data.crop_fraction = 0.875  # eval_crop='center': crop side / shorter side (224 of 256)


def _representation(c: ml_collections.ConfigDict) -> None:
    """What is represented, how each kernel is addressed, and the predictor that maps it."""
    c.kernels = ml_collections.ConfigDict()
    c.kernels.sizes = (1, 3)  # spatial kernel sizes that are represented
    c.kernels.exclude = ''  # regex over 'a/b/kernel' paths of convs to copy instead
    c.kernels.large = 'copy'  # kernels bigger than 3x3: 'copy' or 'tile' (3x3 tiles)
    c.kernels.dense = False  # also represent Dense kernels, weights as 1x1 kernels
    # 1x1 (and Dense) kernels: 'grouped' (9 consecutive input channels of a filter per row)
    # or 'centre' (one weight per row in the centre of a 3x3 slot, 8 masked: NeRN's layout)
    c.kernels.pointwise = 'grouped'
    c.kernels.ordering = 'crossfilter'  # 'none' | 'infilter' | 'crossfilter' | 'separable'

    c.encoding = ml_collections.ConfigDict()
    # 'nern' (raw coords, sin/cos pyramid) or 'gaussian' (Fourier features: 120 random
    # frequencies of std 10, `core.encodings`)
    c.encoding.kind = 'nern'
    c.encoding.levels = 40  # nern: levels per coordinate (input = 6 * levels)

    c.predictor = ml_collections.ConfigDict()
    c.predictor.hidden = 64  # width h of the predictor MLP (torch-style init, no skips)
    c.predictor.layers = 5  # Dense layers in total (NeRN: 5)
    # Stored weights: 'none' (float32), 'bf16', 'int8'..'int2' (codes with per-group scales,
    # entropy-coded; biases and copied leaves float16) or 'lowbit' (core.quantize.LOWBIT).
    # Evaluation, re-estimation and distillation see the predictor as stored (docs/method.md).
    c.predictor.quantize = 'int6'
    c.predictor.quantize_group = 8  # inputs per scale group of an int mode (0: per column)
    c.predictor.quantize_edge_bits = 0  # bits of the first and last Dense (0: the mode's)
    # A 'quantize' phase (reconstruction loss through the rounding; Adam, cosine from 1e-4)
    # after the rounds of a run without distillation (which trains through the rounding
    # instead), of this fraction of the reconstruction steps (0: none).
    c.predictor.quantize_fraction = 0.1


def _training(c: ml_collections.ConfigDict) -> None:
    """The two phases that train the predictor (their optimizers' other settings are
    `training.schedule`'s constants)."""
    c.reconstruct = ml_collections.ConfigDict()
    c.reconstruct.steps = 3000  # reconstruction steps in total, split evenly over the rounds
    c.reconstruct.rounds = 1  # progressive rounds: r > 1 fits r - 1's rebuild, fresh predictor
    c.reconstruct.round_hidden = ()  # width per round, e.g. (180, 140); () = predictor.hidden
    c.reconstruct.round_steps = ()  # steps per round; () = reconstruct.steps split evenly
    c.reconstruct.batch_size = 4096  # kernels per gradient batch (capped at the table size)
    c.reconstruct.magnitude_fraction = 0.2  # share of steps with norm-weighted batches
    c.reconstruct.optimizer = 'ranger'  # 'ranger' | 'adam' | 'adamw' (each round starts afresh)
    c.reconstruct.learning_rate = 5e-3  # peak, cosine-decayed per step to 1e-6

    c.distill = ml_collections.ConfigDict()
    c.distill.steps = 300  # distillation steps after the reconstruction rounds (0 = none)
    c.distill.batch_size = 256  # images per step
    c.distill.kernel_batch_size = 4096  # kernels carrying gradient per step
    c.distill.magnitude_fraction = 0.2  # share of norm-weighted kernel batches
    c.distill.grad_through = 'batch'  # 'batch' (NeRN) or 'all' kernels get gradient
    c.distill.kd_weight = 1.0  # KL(teacher || rebuilt) weight (NeRN's stable log(p_S + 1e-4))
    c.distill.fm_weight = 1.0  # normalised feature-map loss weight (0 = off)
    c.distill.reconstruction_weight = 0.0  # RMSE to the original weights (0 = decoupled)
    c.distill.temperature = 1.0  # KD temperature T (loss x T^2)
    c.distill.teacher_checkpoint = ''  # another teacher ('' = the original network)
    c.distill.teacher_model = ''  # its architecture ('' = the target's)
    c.distill.teacher_shortcut = 'A'  # its CIFAR shortcut option
    c.distill.learning_rate = 1e-4  # peak of its Adam, cosine-decayed per step to 1e-6
    # Linear warm-up of that learning rate from 0 over N steps: without it the first steps
    # at the peak lowered top-1 (c10_r20, 3,000 + 60 steps: no warm-up 74.02 %, 20 steps
    # 75.37 %, 50 steps 76.29 %, 100 steps 75.55 %; docs/results.md "Any budget").
    c.distill.warmup_steps = 50
    # What the rebuilt student's BatchNorm normalises with during distillation: 'running' (the
    # run's current statistics, re-estimated when recalibrate is on) or 'batch' (each
    # distillation batch's own statistics, train mode; the running ones stay as they are).
    c.distill.batch_norm = 'running'


def _recalibrate(c: ml_collections.ConfigDict) -> None:
    """BatchNorm re-estimation of the rebuilt network (zero bytes: the artefact stores the
    statistics anyway): train-mode passes over unlabeled calibration images, pooled exactly."""
    c.recalibrate = ml_collections.ConfigDict()
    c.recalibrate.images = 256  # calibration images (0 = off; rounded down to whole batches)
    c.recalibrate.batch_size = 256  # images per forward pass (capped at images)
    # 'relative': stored statistics moved by the shift between the rebuilt and the original
    # network on the same images (works on noise; a channel whose variance moved over 4x
    # takes the plain estimate); 'plain': the rebuilt network's statistics.
    c.recalibrate.mode = 'relative'
    # 'auto': the training split (CLI) or the library's data, else noise; 'train'; 'noise'
    # (seeded standard-normal inputs, no data read); 'synthetic' (noise optimised so every
    # BatchNorm's batch statistics match the stored ones, DeepInversion/ZeroQ style).
    c.recalibrate.source = 'auto'
    # When: 'reconstruct' (after every reconstruction round: distillation then trains
    # against these statistics), 'distill' (after distillation, or after the last round
    # without it), 'both'. Distillation fits the weights to the statistics it saw, so a
    # last re-estimation after it can lose (docs/results.md, "BatchNorm re-estimation").
    c.recalibrate.when = 'reconstruct'
    # During distillation, also re-estimate every N steps (0 = never), so the statistics
    # follow the weights (docs/results.md, "BatchNorm re-estimation").
    c.recalibrate.every = 20
    c.recalibrate.synthetic_steps = 300  # source='synthetic': Adam steps (lr 0.1) on the images


def _run(c: ml_collections.ConfigDict) -> None:
    """How a run is placed, repeated, watched and checkpointed."""
    c.num_devices = 0  # devices in the mesh (0 = all)
    c.model_axis = 1  # mesh 'model' axis: > 1 splits large predictor arrays (FSDP-style)
    c.cycles = 1  # repeat (reconstruction rounds, distillation) this many times
    c.checkpoint_every = 1000  # steps between checkpoints (and at every phase end)
    c.log_every = 200  # progress line every N steps (and at least every 10 s)
    c.eval_every = 0  # also evaluate the rebuilt net every N steps (0 = per phase only)
    c.eval_init = False  # also measure the untrained predictor's top-1 (an extra test pass)
    # 'best': the artefact holds the phase whose net agrees best with the original's
    # predictions on held-out training images (never the test set); 'last': the last phase
    c.keep = 'best'
    # Minutes of wall time for the run (0: the steps as set): a short probe times the steps,
    # then reconstruct.steps and distill.steps (the caps) are set to fit (pipeline.budgets).
    c.budget = 0.0


def _tiny(c: ml_collections.ConfigDict) -> None:
    """The smoke-test size the tests use."""
    c.teacher.train_steps = 60
    c.predictor.hidden = 16
    c.reconstruct.steps = 40
    c.reconstruct.batch_size = 512
    c.distill.steps = 6
    c.distill.batch_size = 32
    c.distill.kernel_batch_size = 512
    c.recalibrate.images = 64
    c.recalibrate.batch_size = 32
    c.checkpoint_every = 5
    c.log_every = 20

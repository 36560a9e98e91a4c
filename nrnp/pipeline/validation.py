"""Every config check in one place, before any work: types, ranges, choices, consistency.

  validation.check(config, style='cli')        # raises errors.ConfigError listing every problem
  validation.check(config, style='library')    # the same, in `nrnp.compress` keyword terms

The command line and `nrnp.compress` both call it before the teacher or any data is
touched (it imports nothing heavy: a bad flag is reported in well under a second). Each
problem names the field as the caller writes it (`--config.reconstruct.steps` or
`reconstruct__steps`), the value and what is allowed.
"""

from __future__ import annotations

import os
import re

from nrnp import choices, errors
from nrnp.configs.catalog import field_name
from nrnp.nets import registry

CHOICES = {  # the enumerated fields and their choices (`nrnp.choices`)
    'teacher.model': choices.MODEL_NAMES,
    'teacher.shortcut': choices.SHORTCUTS,
    'teacher.train_optimizer': choices.TEACHER_OPTIMIZERS,
    'teacher.train_schedule': choices.TEACHER_SCHEDULES,
    'data.augment': choices.AUGMENTATIONS,
    'data.eval_crop': choices.EVAL_CROPS,
    'data.on_device': choices.ON_DEVICE,
    'data.loader': choices.LOADERS,
    'data.channels': choices.CHANNELS,
    'kernels.large': choices.LARGE_KERNELS,
    'kernels.pointwise': choices.POINTWISE_LAYOUTS,
    'kernels.ordering': choices.ORDERINGS,
    'encoding.kind': choices.ENCODINGS,
    'predictor.quantize': choices.QUANTIZE_MODES,
    'predictor.quantize_edge_bits': choices.EDGE_BITS,
    'reconstruct.optimizer': choices.OPTIMIZERS,
    'distill.grad_through': choices.GRAD_THROUGH,
    'distill.teacher_model': ('', *choices.MODEL_NAMES),
    'distill.teacher_shortcut': choices.SHORTCUTS,
    'distill.batch_norm': choices.DISTILL_BATCH_NORM,
    'recalibrate.mode': choices.RECALIBRATE_MODES,
    'recalibrate.source': choices.CALIBRATION_SOURCES,
    'recalibrate.when': choices.RECALIBRATE_WHEN,
    'keep': choices.KEEP,
}
AT_LEAST = {  # field: smallest allowed value
    **dict.fromkeys(
        (
            'seed',
            'reconstruct.steps',
            'distill.steps',
            'teacher.train_steps',
            'data.test_limit',
            'data.pad',
            'data.workers',
            'checkpoint_every',
            'eval_every',
            'num_devices',
            'distill.kd_weight',
            'distill.fm_weight',
            'distill.reconstruction_weight',
            'distill.warmup_steps',
            'budget',
            'recalibrate.images',
            'recalibrate.every',
            'recalibrate.synthetic_steps',
            'predictor.quantize_group',
            'predictor.quantize_fraction',
        ),
        0,
    ),
    **dict.fromkeys(
        (
            'predictor.hidden',
            'reconstruct.rounds',
            'reconstruct.batch_size',
            'distill.batch_size',
            'distill.kernel_batch_size',
            'teacher.train_batch_size',
            'data.num_classes',
            'data.image_size',
            'data.eval_batch_size',
            'encoding.levels',
            'cycles',
            'log_every',
            'model_axis',
            'recalibrate.batch_size',
        ),
        1,
    ),
    'predictor.layers': 2,
}
POSITIVE = (
    'teacher.width',
    'reconstruct.learning_rate',
    'distill.learning_rate',
    'teacher.train_learning_rate',
    'distill.temperature',
)
FRACTIONS = {  # field: (low, high, high included)
    'reconstruct.magnitude_fraction': (0.0, 1.0, True),
    'distill.magnitude_fraction': (0.0, 1.0, True),
}


def _get(config, dotted: str):
    node = config
    for part in dotted.split('.'):
        node = node[part]
    return node


def _is_remote(spec: str) -> bool:
    return spec.startswith(('https://', 'http://'))


def _looks_like_a_path(spec: str) -> bool:
    return os.sep in spec or spec.startswith('.') or bool(os.path.splitext(spec)[1])


def problems(config, style: str = 'cli') -> list[str]:
    """Every problem of `config`, one line each (empty when it is fine)."""
    out = []

    def bad(dotted, value, allowed):
        out.append(f'{field_name(dotted, style)}={value!r}: {allowed}')

    _value_problems(config, bad)
    _data_problems(config.data, bad)
    _round_problems(config, bad)
    sizes = tuple(config.kernels.sizes)
    if not sizes or any(not isinstance(k, int) or k < 1 for k in sizes):
        bad('kernels.sizes', sizes, 'must be one or more kernel sizes >= 1, e.g. (1, 3)')
    try:
        re.compile(config.kernels.exclude)
    except re.error as e:
        bad('kernels.exclude', config.kernels.exclude, f'is not a regular expression ({e})')
    if config.teacher.width != 1.0 and config.teacher.model not in choices.WIDTH_MODELS:
        models = ', '.join(choices.WIDTH_MODELS)
        bad(
            'teacher.width',
            config.teacher.width,
            f'only {models} have a width multiplier; 1.0 for the others',
        )
    d = config.distill
    if d.teacher_model and not d.teacher_checkpoint:
        bad('distill.teacher_model', d.teacher_model, 'needs distill.teacher_checkpoint too')
    r = config.recalibrate
    if r.mode == 'plain' and r.source == 'noise':
        bad(
            'recalibrate.mode',
            r.mode,
            'on noise measures the statistics of noise, not of images (docs/results.md, '
            "BatchNorm re-estimation): use mode 'relative', or source 'train' or 'synthetic'",
        )
    if style == 'cli':
        out += _input_problems(config)
    return out


def _value_problems(config, bad) -> None:
    """The enumerated fields, the lower bounds, the positive and the fractional fields."""

    def value(dotted, otherwise):
        try:
            return _get(config, dotted)
        except (KeyError, AttributeError):  # a partial config: its absence is not this check's
            return otherwise

    for dotted, allowed in CHOICES.items():
        if value(dotted, allowed[0]) not in allowed:
            bad(dotted, _get(config, dotted), f'must be one of {", ".join(map(repr, allowed))}')
    for dotted, low in AT_LEAST.items():
        v = value(dotted, low)
        if isinstance(v, bool) or not isinstance(v, int | float) or v < low:
            bad(dotted, v, f'must be a number >= {low}')
    for dotted in POSITIVE:
        v = value(dotted, 1)
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
            bad(dotted, v, 'must be a number > 0')
    for dotted, (low, high, closed) in FRACTIONS.items():
        v = value(dotted, low)
        if not (low <= v <= high if closed else low <= v < high):
            bad(dotted, v, f'must be in [{low}, {high}{"]" if closed else ")"}')


def _data_problems(data, bad) -> None:
    """The crop fraction and the normalisation of the `data` section."""
    if not 0 < data.crop_fraction <= 1:
        bad('data.crop_fraction', data.crop_fraction, 'must be in (0, 1]')
    for name in ('mean', 'std'):
        values = tuple(data[name])
        if len(values) not in (1, data.channels):
            bad(f'data.{name}', values, f'needs 1 or data.channels={data.channels} values')
    if any(s <= 0 for s in data.std):
        bad('data.std', tuple(data.std), 'every value must be > 0')


def _round_problems(config, bad) -> None:
    """Progressive rounds: per-round widths and steps agree with each other and the run."""
    rc = config.reconstruct
    widths, steps = tuple(rc.round_hidden), tuple(rc.round_steps)
    for dotted, values in (
        ('reconstruct.round_hidden', widths),
        ('reconstruct.round_steps', steps),
    ):
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            bad(dotted, values, 'must be whole numbers >= 1, one per round, e.g. (180, 140)')
    if widths and steps and len(widths) != len(steps):
        bad('reconstruct.round_steps', steps, f'needs one entry per round of round_hidden {widths}')
    given = len(widths) or len(steps)
    if given and rc.rounds not in (1, given):
        bad(
            'reconstruct.rounds',
            rc.rounds,
            f'disagrees with the {given} rounds of round_hidden/steps',
        )
    if widths and not steps and 0 < rc.steps < len(widths):
        bad('reconstruct.steps', rc.steps, f'gives a round of {widths} no step: at least one each')
    if widths and config.cycles > 1 and len(set(widths)) > 1:
        bad(
            'reconstruct.round_hidden',
            widths,
            f'changes width, which cycles={config.cycles} cannot repeat: one width or cycles=1',
        )


def _input_problems(config) -> list[str]:
    """The command line's inputs: checkpoint and data locations that must exist."""
    out = []
    t, data = config.teacher, config.data
    if not t.checkpoint and t.train_steps == 0:
        out.append(
            '--config.teacher.checkpoint is empty and --config.teacher.train_steps is 0: give '
            'a checkpoint (a file, orbax dir, https URL or registry name) or steps to train one'
        )
    for dotted in ('teacher.checkpoint', 'distill.teacher_checkpoint'):
        spec = _get(config, dotted)
        if not spec or _is_remote(spec) or os.path.exists(os.path.expanduser(spec)):
            continue
        if _looks_like_a_path(spec):
            out.append(f'--config.{dotted}={spec!r}: no such file or directory')
        elif spec not in registry.ENTRIES:
            out.append(
                f'--config.{dotted}={spec!r}: neither a file, an https URL nor a registered '
                f'checkpoint ({", ".join(registry.names())})'
            )
    if data.image_folder and not os.path.isdir(os.path.expanduser(data.image_folder)):
        out.append(
            f'--config.data.image_folder={data.image_folder!r}: no such directory (expected '
            '<root>/<split>/<class>/*.jpg)'
        )
    if data.eval_crop == 'center' and data.augment == 'crop_flip' and data.streaming:
        out.append(
            "--config.data.augment='crop_flip' with streamed, centre-cropped data: use "
            '--config.data.augment=random_resized_crop (images of any size)'
        )
    return out


def check(config, style: str = 'cli') -> None:
    """Raises errors.ConfigError listing every problem of `config` (see `problems`)."""
    found = problems(config, style)
    if found:
        head = 'the config has a problem' if len(found) == 1 else f'{len(found)} config problems'
        raise errors.ConfigError(head + ':\n  ' + '\n  '.join(found))

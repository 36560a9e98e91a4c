"""Command line: `python -m nrnp.main --config=configs/c10_r20.py --workdir=W [--config.x.y=v]`.

Parses flags, hides GPUs from TensorFlow (when it is installed), and calls
`nrnp.pipeline.job.run`, which writes `W/report.json` and `W/report.md`.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Config file (configs/*.py[:tiny]).', lock_config=True
)
flags.DEFINE_string('workdir', None, 'Directory for the report, logs and checkpoints.')
flags.mark_flags_as_required(['config', 'workdir'])


def _hide_gpus_from_tensorflow():
    if 'tensorflow' not in sys.modules:
        return  # never import TensorFlow just for this
    import tensorflow as tf

    tf.config.experimental.set_visible_devices([], 'GPU')


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    _hide_gpus_from_tensorflow()
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    from nrnp.pipeline import job
    from nrnp.training import sharding

    sharding.maybe_initialize_distributed()
    job.run(FLAGS.config, FLAGS.workdir)


def run():
    """Console entry point (`nrnp --config=... --workdir=...`)."""
    app.run(main)


if __name__ == '__main__':
    run()

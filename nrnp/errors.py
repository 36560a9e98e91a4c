"""The errors nrnp raises on purpose, each with the exit status the command line uses.

  raise DataError('cifar100 is not in /data: ...; set --config.data.data_dir=DIR')
  except NrnpError as e: sys.exit(e.exit_code)   # what nrnp.main does, without a traceback

Every expected failure is an `NrnpError`: bad input (config, checkpoint, data, workdir,
artefact, download) exits with status 2, a run that fails on its own (non-finite
values) with 1, and a run stopped by SIGTERM or SIGINT after writing its checkpoint with
75 (EX_TEMPFAIL: "run the same command again"). The bad-input errors also subclass
`ValueError`, so code written against the older `ValueError`s keeps working.
"""

from __future__ import annotations

EXIT_FAILURE = 1  # a runtime failure (non-finite values, an internal error)
EXIT_BAD_INPUT = 2  # config, checkpoint, data, workdir, artefact or download problem
EXIT_PREEMPTED = 75  # SIGTERM/SIGINT: checkpoint written, rerun the command to resume
EXIT_INTERRUPTED = 130  # a second Ctrl-C: exited at once, without a new checkpoint


class NrnpError(Exception):
    """Base of nrnp's expected errors; `str(e)` is a complete message (what, where, fix)."""

    exit_code = EXIT_FAILURE


class BadInput(NrnpError, ValueError):
    """Something the user gave is wrong; the message says which and how to fix it."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(BadInput):
    """A config field has a wrong type, range or value, or fields contradict each other."""


class DataError(BadInput):
    """Input data is missing or malformed; the message names the path and the fix."""


class DownloadError(DataError):
    """A download failed, was refused offline, or did not match its checksum."""


class CheckpointError(BadInput):
    """A checkpoint is missing, malformed, unsafe, or does not match the model."""


class ArtifactError(BadInput):
    """A `.nrnp` file is missing, truncated, foreign or of an unsupported version."""


class WorkdirError(BadInput):
    """The workdir holds another run (different config, inputs or nrnp version)."""


class NonFiniteError(NrnpError, FloatingPointError):
    """A loss or an input weight is NaN or infinite; the message names where."""


class Preempted(NrnpError):
    """SIGTERM or SIGINT stopped the run after its checkpoint was written."""

    exit_code = EXIT_PREEMPTED

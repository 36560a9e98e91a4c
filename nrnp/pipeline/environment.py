"""The process around a command-line run: its locale, the libraries' logging, TensorFlow's GPUs.

  environment.safe_printing()              # a C locale: print any character (escaped)
  environment.check_locale([*args, workdir])   # errors.ConfigError for paths it cannot encode
  environment.quiet_libraries(debug=False)  # orbax's and asyncio's logging off unless --debug
  message, status = environment.unexpected(e)   # any other exception, in one line

Standard library only at import (the command line calls it before JAX is imported).
"""

from __future__ import annotations

import codecs
import logging
import os
import sys

from nrnp import errors, signals


def utf8() -> bool:
    """Whether file names are encoded as UTF-8."""
    return codecs.lookup(sys.getfilesystemencoding()).name == 'utf-8'


def locale_variables() -> str:
    """The locale's environment variables as set, e.g. 'LC_ALL=C, LANG=C'."""
    names = ('LC_ALL', 'LC_CTYPE', 'LANG', 'PYTHONUTF8', 'PYTHONCOERCECLOCALE')
    shown = [f'{n}={os.environ[n]}' for n in names if n in os.environ]
    return ', '.join(shown) or 'no LANG or LC_* set'


def safe_printing() -> None:
    """Under a locale without UTF-8, printing a character it cannot encode never fails."""
    if utf8():
        return
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, 'reconfigure'):
            stream.reconfigure(errors='backslashreplace')


def check_locale(texts) -> None:
    """Refuses non-ASCII paths where the locale cannot encode them (LC_ALL=C, no UTF-8).

    Raises:
      errors.ConfigError: naming the text, the locale and the fix.
    """
    if utf8():
        return
    for text in texts:
        if not text.isascii():
            raise errors.ConfigError(
                f'{text!r} is not ASCII, but the locale encodes file names as '
                f'{sys.getfilesystemencoding()} ({locale_variables()}): set LC_ALL=C.UTF-8 '
                '(or PYTHONUTF8=1) and rerun'
            )


def quiet_libraries(debug: bool) -> None:
    """Orbax logs every checkpoint at INFO and, on a full disk, dozens of tracebacks (absl
    and asyncio loggers, TensorStore callbacks in other threads): nrnp's one-line message
    says what happened; --debug shows them all."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING if debug else absl_logging.FATAL)
    logging.getLogger('asyncio').setLevel(logging.WARNING if debug else logging.CRITICAL)
    if not debug:  # TensorStore's callbacks into orbax's closed event loop, after a failure
        sys.unraisablehook = lambda unraisable: None


def hide_gpus_from_tensorflow() -> None:
    """TensorFlow (when something imported it) must not take the GPUs JAX uses."""
    if 'tensorflow' not in sys.modules:
        return  # never import TensorFlow just for this
    import tensorflow as tf

    tf.config.experimental.set_visible_devices([], 'GPU')


def multi_process_launch() -> bool:
    """Whether a launcher started this process as one of several (SLURM with more than one
    task, a Cloud TPU pod slice, or an explicit `JAX_COORDINATOR_ADDRESS`)."""
    slurm = int(os.environ.get('SLURM_NTASKS', '1')) > 1
    tpu_pod = len(os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1
    return slurm or tpu_pod or bool(os.environ.get('JAX_COORDINATOR_ADDRESS'))


def unexpected(e: Exception) -> tuple[str, int]:
    """The command line's one line and exit status for an exception no nrnp error class
    names: a full or read-only disk and a locale that cannot encode a name are bad input
    (2, with the fix), anything else a bug (1)."""
    text = (str(e).strip().splitlines() or [''])[0][:400]
    number = errors.storage_errno(e, errors.FULL_OR_READ_ONLY)
    if number is not None:
        where = signals.workdir() or os.getcwd()
        return (
            f'error: a write failed: {errors.reason(number, where)} ({text}); free some space '
            'or choose a writable --workdir, then rerun the same command (it resumes from the '
            'last checkpoint)'
        ), errors.EXIT_BAD_INPUT
    if isinstance(e, UnicodeError) and not utf8():
        return (
            f'error: {text}: the locale encodes text as {sys.getfilesystemencoding()} '
            f'({locale_variables()}); set LC_ALL=C.UTF-8 (or PYTHONUTF8=1) and rerun'
        ), errors.EXIT_BAD_INPUT
    return (
        f'internal error: {type(e).__name__}: {e}\n'
        '  This is a bug in nrnp; rerun with --debug for the traceback and report it.'
    ), errors.EXIT_FAILURE

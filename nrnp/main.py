"""Command line: `nrnp --config=c100 [--workdir=W] [--config.x.y=v] [--overwrite] [--debug]`.

  python -m nrnp.main --config=configs/c10_r20.py:tiny --workdir=/tmp/r20
  nrnp --config=c100                 # a shipped recipe, from any directory
  nrnp fields                        # every config field, its default and meaning
  nrnp --help

Parses the flags, checks the config and that the workdir can be written before any work
(`pipeline.validation`, `pipeline.locks`), hides GPUs from TensorFlow (when it is
installed) and calls `nrnp.pipeline.job.run`, which writes `W/report.json`, `W/report.md`
and `W/compressed.nrnp`. Expected failures print one short message and exit with a
documented status (`nrnp.errors`: 2 bad input, a full or read-only disk included, 1
runtime failure, 75 stopped by SIGTERM/Ctrl-C at any time, 130 a second Ctrl-C); the
traceback, and the logging of the libraries (orbax), only with `--debug` or `NRNP_DEBUG=1`.
"""

from __future__ import annotations

import codecs
import logging
import os
import signal
import sys
import threading
import time

from nrnp import errors
from nrnp.configs import catalog

_WORKDIR: list[str] = []  # the run's workdir once known, for the message of an interrupt
_PENDING: list[int] = []  # a signal raised as an exception that `run` has not seen yet

USAGE = """\
usage: nrnp --config=RECIPE[:tiny] [--workdir=DIR] [--config.SECTION.FIELD=VALUE ...]
            [--overwrite] [--debug]
       nrnp fields          list every config field with its default and meaning
       nrnp --help

Compresses a trained CNN's conv weights into a small predictor MLP (NeRN and the
two-phase scheme of arXiv 2407.00356) and reports the accuracy of the original and
the rebuilt network.

  --config     a shipped recipe name or a config file (configs/*.py), optionally
               followed by ':tiny' (the smoke-test size). Recipes:
{recipes}
  --workdir    where the run writes (default: runs/<recipe>[-<arg>] in the current
               directory). Rerunning the same command resumes; a workdir holding
               another run is refused (--overwrite replaces nrnp's files there).
  --config.X   override any field, e.g. --config.predictor.hidden=160
               --config.reconstruct.steps=20000 --config.data.image_folder=DIR
  --overwrite  replace the run in --workdir (checkpoints, artefact, reports)
  --debug      show tracebacks (also NRNP_DEBUG=1)

Most used fields:
  teacher.checkpoint   file, orbax dir, https URL or registry name ('' = train one)
  data.image_folder    <root>/{{train,test}}/<class>/*.jpg instead of data.name
  data.data_dir        where datasets are cached or prepared
  predictor.hidden     predictor width h (the compression ratio)
  reconstruct.steps    reconstruction steps; distill.steps: distillation steps

Exit status: 0 done, 1 runtime failure, 2 bad input (a read-only or full disk too),
75 stopped by SIGTERM/Ctrl-C (rerun the same command: it resumes from the last
checkpoint, or starts when there is none yet), 130 second Ctrl-C.
"""


def _usage() -> str:
    listed = catalog.recipes()
    width = max(len(name) for name, _ in listed) + 2
    recipes = '\n'.join(f'                 {name:<{width}}{doc}' for name, doc in listed)
    return USAGE.format(recipes=recipes)


def _print_fields() -> None:
    for name, default, meaning in catalog.fields():
        print(f'{name} = {default}' + (f'  # {meaning}' if meaning else ''))


def _hide_gpus_from_tensorflow():
    if 'tensorflow' not in sys.modules:
        return  # never import TensorFlow just for this
    import tensorflow as tf

    tf.config.experimental.set_visible_devices([], 'GPU')


def _parse(argv: list[str]):
    """(config, workdir, overwrite) from the command line; errors.ConfigError on bad flags."""
    from absl import flags
    from ml_collections import config_flags

    argv, spec = catalog.resolve_config_flag(argv)
    sys.argv = list(argv)  # config_flags reads its --config.x=v overrides from sys.argv
    fl = flags.FlagValues()
    config_flags.DEFINE_config_file(
        'config', None, 'Recipe or config file [:tiny].', flag_values=fl, lock_config=True
    )
    flags.DEFINE_string('workdir', None, 'Run directory.', flag_values=fl)
    flags.DEFINE_boolean('overwrite', False, 'Replace the run in --workdir.', flag_values=fl)
    flags.DEFINE_boolean('debug', False, 'Show tracebacks.', flag_values=fl)
    catalog.check_overrides(argv, spec)
    try:
        rest = fl(argv)
    except flags.Error as e:
        raise errors.ConfigError(f'{e}; `nrnp --help` shows the flags') from None
    if len(rest) > 1:
        raise errors.ConfigError(
            f'unexpected arguments {rest[1:]}; flags are written --name=value (`nrnp --help`)'
        )
    workdir = fl.workdir or os.path.join('runs', spec.run_name)
    return fl.config, workdir, fl.overwrite, fl.workdir is None


def _utf8() -> bool:
    return codecs.lookup(sys.getfilesystemencoding()).name == 'utf-8'


def _check_locale(texts) -> None:
    """Refuses non-ASCII paths where the locale cannot encode them (LC_ALL=C, no UTF-8)."""
    if _utf8():
        return
    for text in texts:
        if not text.isascii():
            raise errors.ConfigError(
                f'{text!r} is not ASCII, but the locale encodes file names as '
                f'{sys.getfilesystemencoding()} ({_locale_variables()}): set LC_ALL=C.UTF-8 '
                '(or PYTHONUTF8=1) and rerun'
            )


def _locale_variables() -> str:
    names = ('LC_ALL', 'LC_CTYPE', 'LANG', 'PYTHONUTF8', 'PYTHONCOERCECLOCALE')
    shown = [f'{n}={os.environ[n]}' for n in names if n in os.environ]
    return ', '.join(shown) or 'no LANG or LC_* set'


def main(argv: list[str]) -> int:
    """Runs the command line `argv` (argv[0] is the program); returns the exit status."""
    _WORKDIR.clear()
    args = argv[1:]
    if not args or {'-h', '--help', '-help', '--helpfull', '--helpshort'} & set(args):
        print(_usage(), end='')
        return 0 if args else errors.EXIT_BAD_INPUT
    if args[0] == 'fields':
        _print_fields()
        return 0
    config, workdir, overwrite, default = _parse([argv[0], *(a for a in args if a != '--debug')])
    from nrnp.pipeline import fetching, locks, validation

    validation.check(config, style='cli')
    _check_locale([*args, os.path.abspath(workdir)])
    locks.check_location(workdir, locks.location_fix('cli', default))  # leaves nothing
    _WORKDIR[:] = [os.path.abspath(workdir)]
    fetching.fetch_inputs(config, log=lambda message: print(message, flush=True))
    _hide_gpus_from_tensorflow()
    from nrnp.pipeline import job
    from nrnp.training import sharding

    sharding.maybe_initialize_distributed()
    job.run(config, workdir, overwrite=overwrite)
    return 0


def _fail(message: str, status: int) -> int:
    sys.stdout.flush()
    print(f'nrnp: {message}', file=sys.stderr)
    return status


def _quiet_libraries(debug: bool) -> None:
    """Orbax logs every checkpoint at INFO and, on a full disk, dozens of tracebacks (absl
    and asyncio loggers, TensorStore callbacks in other threads): nrnp's one-line message
    says what happened; --debug shows them all."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING if debug else absl_logging.FATAL)
    logging.getLogger('asyncio').setLevel(logging.WARNING if debug else logging.CRITICAL)
    if not debug:  # TensorStore's callbacks into orbax's closed event loop, after a failure
        sys.unraisablehook = lambda unraisable: None


def _on_signal(main_pid: int):
    """SIGTERM raises `errors.Interrupted`, SIGINT `KeyboardInterrupt`, wherever the run is."""

    def handle(signum, frame):
        del frame
        if os.getpid() != main_pid:  # a forked worker: die as the signal says
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            os._exit(128 + signum)
        if not _PENDING:
            _PENDING.append(signum)
            threading.Thread(target=_redeliver, args=(signum,), daemon=True).start()
        raise errors.Interrupted('SIGTERM') if signum == signal.SIGTERM else KeyboardInterrupt

    return handle


def _redeliver(signum: int) -> None:
    """Sends `signum` again every 0.5 s until `run` has seen it: raised inside a garbage
    collection callback (JAX has one), a handler's exception is swallowed as unraisable."""
    while _PENDING:
        time.sleep(0.5)
        if _PENDING:
            os.kill(os.getpid(), signum)


def _stopped(e: KeyboardInterrupt) -> str:
    """The one line for SIGTERM or Ctrl-C outside the training loop (which has its own)."""
    name = e.signal_name if isinstance(e, errors.Interrupted) else 'Ctrl-C (SIGINT)'
    last = None
    if _WORKDIR:
        from nrnp.pipeline import workdirs

        last = workdirs.last_checkpoint(_WORKDIR[0])
    if last:
        return (
            f'stopped by {name}: the last checkpoint {last} stays; run the same command again '
            'to resume'
        )
    return (
        f'stopped by {name} before the first checkpoint: nothing to save yet; run the same '
        'command again to start'
    )


def run(argv: list[str] | None = None) -> None:
    """Console entry point (`nrnp ...`): `main` with one-line errors and exit statuses.

    SIGTERM raises `errors.Interrupted` (a KeyboardInterrupt) wherever the run is, so it
    unwinds like Ctrl-C: temporary files are removed, and the exit status is 75 with one
    line saying whether a checkpoint stays. Inside the training loop `interrupts` catches
    both signals first and writes a checkpoint. A signal whose exception was swallowed
    (raised inside a garbage-collection callback) is delivered again (`_redeliver`).
    """
    argv = list(sys.argv if argv is None else argv)
    debug = '--debug' in argv or os.environ.get('NRNP_DEBUG', '') not in ('', '0')
    if not _utf8():  # a C locale: never fail on printing a character
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, 'reconfigure'):
                stream.reconfigure(errors='backslashreplace')
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, _on_signal(os.getpid()))
    try:
        _quiet_libraries(debug)
        status = main(argv)
    except errors.Preempted as e:
        status = _fail(f'stopped: {e}', e.exit_code)
    except errors.NrnpError as e:
        if debug:
            raise
        status = _fail(f'error: {e}', e.exit_code)
    except KeyboardInterrupt as e:
        _stopping()
        if debug:
            raise
        _fail(_stopped(e), errors.EXIT_PREEMPTED)
        sys.stderr.flush()
        # Interrupted inside JAX (a compilation, say), interpreter shutdown can crash (139):
        # everything is unwound and written, so leave without it.
        os._exit(errors.EXIT_PREEMPTED)
    except Exception as e:  # a bug, or the environment: say so, briefly
        if debug:
            raise
        status = _fail(_unexpected(e), _unexpected_status(e))
    finally:
        _stopping()
    sys.exit(status)


def _stopping() -> None:
    """Exiting already: further SIGTERMs and Ctrl-Cs wait, no signal is sent again."""
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, signal.SIG_IGN)
    _PENDING.clear()


def _unexpected_status(e: Exception) -> int:
    if errors.storage_errno(e, errors.FULL_OR_READ_ONLY) is not None:
        return errors.EXIT_BAD_INPUT
    if isinstance(e, UnicodeError) and not _utf8():
        return errors.EXIT_BAD_INPUT
    return errors.EXIT_FAILURE


def _unexpected(e: Exception) -> str:
    """A full or read-only disk, a locale that cannot encode a name, else a bug."""
    text = (str(e).strip().splitlines() or [''])[0][:400]
    number = errors.storage_errno(e, errors.FULL_OR_READ_ONLY)
    if number is not None:
        where = _WORKDIR[0] if _WORKDIR else os.getcwd()
        return (
            f'error: a write failed: {errors.reason(number, where)} ({text}); free some space '
            'or choose a writable --workdir, then rerun the same command (it resumes from the '
            'last checkpoint)'
        )
    if isinstance(e, UnicodeError) and not _utf8():
        return (
            f'error: {text}: the locale encodes text as {sys.getfilesystemencoding()} '
            f'({_locale_variables()}); set LC_ALL=C.UTF-8 (or PYTHONUTF8=1) and rerun'
        )
    return (
        f'internal error: {type(e).__name__}: {e}\n'
        '  This is a bug in nrnp; rerun with --debug for the traceback and report it.'
    )


if __name__ == '__main__':
    run()

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

import os
import sys

from nrnp import errors, signals

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
    from nrnp.configs import catalog

    listed = catalog.recipes()
    width = max(len(name) for name, _ in listed) + 2
    recipes = '\n'.join(f'                 {name:<{width}}{doc}' for name, doc in listed)
    return USAGE.format(recipes=recipes)


def _print_fields() -> None:
    from nrnp.configs import catalog

    for name, default, meaning in catalog.fields():
        print(f'{name} = {default}' + (f'  # {meaning}' if meaning else ''))


def _parse(argv: list[str]):
    """(config, workdir, overwrite) from the command line; errors.ConfigError on bad flags."""
    from absl import flags
    from ml_collections import config_flags

    from nrnp.configs import catalog

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


def main(argv: list[str]) -> int:
    """Runs the command line `argv` (argv[0] is the program); returns the exit status."""
    args = argv[1:]
    if not args or {'-h', '--help', '-help', '--helpfull', '--helpshort'} & set(args):
        print(_usage(), end='')
        return 0 if args else errors.EXIT_BAD_INPUT
    if args[0] == 'fields':
        _print_fields()
        return 0
    config, workdir, overwrite, default = _parse([argv[0], *(a for a in args if a != '--debug')])
    signals.set_workdir(os.path.abspath(workdir))  # the exit line names its last checkpoint
    from nrnp.pipeline import environment, fetching, locks, validation

    validation.check(config, style='cli')
    environment.check_locale([*args, os.path.abspath(workdir)])
    locks.check_location(workdir, locks.location_fix('cli', default))  # leaves nothing
    if not environment.multi_process_launch():  # refused before paying for JAX's import
        locks.refuse_if_held(workdir)
    fetching.fetch_inputs(config, log=lambda message: print(message, flush=True))
    environment.hide_gpus_from_tensorflow()
    from nrnp.pipeline import job
    from nrnp.training import sharding

    sharding.maybe_initialize_distributed()
    job.run(config, workdir, overwrite=overwrite)
    return 0


def _fail(message: str, status: int) -> int:
    sys.stdout.flush()
    print(f'nrnp: {message}', file=sys.stderr)
    return status


def run(argv: list[str] | None = None) -> None:
    """Console entry point (`nrnp ...`): `main` with one-line errors and exit statuses.

    The signal handler comes first (`nrnp.signals`): SIGTERM and Ctrl-C at any instant end
    in exit status 75 and one line. Raised as `signals.Interrupted` (SIGTERM) or
    KeyboardInterrupt, they unwind the run (temporary files removed) to here; inside the
    training loop `training.interrupts` catches both first and writes a checkpoint.
    """
    signals.install()
    argv = list(sys.argv if argv is None else argv)
    debug = '--debug' in argv or os.environ.get('NRNP_DEBUG', '') not in ('', '0')
    try:
        from nrnp.pipeline import environment

        environment.safe_printing()
        environment.quiet_libraries(debug)
        status = main(argv)
    except errors.Preempted as e:
        status = _fail(f'stopped: {e}', e.exit_code)
    except errors.NrnpError as e:
        if debug:
            raise
        status = _fail(f'error: {e}', e.exit_code)
    except KeyboardInterrupt as e:
        signals.seen()
        if debug:
            raise
        # Interrupted inside JAX (a compilation, say), interpreter shutdown can crash (139):
        # everything is unwound and written, so leave without it.
        signals.leave(signals.name_of(e))
    except Exception as e:  # a bug, or the environment: say so, briefly
        if debug:
            raise
        status = _fail(_unexpected(e), _unexpected_status(e))
    finally:
        signals.seen()
    sys.exit(status)


def _unexpected_status(e: Exception) -> int:
    from nrnp.pipeline import environment

    if errors.storage_errno(e, errors.FULL_OR_READ_ONLY) is not None:
        return errors.EXIT_BAD_INPUT
    if isinstance(e, UnicodeError) and not environment.utf8():
        return errors.EXIT_BAD_INPUT
    return errors.EXIT_FAILURE


def _unexpected(e: Exception) -> str:
    """A full or read-only disk, a locale that cannot encode a name, else a bug."""
    from nrnp.pipeline import environment

    text = (str(e).strip().splitlines() or [''])[0][:400]
    number = errors.storage_errno(e, errors.FULL_OR_READ_ONLY)
    if number is not None:
        where = signals.workdir() or os.getcwd()
        return (
            f'error: a write failed: {errors.reason(number, where)} ({text}); free some space '
            'or choose a writable --workdir, then rerun the same command (it resumes from the '
            'last checkpoint)'
        )
    if isinstance(e, UnicodeError) and not environment.utf8():
        return (
            f'error: {text}: the locale encodes text as {sys.getfilesystemencoding()} '
            f'({environment.locale_variables()}); set LC_ALL=C.UTF-8 (or PYTHONUTF8=1) and rerun'
        )
    return (
        f'internal error: {type(e).__name__}: {e}\n'
        '  This is a bug in nrnp; rerun with --debug for the traceback and report it.'
    )


if __name__ == '__main__':
    run()

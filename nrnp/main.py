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
    from nrnp.configs import catalog

    if not args or {'-h', '--help', '-help', '--helpfull', '--helpshort'} & set(args):
        print(catalog.usage(), end='')
        return 0 if args else errors.EXIT_BAD_INPUT
    if args[0] == 'fields':  # every field's value (--config=R: R's) and meaning
        from nrnp.configs import listing

        print('\n'.join(listing.lines(catalog.fields_config(args[1:]))))
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
        from nrnp.pipeline import environment

        status = _fail(*environment.unexpected(e))
    finally:
        signals.seen()
    sys.exit(status)


if __name__ == '__main__':
    run()

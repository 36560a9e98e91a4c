"""The shipped recipes and config fields, for the command line: names, listings, checks.

  catalog.usage()         # `nrnp --help`
  catalog.recipes()       # [('c100', 'ResNet56 on CIFAR-100 ...'), ...]
  argv, spec = catalog.resolve_config_flag(argv)   # --config=c100 -> the shipped file
  config = catalog.recipe('c10_r20:tiny')          # the library's recipe=
  config = catalog.fields_config(['--config=c100']) # what `nrnp fields` lists (`listing`)

A recipe is a module of this package with a `get_config(arg)`; `--config` takes its bare
name (from any directory) or a path to a config file. Imports only the standard library,
ml_collections, `nrnp.errors` and `listing`, so a bad flag is reported before JAX is
imported.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import os
import pathlib

import ml_collections

from nrnp import errors
from nrnp.configs import listing

HERE = pathlib.Path(__file__).resolve().parent
_NOT_RECIPES = {'__init__', 'catalog', 'listing'}


@dataclasses.dataclass(frozen=True)
class ConfigSpec:
    """What `--config` named: the file, the recipe's argument and the default run name."""

    path: str
    arg: str

    @property
    def name(self) -> str:
        return pathlib.Path(self.path).stem

    @property
    def run_name(self) -> str:
        return f'{self.name}-{self.arg}' if self.arg else self.name


USAGE = """\
usage: nrnp --config=RECIPE[:tiny] [--workdir=DIR] [--config.SECTION.FIELD=VALUE ...]
            [--overwrite] [--debug]
       nrnp fields [--config=RECIPE]
                            list every config field with its value (the recipe's, else
                            the default) and meaning
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


def usage() -> str:
    """`nrnp --help`: the flags, the recipes with their first docstring line, the statuses."""
    listed = recipes()
    width = max(len(name) for name, _ in listed) + 2
    shown = '\n'.join(f'                 {name:<{width}}{doc}' for name, doc in listed)
    return USAGE.format(recipes=shown)


def recipes() -> list[tuple[str, str]]:
    """(name, first docstring line) of every shipped recipe, `default` first."""
    out = []
    for path in sorted(HERE.glob('*.py')):
        if path.stem in _NOT_RECIPES:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ''
        out.append((path.stem, doc.split('\n')[0]))
    return sorted(out, key=lambda item: item[0] != 'default')


def fields_config(args: list[str]) -> ml_collections.ConfigDict | None:
    """The config `nrnp fields [--config=RECIPE[:arg]]` lists (None: the defaults as written).

    Raises:
      errors.ConfigError: another argument, or a --config that names no config.
    """
    if [a for a in args if not a.startswith('--config')] or len(args) > 2:
        raise errors.ConfigError(f'nrnp fields takes only --config=RECIPE, got {args}')
    return load(resolve_config_flag(args)[1]) if args else None


def _split(value: str) -> tuple[str, str]:
    path, _, arg = value.partition(':')
    return path, arg


def resolve_config_flag(argv: list[str]) -> tuple[list[str], ConfigSpec]:
    """argv with `--config` pointing at a file, and what it named.

    Raises:
      errors.ConfigError: no --config, or neither a file nor a recipe of that name.
    """
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == '--config' and i + 1 < len(argv):
            argv[i : i + 2] = [f'--config={argv[i + 1]}']
            break
    index = next((i for i, a in enumerate(argv) if a.startswith('--config=')), None)
    if index is None:
        raise errors.ConfigError(
            'no --config given; use a recipe (' + ', '.join(n for n, _ in recipes()) + ') or a '
            'config file, e.g. --config=c10_r20:tiny (`nrnp --help`)'
        )
    path, arg = _split(argv[index].removeprefix('--config='))
    if not os.path.isfile(path):
        path = _shipped(path, f'--config={path}: no such config file and no recipe of that name')
    spec = ConfigSpec(os.path.abspath(path), arg)
    argv[index] = f'--config={spec.path}' + (f':{arg}' if arg else '')
    return argv, spec


def _shipped(name: str, problem: str) -> str:
    """The file of the shipped recipe `name`; errors.ConfigError (`problem`, the recipes)."""
    shipped = HERE / f'{pathlib.Path(name).name.removesuffix(".py")}.py'
    if os.sep in name or name.endswith('.py') or not shipped.is_file() or name in _NOT_RECIPES:
        names = ', '.join(n for n, _ in recipes())
        raise errors.ConfigError(f'{problem}; recipes: {names} (or a path to a config file)')
    return str(shipped)


def recipe(name: str) -> ml_collections.ConfigDict:
    """The config of the recipe `name` ('c10_r20', 'c10_r20:tiny' or a config file), as
    `--config=` gives it: the library's `recipe=`.

    Raises:
      errors.ConfigError: no recipe of that name (naming them), or a bad argument.
    """
    path, arg = _split(name)
    if not os.path.isfile(path):
        path = _shipped(path, f'recipe={name!r}: no config file and no recipe of that name')
    return load(ConfigSpec(os.path.abspath(path), arg))


def _line_in(exc: BaseException, path: str) -> str:
    """':<line>' of the deepest traceback frame in `path` (the config file), or ''."""
    line, tb = '', exc.__traceback__
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == path:
            line = f':{tb.tb_lineno}'
        tb = tb.tb_next
    return line


def load(spec: ConfigSpec) -> ml_collections.ConfigDict:
    """Runs the config file's `get_config(arg)`.

    Raises:
      errors.ConfigError: the file does not parse, imports what is not installed, has no
        `get_config`, whose call raises or returns something other than a ConfigDict; the
        message names the file and line.
    """
    module_spec = importlib.util.spec_from_file_location(f'nrnp_config_{spec.name}', spec.path)
    module = importlib.util.module_from_spec(module_spec)
    where = f'--config={spec.path}' + (f':{spec.arg}' if spec.arg else '')
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise errors.ConfigError(
            f'{spec.path}:{e.lineno}: {e.msg} (a syntax error in the config file); fix that line'
        ) from None
    except ImportError as e:
        raise errors.ConfigError(
            f'{spec.path}{_line_in(e, spec.path)}: {e} (the config file imports it); install '
            'it or change the import'
        ) from None
    except Exception as e:  # noqa: BLE001 (any error of the user's file)
        raise errors.ConfigError(
            f'{spec.path}{_line_in(e, spec.path)}: {type(e).__name__}: {e} (while importing '
            'the config file)'
        ) from None
    if not callable(getattr(module, 'get_config', None)):
        raise errors.ConfigError(f'{spec.path} defines no get_config()')
    try:
        config = module.get_config(spec.arg) if spec.arg else module.get_config()
    except (ValueError, TypeError) as e:
        raise errors.ConfigError(f'{where}: {e}') from None
    except Exception as e:  # noqa: BLE001
        raise errors.ConfigError(
            f'{spec.path}{_line_in(e, spec.path)}: get_config() raised {type(e).__name__}: {e}'
        ) from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise errors.ConfigError(
            f'{where}: get_config() returned {type(config).__name__}, not an '
            'ml_collections.ConfigDict; build the config as configs/default.py does (or '
            'return ml_collections.ConfigDict(...) of it)'
        )
    check_complete(config, f'{where}: get_config()')
    return config


def _missing(declared: ml_collections.ConfigDict, config, prefix: str = '') -> list[str]:
    """Dotted names of `declared`'s sections and fields absent from `config` (a missing
    section is named once, not field by field)."""
    out = []
    for key, value in declared.items():
        name = f'{prefix}{key}'
        if not isinstance(config, ml_collections.ConfigDict) or key not in config:
            out.append(name)
        elif isinstance(value, ml_collections.ConfigDict):
            out += _missing(value, config[key], name + '.')
    return out


def check_complete(config: ml_collections.ConfigDict, subject: str = 'the config') -> None:
    """Checks that `config` has every section and field `default.py` declares.

    Args:
      config: the config to check.
      subject: what the message calls it, e.g. "--config=C.py: get_config()".

    Raises:
      errors.ConfigError: naming the missing sections (and fields), suggesting a shipped
        recipe to start from.
    """
    from nrnp.configs import default  # noqa: PLC0415 (a recipe module of this package)

    declared = default.get_config()
    missing = _missing(declared, config)
    if not missing:
        return
    sections = [n for n in missing if isinstance(declared.get(n), ml_collections.ConfigDict)]
    fields = [n for n in missing if n not in sections]
    parts = [f'section{"s" if len(sections) > 1 else ""} {", ".join(sections)}'] if sections else []
    if fields:
        shown = ', '.join(fields[:6]) + (f' and {len(fields) - 6} more' if len(fields) > 6 else '')
        parts.append(f'field{"s" if len(fields) > 1 else ""} {shown}')
    raise errors.ConfigError(
        f'{subject} lacks the {" and the ".join(parts)}; start from a shipped '
        'recipe and change what differs: `from nrnp.configs import c10_r20` then '
        '`c = c10_r20.get_config()` (or `default`; `nrnp --help` lists them)'
    )


def field_name(dotted: str, style: str) -> str:
    """A field as the caller writes it: `--config.a.b` (style 'cli') or `a__b` ('library')."""
    return f'--config.{dotted}' if style == 'cli' else dotted.replace('.', '__')


def check_field(config: ml_collections.ConfigDict, dotted: str, style: str = 'cli'):
    """The section holding field `dotted` ('a.b') of `config`, and the field's name: the one
    check of an override, for `--config.a.b=v` and `nrnp.compress(a__b=v)` alike.

    Raises:
      errors.ConfigError: no such field (naming the closest one), or `dotted` is a section.
    """
    shown, node = field_name(dotted, style), config
    names = dotted.split('.')
    for depth, name in enumerate(names):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            known = [n for n, _, _ in listing.fields()]
            close = difflib.get_close_matches(dotted, known, n=1, cutoff=0.6)
            hint = f'; did you mean {field_name(close[0], style)!r}?' if close else ''
            raise errors.ConfigError(
                f'{shown}: no such config field{hint} (`nrnp fields` lists them)'
            )
        if depth < len(names) - 1:
            node = node[name]
    if isinstance(node[names[-1]], ml_collections.ConfigDict):
        example = field_name(f'{dotted}.{next(iter(node[names[-1]].keys()))}', style)
        raise errors.ConfigError(f'{shown} is a section; set one of its fields, e.g. {example}=...')
    return node, names[-1]


def check_overrides(argv: list[str], spec: ConfigSpec) -> None:
    """Checks that every `--config.a.b=v` of `argv` names a field of `spec`'s config.

    Raises:
      errors.ConfigError: naming the unknown field and the closest existing one.
    """
    config = load(spec)
    for arg in argv:
        if arg.startswith('--config.'):
            check_field(config, arg.removeprefix('--config.').split('=', 1)[0], 'cli')


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
    """Sets the library's `section__field=value` overrides on `config` in place.

    Raises:
      errors.ConfigError: a key naming no field, or a section (`check_field`).
      TypeError: a value of the wrong type (ml_collections' type check).
    """
    for key, value in overrides.items():
        section, name = check_field(config, key.replace('__', '.'), 'library')
        if isinstance(section[name], tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            section[name] = value
        except TypeError as e:
            raise TypeError(f'config field {key}: {e}') from None

"""The package layout: nrnp's import graph, read from the source, has no cycles, no module
imports a higher layer, no function is longer than a reader can hold (60 lines) and no module
outgrows its room."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'nrnp'

# Each unit (a subpackage or a top-level module) and its layer: a module may import its own
# unit or a strictly lower layer, never a unit beside it or above it.
LAYERS = {
    'nrnp.errors': 0,
    'nrnp.files': 0,
    'nrnp.version': 0,
    'nrnp.signals': 0,
    'nrnp.choices': 0,
    'nrnp.configs': 1,
    'nrnp.core': 1,
    'nrnp.data': 1,
    'nrnp.nets': 2,
    'nrnp.reporting': 2,
    'nrnp.training': 3,
    'nrnp.artifact': 3,
    'nrnp.pipeline': 4,
    'nrnp.main': 5,
    'nrnp': 5,  # the package's own __init__: the lazy public API
}
MAX_LINES = 350
# Lines of a function from its `def` to its last line, the signature included and the
# docstring not (a function's nested helpers count as its own lines).
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        out[name] = path
    return out


def _unit(module: str) -> str:
    parts = module.split('.')
    return '.'.join(parts[:2]) if len(parts) > 1 else module


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """nrnp modules imported anywhere in the file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from nrnp.x import y`: y is a module when nrnp.x.y is one, else a name in nrnp.x
            names = [
                f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in modules else node.module
                for a in node.names
            ]
        else:
            continue
        found.update(n for n in names if n == 'nrnp' or n.startswith('nrnp.'))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}


def test_every_module_belongs_to_a_layer():
    assert {_unit(m) for m in _modules()} <= set(LAYERS)


def test_no_module_imports_a_unit_beside_or_above_it():
    wrong = [
        f'{module} (layer {LAYERS[_unit(module)]}) imports {target} (layer {LAYERS[_unit(target)]})'
        for module, targets in _graph().items()
        for target in sorted(targets)
        if _unit(target) != _unit(module) and LAYERS[_unit(target)] >= LAYERS[_unit(module)]
    ]
    assert not wrong, '\n'.join(wrong)


def test_import_graph_has_no_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node, path):
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(' -> '.join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, '\n'.join(cycles)


def test_the_graph_reader_sees_imports():
    graph = _graph()  # a reader that found nothing would pass the two tests above
    assert 'nrnp.core.kernels' in graph['nrnp.core.predictor']
    assert 'nrnp.pipeline.compression' in graph['nrnp.pipeline.library']
    assert 'nrnp.data.threads' in graph['nrnp.training.phase_steps']


@pytest.mark.parametrize('name', sorted(_modules()))
def test_module_size_and_docstring(name):
    path = _modules()[name]
    lines = path.read_text().count('\n')
    assert lines <= MAX_LINES, f'{path} has {lines} lines; split it (at most {MAX_LINES})'
    assert ast.get_docstring(ast.parse(path.read_text())), f'{path} has no module docstring'


def function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """`node`'s lines from its `def` to its last line, less its docstring's."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        if isinstance(first.value.value, str):
            lines -= first.end_lineno - first.lineno + 1
    return lines


def test_function_lines_are_counted_as_documented():
    source = 'def f(a,\n      b):\n    """Doc\n\n    more."""\n    x = 1\n\n    return x\n'
    assert function_lines(ast.parse(source).body[0]) == 2 + 3  # signature + body, no docstring


@pytest.mark.parametrize('name', sorted(_modules()))
def test_no_function_is_too_long(name):
    path = _modules()[name]
    long = [
        f'{path}:{node.lineno} {node.name} has {function_lines(node)} lines'
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and function_lines(node) > MAX_FUNCTION_LINES
    ]
    assert not long, '\n'.join(long) + f' (at most {MAX_FUNCTION_LINES}: split it)'


def test_main_is_thin_and_the_config_small():
    """Issue 26: the CLI module keeps flags, exit statuses and signals only (<= 150 lines);
    the default config declares at most 90 fields (unvaried ones are constants)."""
    from nrnp.configs import default

    assert len((PACKAGE / 'main.py').read_text().splitlines()) <= 150

    def leaves(d):
        return sum(leaves(v) if hasattr(v, 'items') else 1 for v in d.values())

    assert leaves(default.get_config()) <= 90

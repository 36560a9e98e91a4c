"""The notebooks: stored without outputs, and executed headless on the tiny config."""

import os
import pathlib
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / 'notebooks').glob('*.ipynb'))
NAMES = [path.name for path in NOTEBOOKS]
# Per cell; a whole tiny notebook takes well under 2 minutes on 2 CPU cores.
CELL_TIMEOUT_S = 300


def _read(path: pathlib.Path):
    nbformat = pytest.importorskip(
        'nbformat', reason='nbformat is not installed (pip install nbformat)'
    )
    return nbformat.read(path, as_version=4)


def test_both_notebooks_exist():
    assert NAMES == ['compress.ipynb', 'explore.ipynb']


@pytest.mark.parametrize('path', NOTEBOOKS, ids=NAMES)
def test_stored_without_outputs(path):
    nb = _read(path)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == 'code':
            assert cell.outputs == [], f'{path.name} cell {index} has stored outputs'
            assert cell.execution_count is None, f'{path.name} cell {index} has a count'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=NAMES)
def test_parameters_cell(path):
    nb = _read(path)
    tagged = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
    assert len(tagged) == 1, f'{path.name}: expected one cell tagged "parameters"'
    assert 'TINY = False' in tagged[0].source and 'WORKDIR = ' in tagged[0].source


@pytest.mark.parametrize('path', NOTEBOOKS, ids=NAMES)
def test_executes_on_tiny_config(path, tmp_path, monkeypatch):
    pytest.importorskip('nbclient', reason='nbclient is not installed (pip install nbclient)')
    pytest.importorskip('ipykernel', reason='ipykernel is not installed (pip install ipykernel)')
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nbformat = pytest.importorskip('nbformat')
    nb = _read(path)
    workdir = tmp_path / 'work'
    for cell in nb.cells:
        if 'parameters' in cell.metadata.get('tags', []):
            # What papermill would inject: the tiny config and a temporary workdir.
            injected = f'TINY = True\nWORKDIR = {str(workdir)!r}'
            cell.source += f'\n# injected by tests/notebooks_test.py\n{injected}\n'
    # The kernel inherits the environment: share the tests' persistent compilation cache.
    monkeypatch.setenv(
        'JAX_COMPILATION_CACHE_DIR', os.environ.get('NRNP_JAX_CACHE', str(REPO / '.jax_cache'))
    )
    monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name='python3',
        resources={'metadata': {'path': str(path.parent)}},
    )
    start = time.time()
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f'{path.name} failed:\n{e}')
    finally:
        nbformat.write(nb, tmp_path / path.name)  # the executed copy, to inspect a failure
    print(f'{path.name}: executed in {time.time() - start:.1f}s')
    assert (workdir).is_dir(), f'{path.name} did not write to the injected WORKDIR'
    assert list(workdir.rglob('report.json')), f'{path.name} left no report.json under WORKDIR'

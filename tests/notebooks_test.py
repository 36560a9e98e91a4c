"""The notebooks: stored with the outputs of a real run (small files), Colab-ready, and
executed headless on the tiny config, explore.ipynb on a lone `.nrnp` file too."""

import json
import os
import pathlib
import shutil
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / 'notebooks').glob('*.ipynb'))
NAMES = [path.name for path in NOTEBOOKS]
# Per cell; a whole tiny notebook takes well under 2 minutes on 2 CPU cores.
CELL_TIMEOUT_S = 300
MAX_BYTES = 300_000


def _read(path: pathlib.Path):
    nbformat = pytest.importorskip(
        'nbformat', reason='nbformat is not installed (pip install nbformat)'
    )
    return nbformat.read(path, as_version=4)


def _text(cell) -> str:
    """The text a code cell printed (stdout and plain-text results)."""
    out = []
    for output in cell.get('outputs', []):
        out.append(output.get('text', ''))
        out.append(output.get('data', {}).get('text/plain', ''))
    return ''.join(out)


def test_both_notebooks_exist():
    assert NAMES == ['compress.ipynb', 'explore.ipynb']


@pytest.mark.parametrize('path', NOTEBOOKS, ids=NAMES)
def test_stored_with_the_outputs_of_a_run(path):
    assert path.stat().st_size < MAX_BYTES, f'{path.name} is {path.stat().st_size:,} bytes'
    nb = _read(path)
    code = [c for c in nb.cells if c.cell_type == 'code']
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f'{path.name}: not run top to bottom'
    for index, cell in enumerate(code):
        kinds = {output.output_type for output in cell.outputs}
        assert 'error' not in kinds, f'{path.name} code cell {index} stored an error'
        assert 'injected by tests' not in cell.source, f'{path.name}: a test run was stored'
    assert any('image/png' in o.get('data', {}) for c in code for o in c.outputs)  # a plot
    printed = ''.join(_text(c) for c in code)
    assert 'compressed.nrnp' in printed and 'top-1' in printed


@pytest.mark.parametrize('path', NOTEBOOKS, ids=NAMES)
def test_colab_badge_and_install_line(path):
    nb = _read(path)
    badge = f'colab.research.google.com/github/OWNER/nrnp/blob/main/notebooks/{path.name}'
    assert 'colab-badge.svg' in nb.cells[0].source and badge in nb.cells[0].source
    install = nb.cells[1].source
    assert "NRNP_REPO = 'https://github.com/OWNER/nrnp.git'" in install
    assert "'pip', 'install', '-q', f'git+{NRNP_REPO}'" in install


@pytest.mark.parametrize('path', NOTEBOOKS, ids=NAMES)
def test_parameters_cell(path):
    nb = _read(path)
    tagged = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
    assert len(tagged) == 1, f'{path.name}: expected one cell tagged "parameters"'
    assert 'TINY = False' in tagged[0].source and 'WORKDIR = ' in tagged[0].source
    if path.name == 'explore.ipynb':
        assert "ARTIFACT = ''" in tagged[0].source


def _execute(name: str, tmp_path: pathlib.Path, monkeypatch, **parameters):
    """Runs notebooks/`name` headless with `parameters` injected; the executed notebook."""
    pytest.importorskip('nbclient', reason='nbclient is not installed (pip install nbclient)')
    pytest.importorskip('ipykernel', reason='ipykernel is not installed (pip install ipykernel)')
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nbformat = pytest.importorskip('nbformat')
    path = REPO / 'notebooks' / name
    nb = _read(path)
    for cell in nb.cells:
        if 'parameters' in cell.metadata.get('tags', []):
            # What papermill would inject: the tiny config, a temporary workdir and the rest.
            injected = ''.join(f'{k} = {v!r}\n' for k, v in {'TINY': True, **parameters}.items())
            cell.source += f'\n# injected by tests/notebooks_test.py\n{injected}'
    # The kernel inherits the environment: share the tests' persistent compilation cache.
    monkeypatch.setenv(
        'JAX_COMPILATION_CACHE_DIR', os.environ.get('NRNP_JAX_CACHE', str(REPO / '.jax_cache'))
    )
    monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name='python3',
        resources={'metadata': {'path': str(tmp_path)}},
    )
    start = time.time()
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f'{name} failed:\n{e}')
    finally:
        nbformat.write(nb, tmp_path / name)  # the executed copy, to inspect a failure
    print(f'{name}: executed in {time.time() - start:.1f}s')
    return nb


@pytest.mark.slow
def test_compress_makes_artefacts_that_explore_opens_alone(tmp_path, monkeypatch):
    workdir = tmp_path / 'work'
    nb = _execute('compress.ipynb', tmp_path, monkeypatch, WORKDIR=str(workdir))
    artefacts = sorted(workdir.glob('h*/compressed.nrnp'))
    assert [p.parent.name for p in artefacts] == ['h16', 'h32']
    assert f'{artefacts[-1]}:' in ''.join(_text(c) for c in nb.cells if c.cell_type == 'code')

    # A colleague's file: nothing else of the run beside it, no original network.
    sent = tmp_path / 'sent' / 'from_a_colleague.nrnp'
    sent.parent.mkdir()
    shutil.copy(artefacts[-1], sent)
    explored = tmp_path / 'explore_work'
    nb = _execute('explore.ipynb', tmp_path, monkeypatch, ARTIFACT=str(sent), WORKDIR=str(explored))
    printed = ''.join(_text(c) for c in nb.cells if c.cell_type == 'code')
    report = json.loads((artefacts[-1].parent / 'report.json').read_text())
    assert f'the run measured {report["top1_reconstructed"]:.2f} %' in printed
    assert f'rebuilt network: {report["top1_reconstructed"]:.2f} % top-1' in printed
    assert 'no CHECKPOINT' in printed
    assert not explored.exists()  # nothing was run


@pytest.mark.slow
def test_explore_makes_a_demo_run_without_an_artefact(tmp_path, monkeypatch):
    workdir = tmp_path / 'work'
    nb = _execute('explore.ipynb', tmp_path, monkeypatch, WORKDIR=str(workdir))
    assert (workdir / 'report.json').exists() and (workdir / 'compressed.nrnp').exists()
    printed = ''.join(_text(c) for c in nb.cells if c.cell_type == 'code')
    assert 'relative' in printed and 'no CHECKPOINT' not in printed  # against its teacher

"""The docs stay true: every config flag, keyword override and recipe they name exists, and
the library page's Python blocks run (at a tiny size)."""

import pathlib
import re

import ml_collections
import numpy as np
import pytest
from PIL import Image

from nrnp.configs import catalog, default

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md', REPO / 'ARCHITECTURE.md', *sorted((REPO / 'docs').glob('*.md'))]


def _text() -> str:
    return '\n'.join(p.read_text() for p in PAGES)


def _exists(dotted: str) -> bool:
    node = default.get_config()
    for name in dotted.split('.'):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            return False
        node = node[name]
    return not isinstance(node, ml_collections.ConfigDict)


SECTIONS = tuple(
    k for k, v in default.get_config().items() if isinstance(v, ml_collections.ConfigDict)
)


def flags(text: str) -> set[str]:
    """Every `--config.a.b` flag, `a__b=` keyword override and `section.field` in backticks
    (a config section's field, e.g. `recalibrate.images=0`) named in `text`."""
    found = set(re.findall(r'--config\.([a-z_]+(?:\.[a-z_0-9]+)+)', text))
    found |= {k.replace('__', '.') for k in re.findall(r'\b([a-z]+__[a-z_]+)=', text)}
    quoted = re.findall(r'`([a-z_]+\.[a-z_0-9]+)(?:[=:][^`]*)?`', text)
    return found | {q for q in quoted if q.split('.')[0] in SECTIONS}


def recipes(text: str) -> set[str]:
    """Every recipe named as `--config=NAME`, `configs/NAME.py` or `nrnp --config=NAME`."""
    names = set(re.findall(r'--config=(?:configs/)?([a-z0-9_]+)(?:\.py)?', text))
    return names | set(re.findall(r'\bconfigs/([a-z0-9_]+)\.py', text))


def test_every_flag_and_recipe_in_the_docs_exists():
    text = _text()
    named = flags(text)
    assert len(named) > 30  # the reader sees real flags
    missing = sorted(f for f in named if not _exists(f))
    assert missing == [], f'flags named in the docs that no config declares: {missing}'
    names = {name for name, _ in catalog.recipes()}
    unknown = sorted(r for r in recipes(text) if r not in names)
    assert unknown == [], f'recipes named in the docs that do not exist: {unknown}'


def test_the_checker_catches_a_misspelt_flag():
    assert flags('--config.reconstruct.stepz=5, distill__stepz=2, `data.imagesize=8`') == {
        'reconstruct.stepz',
        'distill.stepz',
        'data.imagesize',
    }
    assert not _exists('reconstruct.stepz') and _exists('reconstruct.steps')
    assert recipes('nrnp --config=c10_rz0:tiny, configs/c10_r20.py') == {'c10_rz0', 'c10_r20'}


def _python_blocks(page: pathlib.Path) -> list[str]:
    return re.findall(r'```python\n(.*?)```', page.read_text(), flags=re.S)


def _cifar_like_folder(root: pathlib.Path, per_class: int = 4) -> None:
    rng = np.random.default_rng(0)
    for split in ('train', 'test'):
        for c in range(10):
            folder = root / split / f'class{c}'
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f'{i}.png')


@pytest.mark.slow
def test_the_library_page_runs_at_a_tiny_size(tmp_path, shared, monkeypatch):
    """Both blocks as written, with these sizes shrunk."""
    first, second = _python_blocks(REPO / 'docs' / 'library.md')[:2]
    folder = tmp_path / 'cifar'
    _cifar_like_folder(folder)
    weights = shared / 'weights/akamaster-cifar10/resnet20-12fca82f.th'
    shrink = {
        'c10_r20.get_config()': "c10_r20.get_config('tiny')",
        'predictor__hidden=180': 'predictor__hidden=16',
        'reconstruct__steps=20_000': 'reconstruct__steps=5',
        'distill__steps=500': 'distill__steps=2',
        "'../shared/weights/akamaster-cifar10/resnet20-12fca82f.th'": repr(str(weights)),
        "'../shared/data/cifar10-jpeg'": repr(str(folder)),
    }
    for old, new in shrink.items():
        assert old in second, f'docs/library.md no longer says {old!r}: update this test'
        second = second.replace(old, new)
    tiny = {"recipe='default',": "recipe='default:tiny',", 'steps=600': 'steps=60'}
    for old, new in tiny.items():
        assert old in first, f'docs/library.md no longer says {old!r}: update this test'
        first = first.replace(old, new)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(first, 'library.md block 1', 'exec'), namespace)  # noqa: S102
    assert namespace['compressed'].metrics['top1_original'] > 10  # a trained net
    assert namespace['compressed'].metrics['top1_reconstructed'] is not None
    exec(compile(second, 'library.md block 2', 'exec'), namespace)  # noqa: S102
    assert (tmp_path / 'r20.nrnp').exists()
    kinds = [r['kind'] for r in namespace['compressed'].history]
    assert kinds == ['init', 'reconstruct', 'recalibrate', 'distill']


@pytest.mark.parametrize('page', [p.name for p in PAGES])
def test_relative_links_resolve(page):
    path = next(p for p in PAGES if p.name == page)
    for target in re.findall(r'\]\(([^)#:]+)(?:#[^)]*)?\)', path.read_text()):
        assert (path.parent / target).exists(), f'{page} links to a missing {target}'

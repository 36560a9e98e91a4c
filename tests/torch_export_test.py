"""docs/library.md's PyTorch block runs as written (with torch) and gives the rebuilt
network's top-1; the CIFAR ResNets' export has akamaster's keys and shapes."""

import pathlib
import re

import numpy as np
import pytest

from nrnp.nets import loading, models, state_dicts

REPO = pathlib.Path(__file__).resolve().parents[1]


def _blocks() -> list[str]:
    return re.findall(r'```python\n(.*?)```', (REPO / 'docs' / 'library.md').read_text(), re.S)


def test_the_pytorch_block_loads_the_export_and_gives_the_same_top1(tmp_path, monkeypatch):
    torch = pytest.importorskip('torch', reason='torch is not installed (pip install torch)')
    first = _blocks()[0]
    (block,) = [b for b in _blocks() if 'load_state_dict' in b]
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(first, 'library.md block 1', 'exec'), namespace)  # noqa: S102
    exec(compile(block, 'library.md PyTorch block', 'exec'), namespace)  # noqa: S102
    compressed, test, logits = namespace['compressed'], namespace['test'], namespace['logits']
    model, x = namespace['model'], namespace['x']
    flax_logits = model.apply(compressed.reconstruct(), x, train=False)
    np.testing.assert_allclose(logits.numpy(), np.asarray(flax_logits), rtol=1e-4, atol=1e-4)
    top1 = (logits.argmax(1).numpy() == test.labels).mean() * 100
    assert top1 == pytest.approx(compressed.metrics['top1_reconstructed'])
    # The PyTorch zip format: torch.load(weights_only=True) takes it, and so does the module.
    compressed.export_torch(tmp_path / 'net.pt')
    loaded = torch.load(tmp_path / 'net.pt', weights_only=True)
    namespace['SmallCNN']().load_state_dict(loaded)


def test_a_cifar_resnet_exports_with_akamasters_keys_and_shapes(shared, tmp_path):
    weights = shared / 'weights' / 'akamaster-cifar10'
    model = models.build_model('resnet20', 10)
    variables = loading.load_target(weights / 'resnet20-12fca82f.th', model, (1, 32, 32, 3))
    exported = state_dicts.export_state_dict(variables, tmp_path / 'r20.npz')
    with np.load(weights / 'resnet20-12fca82f.npz') as f:
        akamaster = {k: f[k] for k in f.files}
    assert sorted(exported) == sorted(akamaster)
    for key, value in akamaster.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)

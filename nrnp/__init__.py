"""nrnp: compress a CNN's conv weights into a small coordinate-to-kernel predictor.

python -m nrnp.main --config=c10_r20 --workdir=/tmp/r20
compressed = nrnp.compress(variables, model, data=batches); compressed.save('net.nrnp')
variables = nrnp.load('net.nrnp').reconstruct()
"""

from nrnp.version import __version__

_LAZY = {
    'compress': 'nrnp.pipeline.library',
    'load': 'nrnp.artifact.reader',
    'Compressed': 'nrnp.artifact.compressed',
    'ArtifactError': 'nrnp.errors',
}
__all__ = ['ArtifactError', 'Compressed', '__version__', 'compress', 'load']


def __getattr__(name: str):
    """Imports the library API on first use, so `import nrnp` stays light."""
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

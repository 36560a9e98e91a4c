"""Test set-up: a persistent compilation cache and the location of ../shared."""

import os
import pathlib

import jax
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

jax.config.update(
    'jax_compilation_cache_dir', os.environ.get('NRNP_JAX_CACHE', str(REPO / '.jax_cache'))
)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def shared_dir() -> pathlib.Path | None:
    """`$NRNP_SHARED` or `../shared` beside the checkout, when present."""
    path = pathlib.Path(os.environ.get('NRNP_SHARED', REPO.parent / 'shared'))
    return path if path.is_dir() else None


@pytest.fixture
def shared():
    path = shared_dir()
    if path is None:
        pytest.skip('../shared (or $NRNP_SHARED) is absent: real weights and images unavailable')
    return path


@pytest.fixture
def http_server():
    """A 127.0.0.1 file server (tests/local_http.py), shut down after the test."""
    from local_http import FileServer

    with FileServer() as server:
        yield server

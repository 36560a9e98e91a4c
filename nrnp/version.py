"""nrnp's version: the one place it is written (pyproject.toml and fingerprints read it)."""

__version__ = '0.1.0'

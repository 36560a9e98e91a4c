"""What a run tells its user: progress lines with rate and ETA, `report.json`/`report.md`,
PNG plots, and per-layer analyses of a compressed network. Reads no config and runs no
training; imports `core` only.
"""

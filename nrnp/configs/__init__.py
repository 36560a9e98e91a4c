"""The recipes: ml_collections configs shipped with the package (`--config=c100` anywhere).

`default` declares every field once with its meaning; the other recipes override a few,
and each docstring is the recipe (command, hardware, time; what it measured is in
docs/results.md). `catalog` lists them and their fields and checks overrides.
`configs/*.py` in a checkout are shims that import these.
"""

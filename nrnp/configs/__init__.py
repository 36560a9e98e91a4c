"""The recipes: ml_collections configs shipped with the package (`--config=c100` anywhere).

`default` declares every field once with its meaning; `c10_r20`, `c10_r56`, `c100` and
`imagenet_r18` override a few, and each docstring is the recipe (command, hardware,
time, result). `configs/*.py` in a checkout are shims that import these.
"""

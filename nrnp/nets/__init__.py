"""Target networks and their weights: the Flax ResNets (one `ResNet` with a `block_cls` for
ResNet18/34/50), MobileNetV2 and the digits CNN with PyTorch-mirroring names, PyTorch/npz
state dicts mapped onto Flax variables and back (with a restricted unpickler when torch is
absent), orbax variable files, and variables pytrees as flat `{path: array}` dicts. Builds
on `core` only.
"""

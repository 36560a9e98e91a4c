"""The compressed artefact: `Compressed` (predictor, compact orderings and copied leaves;
rebuilds the target's variables, reports its size, exports to Flax or PyTorch layouts)
and the `.nrnp` file format it is saved in and `reader.load` reads back, checked.
"""

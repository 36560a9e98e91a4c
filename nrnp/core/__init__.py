"""The representation itself, free of training and I/O: the kernel table (params pytree <->
`[num_kernels, 9]`), kernel orderings, coordinates and their compact form, positional
encodings, the predictor MLP with the pure `reconstruct` that rebuilds a target's params,
and its stored widths (`quantize`). Imports nothing of nrnp above layer 0 (`choices`, `errors`).
"""

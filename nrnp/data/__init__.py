"""Input data: in-memory datasets and streamed sources (image folders, prepared TFDS
ArrayRecord, the bundled digits), training and evaluation batches drawn from global
indices (each process reads only its rows), augmentations, normalisation, prefetching and
the shared decoding threads. Returns numpy only; imports nothing of nrnp above layer 0.
"""

"""The hot loops of minicnn: one file per operation, a Numba CPU kernel (`name.py`) beside its CUDA twin (`name.cu`).

`minicnn.kernels.cpu` and `minicnn.kernels.gpu` expose the same flat functions on raw arrays
(NumPy arrays for the CPU, CuPy arrays for the GPU); the engine picks one by the array's module
(`minicnn.backend.kernels_for`), so no `if gpu:` is scattered through the engine.
"""

"""The ground floor of minicnn: flat functions on raw arrays, one file per operation, imported by nothing but the backend.

The lesson's twins sit here, side by side: `name.py` (Numba loops for the CPU) beside `name.cu` (its CUDA
twin): im2col, pool, batchnorm, relu, dropout, cross_entropy, optim, affine, gemm. Then the three backends,
each the same contract (contract.py) for its own arrays:

    cpu.py              the Numba kernels, and the CPU's fast convolutions (cpu_fast/)
    numpy_backend.py    every kernel in plain NumPy: runs without Numba, the one to step through
    gpu/                the CUDA kernels through CuPy (runtime, ops, CUDA-graph recording)

conv_geometry.py names a convolution's shapes, and conv_matmul.py holds the two convolutions that are one
matrix product on every backend. Nothing here imports the engine (minicnn/); the engine reaches these
modules only through minicnn/backend.py.
"""

"""minicnn: convolution from scratch -- a Tensor with autograd, im2col + GEMM convolution, Numba and CUDA kernels.

The choices a user makes (convolution algorithm, GPU matrix products, fusion, CPU kernels) live in
`minicnn.config`; the kernels are reached through `minicnn.backend`.
"""
import os as _os
import sys as _sys

# Numba's OpenMP threads would otherwise spin for a while after each parallel kernel, taking the cores
# from the threads that run the convolution's chunks next; passive waiting measured 10-25% faster per step.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if "numpy" not in _sys.modules:
    # BLAS reads its thread count once, when NumPy loads. minicnn parallelises over the batch itself
    # (kernels/cpu_fast/parallel.py) and in its Numba kernels; a multi-threaded BLAS inside those threads
    # oversubscribes the cores and runs many times slower. Set these variables yourself to override.
    for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        _os.environ.setdefault(_var, "1")

from ._malloc import keep_freed_memory as _keep_freed_memory  # noqa: E402

_keep_freed_memory()  # large arrays are freed and allocated again every step: keep their pages (minicnn/_malloc.py)

from ._kernels_loader import load_kernels as _load_kernels  # noqa: E402

_load_kernels()

from .tensor import Tensor, tensor, as_tensor  # noqa: E402,F401
from .autograd import no_grad, is_grad_enabled  # noqa: E402,F401
from .backend import gpu_available  # noqa: E402,F401
from .random import manual_seed  # noqa: E402,F401
from . import config  # noqa: E402,F401
from . import functional  # noqa: E402,F401

__version__ = "0.1.0"

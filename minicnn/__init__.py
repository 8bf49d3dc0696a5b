"""minicnn: convolution from scratch -- a Tensor with autograd, im2col + GEMM convolution, Numba and CUDA kernels."""
from ._kernels_loader import load_kernels as _load_kernels

_load_kernels()

from .tensor import Tensor, tensor, as_tensor  # noqa: E402,F401
from .autograd import no_grad, is_grad_enabled  # noqa: E402,F401
from .backend import gpu_available  # noqa: E402,F401
from .random import manual_seed  # noqa: E402,F401
from . import functional  # noqa: E402,F401

__version__ = "0.1.0"

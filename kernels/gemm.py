"""Matrix products on the CPU: NumPy's matmul, which hands the work to BLAS (gemm.cu is the GPU side).

Notation: C (M x N) = A (M x K) @ B (K x N), for each index of the leading (batch) dimensions, which
broadcast as in NumPy. Every convolution of minicnn ends in such products (functional/conv.py):
    forward   y = W @ col            (OC x C*KH*KW) @ (C*KH*KW x N*OH*OW)
    backward  gW = gy @ col^T,  gcol = W^T @ gy
The engine calls them through the backend (`kernels_for(x).matmul`), so the GPU can choose how to
run them (kernels/gpu/ops.py: gemm.cu, our tiled kernel, by default; cuBLAS through cupy.matmul when
minicnn.config's gemm is "cupy").
"""
import numpy as np


def matmul(a, b, bias=None):
    """a @ b for arrays of at least 2 dimensions, leading dimensions broadcast (NumPy -> BLAS); bias (M,), when
    given, is added to row i of every product (a convolution's bias: gemm.cu adds it in the same launch)."""
    c = np.matmul(a, b)
    if bias is not None:
        c += bias.reshape(-1, 1)
    return c


def sum_rows(a):
    """The sums of the rows of a 2-D array (R, L) -> (R,): a product with a vector of ones, a convolution's
    bias gradient (gemm.cu sum_rows on the GPU)."""
    return np.sum(a, axis=-1)


def sum_leading(a):
    """The sum over the first axis of an array (B, ...) -> (...): products batched over images, added into one
    (a convolution's weight gradient). gemm.cu's gemm_sum_slices on the GPU, adding b = 0, 1, ... in order."""
    return np.sum(a, axis=0)


def matmul_reference(a, b):
    """The definition, for the tests: C[..., i, j] = sum_k A[..., i, k] * B[..., k, j], in float64 loops over k."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    out = np.zeros(shape)
    for k in range(a.shape[-1]):
        out += a[..., :, k:k + 1] * b[..., k:k + 1, :]
    return out

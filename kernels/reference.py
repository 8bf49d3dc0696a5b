"""The plain-NumPy backend: the same contract as cpu.py, with im2col and col2im as NumPy slicing instead of Numba loops.

It exists to be compared with: `MINICNN_KERNELS=numpy` (or `minicnn.backend.use_reference_kernels()`)
makes the CPU engine use it, so benchmarks show what the Numba kernels buy. Only im2col/col2im differ;
the other kernels are the Numba ones. The whole batch is one chunk: one im2col, one GEMM per group.
"""
from .cpu import (max_pool2d_forward, max_pool2d_backward, avg_pool2d_forward, avg_pool2d_backward,  # noqa: F401
                  affine_warp, dropout_apply, dropout_mask, relu_forward, relu_backward, adam_update, sgd_update, accumulate_grads,
                  batch_norm_forward, batch_norm_backward, cross_entropy_forward, cross_entropy_backward, matmul,
                  sum_leading, sum_rows)
from .im2col import im2col_numpy as im2col, col2im_numpy as col2im  # noqa: F401
from .parallel import whole_batch as batch_chunks, in_order as map_chunks  # noqa: F401

wide_columns = False  # the classic column matrix only: the baseline the wide grid is measured against
keep_columns = False  # the plain baseline recomputes them too
direct_conv = False   # im2col + GEMM always
weight_grad_columns_first = True  # as cpu.py

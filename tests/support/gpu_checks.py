"""Shared by the tests that run on a GPU: tolerances against the CPU, the `gpu` marker with its skip reason, copies."""
import numpy as np
import pytest
from hypothesis import settings

import minicnn.backend as backend

GPU_REASON = backend.gpu_unavailable_reason()
cp = backend.cupy_module() if GPU_REASON is None else None

gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"no GPU: {GPU_REASON}")

# ---- tolerances (float32: eps = 1.2e-7) ----------------------------------------------------------------
# Our own kernels (im2col, col2im, pooling, affine, dropout, optimizer updates) do the same operations in
# the same order on both devices, with --fmad=false: equal up to the last bit in practice; a few ulps are
# allowed so that a GPU math library rounding differently could never fail the test.
KERNEL_RTOL_F32, KERNEL_ATOL_F32 = 1e-6, 1e-7
# Ops with GEMMs and reductions (conv2d, linear, batch norm, losses): cuBLAS and CuPy's reductions sum in
# another order than OpenBLAS and NumPy. Inputs here are ~N(0, 1) with at most a few hundred terms per
# sum, so the difference is ~ sqrt(terms) * eps * |terms| ~ 1e-5 relative; 1e-4 / 1e-5 leaves a margin,
# while a wrong index or factor is off by O(1).
RTOL_F32, ATOL_F32 = 1e-4, 1e-5
# float64: the same reordering at eps = 2.2e-16.
RTOL_F64, ATOL_F64 = 1e-10, 1e-12
# A few training steps: the first loss is a forward pass from equal weights (RTOL_F32). Later losses are
# chaotic in the last bits: a max-pool window whose two best values differ by less than the rounding
# noise, or an activation that close to the ReLU kink, sends a whole gradient term elsewhere, and Adam
# turns a tiny gradient of either sign into an lr-sized step. Measured on the CPU by perturbing the
# input images by 1e-6 relative (more than float32 reordering does): eip4 with Adam(lr=1e-3, eps=1e-3),
# 8 trials, losses of steps 2-4 within 1e-3 relative, batch-norm running statistics within 1e-4
# absolute; the small models of the optimizer test within 1e-3 relative. TRAIN_RTOL leaves a margin;
# a real bug (wrong gradient, wrong update) moves the loss by far more.
TRAIN_RTOL = 5e-3
TRAIN_BUFFER_ATOL = 1e-3

GPU_SETTINGS = settings(max_examples=15, deadline=None)


def gpu_test(f):
    """The `gpu` marker, and a skip with the reason when CuPy or a CUDA device is missing."""
    return gpu(needs_gpu(f))


def to_gpu(a):
    return cp.asarray(a)


def host(a):
    return cp.asnumpy(a) if cp is not None and isinstance(a, cp.ndarray) else np.asarray(a)


def assert_close(gpu_value, cpu_value, rtol, atol, what=""):
    g, c = host(gpu_value), host(cpu_value)
    assert g.shape == c.shape, f"{what}: shapes {g.shape} (gpu) and {c.shape} (cpu)"
    assert g.dtype == c.dtype, f"{what}: dtypes {g.dtype} (gpu) and {c.dtype} (cpu)"
    np.testing.assert_allclose(g, c, rtol=rtol, atol=atol, err_msg=what)


def tols(dtype, kernel=False):
    if np.dtype(dtype) == np.float64:
        return RTOL_F64, ATOL_F64
    return (KERNEL_RTOL_F32, KERNEL_ATOL_F32) if kernel else (RTOL_F32, ATOL_F32)

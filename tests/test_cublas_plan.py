"""The GPU's products without a GPU: kernels/gpu.py cublas_matmul driven against an emulated cuBLAS.

cuBLAS is column-major; minicnn's arrays are row-major views with any strides. kernels/gemm.py
cublas_plan works out the arguments of one cublas<t>gemmStridedBatched call; here a stand-in for CuPy's
cuBLAS binding carries that call out from its definition over the operands' flat memory
(gemm.cublas_reference) and checks what the real library would refuse (leading dimensions too small).
So a wrong transpose flag, leading dimension or batch stride fails on the CPU, before any GPU run.
"""
import types

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn.kernels.gemm import OP_N, OP_T, cublas_operand, cublas_plan, matmul_reference
from test_gpu import host_cupy, load_gpu_module


def flat_memory(x):
    """(flat array of the memory x lives in, offset of x's first element in it)."""
    owner = x
    while getattr(owner, "base", None) is not None:
        owner = owner.base
    owner = np.asarray(owner)
    assert owner.flags.owndata and min(owner.strides, default=0) >= 0  # one dense block, starting at its first element
    flat = np.lib.stride_tricks.as_strided(owner, (owner.size,), (owner.itemsize,))
    return flat, (x.ctypes.data - owner.ctypes.data) // x.itemsize


class HostCublas:
    """The part of cupy_backends.cuda.libs.cublas that gpu.py calls, computing from the definition.
    'Pointers' are the NumPy arrays themselves (gpu._ptr is replaced by the identity)."""
    CUBLAS_POINTER_MODE_HOST = 0
    calls = []

    @staticmethod
    def setPointerMode(handle, mode):
        assert mode == HostCublas.CUBLAS_POINTER_MODE_HOST

    @classmethod
    def sgemmStridedBatched(cls, handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb, strideB,
                            beta, C, ldc, strideC, batch):
        # cuBLAS's own argument checks (CUBLAS_STATUS_INVALID_VALUE otherwise)
        assert transa in (OP_N, OP_T) and transb in (OP_N, OP_T)
        assert min(m, n, k, batch) >= 0
        assert lda >= max(1, m if transa == OP_N else k), ("lda", lda, m, k)
        assert ldb >= max(1, k if transb == OP_N else n), ("ldb", ldb, k, n)
        assert ldc >= max(1, m), ("ldc", ldc, m)
        assert C.flags.c_contiguous and ldc == m and strideC == m * n  # gpu.py's output: row-major (batch, n, m)
        plan = dict(transa=transa, transb=transb, m=m, n=n, k=k, lda=lda, strideA=strideA, ldb=ldb,
                    strideB=strideB, batch=batch)
        (a_flat, a_off), (b_flat, b_off) = flat_memory(B), flat_memory(A)  # cuBLAS's A is the product's B side
        from minicnn.kernels.gemm import cublas_reference
        C.reshape(-1)[:] = cublas_reference(plan, a_flat, b_flat, a_off, b_off).reshape(-1)
        cls.calls.append(batch)

    @classmethod
    def sgemm(cls, handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
        cls.sgemmStridedBatched(handle, transa, transb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, m * n, 1)

    dgemm, dgemmStridedBatched = sgemm, sgemmStridedBatched


@pytest.fixture(scope="module")
def blas_gpu():
    fake = host_cupy(None)
    fake.cuda = types.SimpleNamespace(get_current_stream=fake.cuda.get_current_stream,
                                      device=types.SimpleNamespace(get_cublas_handle=lambda: 0))
    module = load_gpu_module(fake, name="minicnn.kernels._gpu_with_host_cublas")
    module._cublas, module._ptr = HostCublas, (lambda a: a)
    return module


def layout(draw, rows, cols, rng, dtype):
    """A (rows x cols) matrix stored one of several ways: contiguous, transposed, a slice of a wider
    matrix, every other column (neither rows nor columns contiguous: gpu.py must copy it)."""
    kind = draw(st.sampled_from(["contiguous", "transposed", "sliced", "strided"]))
    if kind == "contiguous":
        return rng.standard_normal((rows, cols)).astype(dtype)
    if kind == "transposed":
        return rng.standard_normal((cols, rows)).astype(dtype).T
    if kind == "sliced":
        return rng.standard_normal((rows + 1, cols + 3)).astype(dtype)[1:, 2:cols + 2]
    return rng.standard_normal((rows, 2 * cols)).astype(dtype)[:, ::2]


@st.composite
def products(draw):
    M, K, N = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    batch = draw(st.sampled_from([None, 1, 3]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31 - 1)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))

    def operand(rows, cols):
        if batch is None or draw(st.booleans()):  # a single matrix (broadcast over the batch when there is one)
            return layout(draw, rows, cols, rng, dtype)
        stack = np.stack([layout(draw, rows, cols, rng, dtype) for _ in range(batch)])
        return stack if draw(st.booleans()) else np.ascontiguousarray(stack.transpose(1, 2, 0)).transpose(2, 0, 1)
    return operand(M, K), operand(K, N)


@settings(max_examples=150, deadline=None)
@given(products())
def test_cublas_matmul_equals_the_definition_on_any_layout(blas_gpu, case):
    a, b = case
    got = blas_gpu.cublas_matmul(a, b)
    want = matmul_reference(a, b)
    assert got.shape == want.shape and got.dtype == a.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_one_call_and_no_copy_for_the_convolution_products(blas_gpu, monkeypatch):
    """The products the engine runs on the GPU each plan as one cuBLAS call on the arrays as they are."""
    copies = []
    real = blas_gpu.cp.ascontiguousarray
    monkeypatch.setattr(blas_gpu.cp, "ascontiguousarray", lambda x: copies.append(x.shape) or real(x), raising=False)
    rng = np.random.default_rng(0)
    N, OC, CKK, P = 4, 16, 144, 5 * 6
    w = rng.standard_normal((1, OC, CKK)).astype(np.float32)
    col = rng.standard_normal((CKK, N * P)).astype(np.float32)
    gy = rng.standard_normal((1, OC, N * P)).astype(np.float32)
    HostCublas.calls.clear()
    y = blas_gpu.cublas_matmul(w, col.reshape(CKK, N, P).transpose(1, 0, 2))   # forward, straight into (N, OC, P)
    np.testing.assert_allclose(y, matmul_reference(w, col.reshape(CKK, N, P).transpose(1, 0, 2)), rtol=1e-5, atol=1e-4)
    gw = blas_gpu.cublas_matmul(col[None], gy.swapaxes(-1, -2)).swapaxes(-1, -2)  # weight gradient
    np.testing.assert_allclose(gw, matmul_reference(gy, col.T[None]), rtol=1e-5, atol=1e-4)
    gcol = blas_gpu.cublas_matmul(w.swapaxes(-1, -2), gy)                      # column gradient
    np.testing.assert_allclose(gcol, matmul_reference(w.swapaxes(-1, -2), gy), rtol=1e-5, atol=1e-4)
    assert HostCublas.calls == [N, 1, 1] and copies == []


def test_operand_layouts():
    """cublas_operand on the four storage cases of a 2 x 3 matrix, and the strides a length-1 side ignores."""
    assert cublas_operand(2, 3, 3, 1) == (OP_N, 3)    # row-major: X^T stored column-major as it is
    assert cublas_operand(2, 3, 1, 2) == (OP_T, 2)    # column-major: cuBLAS transposes it
    assert cublas_operand(2, 3, 5, 1) == (OP_N, 5)    # rows of a wider matrix
    assert cublas_operand(2, 3, 6, 2) is None         # every other column: copy first
    assert cublas_operand(1, 3, 0, 1) == (OP_N, 3)    # one row: its row stride never matters
    assert cublas_operand(2, 1, 1, 0) == (OP_N, 1)    # one column: its column stride never matters
    assert cublas_plan((1, 2, 3), (0, 3, 1), (1, 3, 4), (0, 1, 2)) is None  # b's row stride 1 < 3 columns, col 2 < 3 rows

"""Matrix products on the CPU: NumPy's matmul, which hands the work to BLAS (gemm.cu is the GPU side).

Notation: C (M x N) = A (M x K) @ B (K x N), for each index of the leading (batch) dimensions, which
broadcast as in NumPy. Every convolution of minicnn ends in such products (functional/conv.py):
    forward   y = W @ col            (OC x C*KH*KW) @ (C*KH*KW x N*OH*OW)
    backward  gW = gy @ col^T,  gcol = W^T @ gy
The engine calls them through the backend (`kernels_for(x).matmul`), so the GPU can choose how to
run them (kernels/gpu.py: cuBLAS, or gemm.cu while a CUDA graph is captured).
"""
import numpy as np


def matmul(a, b):
    """a @ b for arrays of at least 2 dimensions, leading dimensions broadcast (NumPy -> BLAS)."""
    return np.matmul(a, b)


def matmul_reference(a, b):
    """The definition, for the tests: C[..., i, j] = sum_k A[..., i, k] * B[..., k, j], in float64 loops over k."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    out = np.zeros(shape)
    for k in range(a.shape[-1]):
        out += a[..., :, k:k + 1] * b[..., k:k + 1, :]
    return out


# ---- how a row-major product becomes one cuBLAS call -------------------------------------------------
# cuBLAS stores matrices column-major: entry (i, j) of a matrix with leading dimension ld sits at i + j*ld.
# A row-major matrix X (R x S) with strides (sr, 1) is, read column-major with ld = sr, the matrix X^T.
# So C = A @ B, with C row-major and contiguous, is computed as C^T = B^T @ A^T:
#     gemm(opB, opA, m=N, n=M, k=K, B, ldb, A, lda, C, ldc=N)
# where opX is "N" when X's rows are contiguous (X^T is stored as it is) and "T" when X's columns are
# (then X itself is stored column-major, ld = its column stride, and cuBLAS transposes it).
OP_N, OP_T = 0, 1  # cublasOperation_t: CUBLAS_OP_N, CUBLAS_OP_T


def cublas_operand(rows, cols, s_row, s_col):
    """(op, ld) under which cuBLAS reads X^T for a matrix X (rows x cols) with element strides (s_row, s_col),
    or None when neither its rows nor its columns are contiguous (the caller copies it first).
    A stride along a dimension of length 1 is never used, so it does not count."""
    if (s_col == 1 or cols == 1) and (rows == 1 or s_row >= max(1, cols)):
        return OP_N, (s_row if rows > 1 else max(1, cols))
    if (s_row == 1 or rows == 1) and (cols == 1 or s_col >= max(1, rows)):
        return OP_T, (s_col if cols > 1 else max(1, rows))
    return None


def cublas_plan(a_shape, a_strides, b_shape, b_strides):
    """The arguments of one cublas<t>gemmStridedBatched call computing C = A @ B for stacks of matrices.

    a_shape = (batch or 1, M, K), b_shape = (batch or 1, K, N), strides in elements (a batch of 1 or a
    broadcast batch has stride 0). C is (batch, M, N), C-contiguous. Returns a dict with the call's
    arguments in cuBLAS's order (transa, transb, m, n, k, "A" = the B side, lda, strideA, "B" = the A side,
    ldb, strideB, ldc, strideC, batch), or None when an operand must be copied to a contiguous layout first.
    """
    (batch_a, M, K), (batch_b, K2, N) = a_shape, b_shape
    assert K == K2, (a_shape, b_shape)
    batch = max(batch_a, batch_b)
    plan_b = cublas_operand(K, N, b_strides[1], b_strides[2])
    plan_a = cublas_operand(M, K, a_strides[1], a_strides[2])
    if plan_a is None or plan_b is None:
        return None
    stride_a = a_strides[0] if batch_a > 1 else 0
    stride_b = b_strides[0] if batch_b > 1 else 0
    if min(stride_a, stride_b) < 0 or max(plan_a[1], plan_b[1], M, N, K, batch) >= 2 ** 31:
        return None
    return dict(transa=plan_b[0], transb=plan_a[0], m=N, n=M, k=K, lda=plan_b[1], strideA=stride_b,
                ldb=plan_a[1], strideB=stride_a, ldc=max(1, N), strideC=M * N, batch=batch)


def cublas_reference(plan, a_flat, b_flat, a_offset=0, b_offset=0):
    """What cuBLAS computes for `plan`, from the definition over flat memory (for the tests, no GPU needed):
    C_col[i, j] = sum_k opA(A)[i, k] * opB(B)[k, j] per batch, A read column-major at i + j*lda;
    returned as the row-major C (batch, M, N), i.e. C_col transposed."""
    p = plan
    out = np.zeros((p["batch"], p["n"], p["m"]))
    for t in range(p["batch"]):
        def col_major(flat, offset, rows, cols, ld, stride):
            i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
            return flat[offset + t * stride + i + j * ld].astype(np.float64)
        # op(X) is (m x k) for the first operand and (k x n) for the second, so X is stored as that or its transpose
        first = (col_major(b_flat, b_offset, p["m"], p["k"], p["lda"], p["strideA"]) if p["transa"] == OP_N
                 else col_major(b_flat, b_offset, p["k"], p["m"], p["lda"], p["strideA"]).T)
        second = (col_major(a_flat, a_offset, p["k"], p["n"], p["ldb"], p["strideB"]) if p["transb"] == OP_N
                  else col_major(a_flat, a_offset, p["n"], p["k"], p["ldb"], p["strideB"]).T)
        out[t] = (first @ second).T
    return out

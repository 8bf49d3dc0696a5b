"""Batch normalisation in training mode on the CPU: per-channel statistics and the backward pass as Numba loops.

Notation: N images, C channels, H, W height and width; M = N*H*W values per channel.
Forward:  mean[c] = sum x[n, c, h, w] / M;   var[c] = sum (x - mean[c])^2 / M
          computed in one pass over d = x - k[c], with k[c] = x[0, c, 0, 0] any value of the channel:
          mean = k + sum d / M,  var = sum d^2 / M - (sum d / M)^2   (the shift keeps the difference
          small, so it does not cancel as sum x^2 / M - mean^2 can)
          invstd[c] = 1 / sqrt(var[c] + eps)
          y[n, c, h, w] = (x - mean[c]) * invstd[c] * gamma[c] + beta[c]
          running_mean <- (1 - m) * running_mean + m * mean,  running_var likewise with var * M / (M - 1)
Backward: xhat = (x - mean[c]) * invstd[c]   (recomputed, not stored)
          dbeta[c] = sum gy;   dgamma[c] = sum gy * xhat
          gx = gamma[c] * invstd[c] * (gy - dbeta[c] / M - xhat * dgamma[c] / M)
Sums run in float64. The two sum kernels allow LLVM to reassociate additions (fastmath 'reassoc', in
these kernels only), so its loop vectorizer splits each sum into vector lanes of partial sums added up
at the end: many independent chains of additions instead of one (a float add waits ~4 cycles for the
previous one), 3x faster than the four hand-written partial sums this replaced (benchmarks/README.md,
session 8). The order is still fixed: the same input gives the same bits, whatever the thread count
(each channel's sums are one thread's).
Parallel over channels for the sums, over (n, c) planes (flattened: one loop of H*W) for the
elementwise passes.
With `relu` set the layer normalises relu(x) instead of x -- a ReLU fused in front, which saves its
pass over the data each way and its output array: every read of x below is a read of relu(x)
(`_input`), and the backward pass ends with gx *= [x > 0], the ReLU's gradient.
The same formulas, written with array expressions, are in minicnn/functional/norm.py (eval mode);
batchnorm.cu is the GPU twin of these loops.
"""
import numpy as np
from numba import njit, prange

from .dropout import dropout_apply


@njit(cache=True, inline="always")
def _input(v, relu, zero):
    """What the layer normalises: relu(x) (NaN passes, as in relu.py) when `relu` is True, x itself when it is
    None: None is a type of its own, so Numba compiles the kernels once for each, and the plain version
    carries no compare (a run-time flag put a select in every loop: measured, the fused kernels 60% slower
    than ReLU and batch norm apart, the plain ones up to 40%; benchmarks/README.md, session 6)."""
    if relu is None:
        return v
    return zero if v <= zero else v


@njit(cache=True, parallel=True, fastmath={'reassoc'})
def _stats(x, mean, var, relu):
    zero = np.zeros(1, x.dtype)[0]
    N, C, H, W = x.shape
    L = H * W
    M = N * L
    xf = x.reshape(N, C, L)
    for c in prange(C):
        k = np.float64(_input(x[0, c, 0, 0], relu, zero))
        s = q = 0.0                              # sums of d and d^2
        for n in range(N):
            p = xf[n, c]
            for j in range(L):
                d = _input(p[j], relu, zero) - k
                s += d
                q += d * d
        mean[c] = k + s / M
        var[c] = max(q / M - (s / M) ** 2, 0.0)


@njit(cache=True, parallel=True)
def _affine(x, shift, scale, beta, y, relu):
    """y = (x - shift[c]) * scale[c] + beta[c], plane by plane (x: relu(x) when `relu`)."""
    zero = np.zeros(1, x.dtype)[0]
    N, C, H, W = x.shape
    xf, yf = x.reshape(N, C, H * W), y.reshape(N, C, H * W)
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        m, s, b = shift[c], scale[c], beta[c]
        xp, yp = xf[n, c], yf[n, c]
        for j in range(H * W):
            yp[j] = (_input(xp[j], relu, zero) - m) * s + b


@njit(cache=True, parallel=True, fastmath={'reassoc'})
def _grad_sums(gy, x, mean, invstd, dbeta, dgamma, relu):
    zero = np.zeros(1, x.dtype)[0]
    N, C, H, W = x.shape
    L = H * W
    gf, xf = gy.reshape(N, C, L), x.reshape(N, C, L)
    for c in prange(C):
        m, k = np.float64(mean[c]), np.float64(invstd[c])
        b = g = 0.0                              # sums of gy and of gy * (x - mean); g times invstd at the end
        for n in range(N):
            gp, xp = gf[n, c], xf[n, c]
            for j in range(L):
                v = np.float64(gp[j])
                b += v
                g += v * (_input(xp[j], relu, zero) - m)
        dbeta[c] = b
        dgamma[c] = g * k


@njit(cache=True, parallel=True)
def _grad_input(gy, x, mean, invstd, gamma, dbeta, dgamma, gx, relu):
    zero = np.zeros(1, x.dtype)[0]
    N, C, H, W = x.shape
    M = N * H * W
    gf, xf, of = gy.reshape(N, C, H * W), x.reshape(N, C, H * W), gx.reshape(N, C, H * W)
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        m, k = mean[c], invstd[c]
        a = gamma[c] * k
        b = dbeta[c] / M
        d = dgamma[c] / M
        gp, xp, op = gf[n, c], xf[n, c], of[n, c]
        for j in range(H * W):
            xhat = (_input(xp[j], relu, zero) - m) * k
            g = a * (gp[j] - b - xhat * d)
            op[j] = g if relu is None else g * (1 if xp[j] > 0 else 0)   # the ReLU's gradient, as relu.py writes it


def batch_norm_forward(x, gamma, beta, eps, running_mean=None, running_var=None, momentum=0.1, relu=False,
                       dropout_p=0.0, dropout_key=0):
    """Training-mode batch norm of x (N, C, H, W), or of relu(x) when `relu`: returns y, and the batch mean,
    variance and 1/std per channel. With dropout_p > 0, y goes through dropout_apply(y, dropout_p, dropout_key)
    (a dropout layer fused behind: on the CPU its own pass, on the GPU the same pass as y).

    When running_mean and running_var (C,) are given they are updated in place, weighing the batch by
    `momentum`: running = (1 - momentum) * running + momentum * batch statistic, the variance unbiased
    (times M / (M - 1))."""
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    mean, var = np.empty(C, np.float64), np.empty(C, np.float64)
    _stats(x, mean, var, True if relu else None)
    invstd = 1.0 / np.sqrt(var + eps)
    y = np.empty_like(x)
    _affine(x, mean, invstd * gamma, beta.astype(np.float64), y, True if relu else None)
    mean, var = mean.astype(x.dtype), var.astype(x.dtype)
    if running_mean is not None:
        M = N * H * W
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (M / max(M - 1, 1))
    if dropout_p > 0:
        y = dropout_apply(y, dropout_p, dropout_key)
    return y, mean, var, invstd.astype(x.dtype)


def batch_norm_backward(gy, x, mean, invstd, gamma, relu=False, dropout_p=0.0, dropout_key=0):
    """Gradients (gx, dgamma, dbeta) of training-mode batch norm, recomputing xhat from x, mean and invstd
    (of relu(x), and gx times the ReLU's gradient, when `relu`; gy through the fused dropout's mask first)."""
    if dropout_p > 0:
        gy = dropout_apply(gy, dropout_p, dropout_key)
    gy, x = np.ascontiguousarray(gy), np.ascontiguousarray(x)
    C = x.shape[1]
    dbeta, dgamma = np.empty(C, np.float64), np.empty(C, np.float64)
    _grad_sums(gy, x, mean, invstd, dbeta, dgamma, True if relu else None)
    gx = np.empty_like(x)
    _grad_input(gy, x, mean, invstd, gamma, dbeta, dgamma, gx, True if relu else None)
    return gx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)

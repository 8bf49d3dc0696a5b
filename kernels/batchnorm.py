"""Batch normalisation in training mode on the CPU: per-channel statistics and the backward pass as Numba loops.

Notation: N images, C channels, H, W height and width; M = N*H*W values per channel.
Forward:  mean[c] = sum x[n, c, h, w] / M;   var[c] = sum (x - mean[c])^2 / M   (two passes: stable)
          invstd[c] = 1 / sqrt(var[c] + eps)
          y[n, c, h, w] = (x - mean[c]) * invstd[c] * gamma[c] + beta[c]
Backward: xhat = (x - mean[c]) * invstd[c]   (recomputed, not stored)
          dbeta[c] = sum gy;   dgamma[c] = sum gy * xhat
          gx = gamma[c] * invstd[c] * (gy - dbeta[c] / M - xhat * dgamma[c] / M)
Sums run in float64. Parallel over channels for the sums, over (n, c) planes for the elementwise passes.
The same formulas, written with array expressions, are in minicnn/functional/norm.py (eval mode, GPU).
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _stats(x, mean, var):
    N, C, H, W = x.shape
    M = N * H * W
    for c in prange(C):
        s = 0.0
        for n in range(N):
            for i in range(H):
                for j in range(W):
                    s += x[n, c, i, j]
        mu = s / M
        ss = 0.0
        for n in range(N):
            for i in range(H):
                for j in range(W):
                    d = x[n, c, i, j] - mu
                    ss += d * d
        mean[c] = mu
        var[c] = ss / M


@njit(cache=True, parallel=True)
def _affine(x, shift, scale, beta, y):
    """y = (x - shift[c]) * scale[c] + beta[c], plane by plane."""
    N, C, H, W = x.shape
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        m, s, b = shift[c], scale[c], beta[c]
        for i in range(H):
            for j in range(W):
                y[n, c, i, j] = (x[n, c, i, j] - m) * s + b


@njit(cache=True, parallel=True)
def _grad_sums(gy, x, mean, invstd, dbeta, dgamma):
    N, C, H, W = x.shape
    for c in prange(C):
        sb = 0.0
        sg = 0.0
        m, k = mean[c], invstd[c]
        for n in range(N):
            for i in range(H):
                for j in range(W):
                    g = gy[n, c, i, j]
                    sb += g
                    sg += g * (x[n, c, i, j] - m) * k
        dbeta[c] = sb
        dgamma[c] = sg


@njit(cache=True, parallel=True)
def _grad_input(gy, x, mean, invstd, gamma, dbeta, dgamma, gx):
    N, C, H, W = x.shape
    M = N * H * W
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        m, k = mean[c], invstd[c]
        a = gamma[c] * k
        b = dbeta[c] / M
        d = dgamma[c] / M
        for i in range(H):
            for j in range(W):
                xhat = (x[n, c, i, j] - m) * k
                gx[n, c, i, j] = a * (gy[n, c, i, j] - b - xhat * d)


def batch_norm_forward(x, gamma, beta, eps):
    """Training-mode batch norm of x (N, C, H, W): returns y, and the batch mean, variance and 1/std per channel."""
    x = np.ascontiguousarray(x)
    C = x.shape[1]
    mean, var = np.empty(C, np.float64), np.empty(C, np.float64)
    _stats(x, mean, var)
    invstd = 1.0 / np.sqrt(var + eps)
    y = np.empty_like(x)
    _affine(x, mean, invstd * gamma, beta.astype(np.float64), y)
    return y, mean.astype(x.dtype), var.astype(x.dtype), invstd.astype(x.dtype)


def batch_norm_backward(gy, x, mean, invstd, gamma):
    """Gradients (gx, dgamma, dbeta) of training-mode batch norm, recomputing xhat from x, mean and invstd."""
    gy, x = np.ascontiguousarray(gy), np.ascontiguousarray(x)
    C = x.shape[1]
    dbeta, dgamma = np.empty(C, np.float64), np.empty(C, np.float64)
    _grad_sums(gy, x, mean, invstd, dbeta, dgamma)
    gx = np.empty_like(x)
    _grad_input(gy, x, mean, invstd, gamma, dbeta, dgamma, gx)
    return gx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)

"""Cross-entropy from logits on the CPU, one pass over each row each way (cross_entropy.cu is the GPU twin).

Notation: N rows (images), K classes; x (N, K) logits, t (N,) integer labels, gy the loss's gradient
(one value for the "mean" and "sum" reductions, N values for "none").
    m[n]     = max_k x[n, k]                              (shifting by the maximum: exp never overflows)
    s[n]     = sum_k exp(x[n, k] - m[n])
    loss[n]  = log(s[n]) - (x[n, t[n]] - m[n])            (= logsumexp(x[n]) - x[n, t[n]])
    p[n, k]  = exp(x[n, k] - m[n]) / s[n]                 (softmax, kept for the backward pass)
    reduced  = (sum_n loss[n]) / D                        (D = N for "mean", else 1; in float64)
    gx[n, k] = (p[n, k] - [k == t[n]]) * (gy[n or 0] / D)
The exponentials and the row sum are taken in float64 whatever the input type (K is small: a row is
one thread's work on the GPU too), then rounded once. A label outside [0, K) gives a NaN row: the GPU
cannot check labels without waiting for the device, so neither backend raises here (the engine checks
them on the CPU, minicnn/functional/loss.py). The NumPy version is `cross_entropy_forward` in numpy_backend.py.
The rows run on one thread: eip4's 128 x 10 logits take about 40 us, less than handing half of them to a
second thread costs.
"""
import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _cross_entropy_forward(x, t, losses, p):
    N, K = x.shape
    for n in range(N):
        label = t[n]
        if label < 0 or label >= K:
            losses[n] = np.nan
            p[n, :] = np.nan
            continue
        m = x[n, 0]
        for k in range(1, K):
            if x[n, k] > m:
                m = x[n, k]
        s = 0.0
        for k in range(K):
            s += math.exp(np.float64(x[n, k]) - np.float64(m))
        for k in range(K):
            p[n, k] = math.exp(np.float64(x[n, k]) - np.float64(m)) / s
        losses[n] = math.log(s) - (np.float64(x[n, label]) - np.float64(m))


@njit(cache=True, nogil=True)
def _cross_entropy_backward(p, t, gy, gy_step, divisor, gx):
    N, K = p.shape
    for n in range(N):
        f = gy[n * gy_step] / divisor
        for k in range(K):
            gx[n, k] = (p[n, k] - (1 if k == t[n] else 0)) * f


def cross_entropy_forward(x, t, divisor=1):
    """(losses (N,), softmax p (N, K), reduced = sum of the losses / divisor as a 0-d array) of logits x (N, K)
    against labels t (N,): divisor N gives the mean."""
    x = np.ascontiguousarray(x)
    losses, p = np.empty(x.shape[0], x.dtype), np.empty_like(x)
    _cross_entropy_forward(x, np.ascontiguousarray(t, dtype=np.int64), losses, p)
    return losses, p, np.asarray(losses.sum(dtype=np.float64) / divisor, dtype=x.dtype)


def cross_entropy_backward(p, t, gy, divisor):
    """The logits' gradient from the forward's softmax p: gy is one value (gradient of a mean or sum of the
    losses; divide by `divisor` = N for a mean) or N values (reduction "none", divisor 1)."""
    gy = np.ascontiguousarray(gy, dtype=p.dtype).reshape(-1)
    gx = np.empty_like(p)
    _cross_entropy_backward(p, np.ascontiguousarray(t, dtype=np.int64), gy, 1 if gy.size > 1 else 0,
                            p.dtype.type(divisor), gx)
    return gx

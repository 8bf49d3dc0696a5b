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
Sums run in float64, in an order the source fixes: each channel's sums are one thread's, and within a
channel every position j of the plane (j = h*W + w) first collects its N values, image after image, in
an array of L = H*W partial sums; the L partial sums are then added in order of j:
          S[c] = sum_j ( sum_n d[n, c, j] )      (each parenthesis left to right, as written)
The loop over j is elementwise (L independent chains of additions, which LLVM vectorizes with no
licence to reorder: no fastmath), and it reads four images per pass over the row, so the partial sums
are loaded and stored once per four additions -- the same additions in the same order as one image per
pass. So the bits of every sum depend on the values alone: not on the thread count, not on the vector
width of the machine, not on whether the ReLU in front is fused (`pytest tests/test_norm.py -k "order or
fused"` checks the order and the fused ReLU, `pytest tests/test_determinism.py -k batch_norm` one thread
against two).
Threads: each kernel below is the loop body of one pass, over a run of chunks k0 .. k1-1 -- channels
for the sums (`_stats`, `_grad_sums`), (n, c) planes (flattened: one loop of H*W) for the elementwise
passes (`_affine`, `_grad_input`) -- and cpu_fast.parallel.run_chunks hands each thread one run of
consecutive chunks, one call of the kernel (nogil: the threads run at once). A pass over fewer than
PARALLEL_VALUES values runs all its chunks on the calling thread (`_run`). A chunk is a channel or a
plane whatever the thread count, and one thread computes it whole, so the thread count decides only who
computes a chunk, never what it adds. The kernels are plain @njit, not `parallel=True` loops: those
compile each body twice (alone, then inside the loop around it). A first training run
(`NUMBA_CACHE_DIR=$(mktemp -d) python examples/mnist.py --epochs 1 --train-limit 1280 --threads 2
--no-progress`, each compilation timed by Numba's "numba:compile" events, two runs back to back on a
2-core AMD EPYC) spent 24 of its 44 s of compilation on batch norm as eight `parallel=True` loops (four
passes, each with and without the ReLU), and 5 of 25 s on these four kernels, each compiled once for
both (`_input`).
With `relu` set the layer normalises relu(x) instead of x -- a ReLU fused in front, which saves its
pass over the data each way and its output array: every read of x below is a read of relu(x)
(`_input`), and the backward pass ends with gx *= [x > 0], the ReLU's gradient.
The same formulas, written with array expressions, are in minicnn/functional/norm.py (eval mode);
batchnorm.cu is the GPU twin of these loops.
"""
import numpy as np
from numba import njit

from .cpu_fast.parallel import run_chunks
from .dropout import dropout_apply

# Passes over fewer values run on the calling thread alone. Handing a run of chunks to a second thread costs
# 100-150 us on a 2-core AMD EPYC, about what one thread takes for 2^19 values in these passes: below that
# the second thread loses more than it gains. Each pass alone through run_chunks on 1 against 2 threads
# (numba.set_num_threads; float32, N = 128, C = 16, medians of 301 interleaved runs): 2^18 values 108/259 us
# (_stats) to 251/307 us (_grad_input), 2^19 values 236/293 to 465/383, 2^20 values 427/355 to 893/640.
PARALLEL_VALUES = 1 << 19


@njit(cache=True, inline="always")
def _input(v, relu, zero):
    """What the layer normalises: relu(x) (NaN passes, as in relu.py) when `relu` is True, x itself when False.
    `relu` is the same for a whole call, so LLVM takes the test out of the loops (loop unswitching): each kernel
    compiles once for both, and the plain loops run without the compare-and-select, as fast as a kernel compiled
    for the plain case alone. Both add in the order the source writes (module docstring), so the fused ReLU
    gives the bits of relu.py's ReLU and the plain version apart."""
    if not relu:
        return v
    return zero if v <= zero else v


@njit(cache=True, inline="always")
def _in_order(a):
    """a[0] + a[1] + ... + a[len(a) - 1], left to right."""
    t = 0.0
    for j in range(a.shape[0]):
        t += a[j]
    return t


@njit(cache=True, nogil=True)
def _stats(k0, k1, args):
    """mean[c] and var[c] for the channels c = k0 .. k1-1, args = (x, mean, var, relu)."""
    x, mean, var, relu = args
    zero = np.zeros(1, x.dtype)[0]
    N, C, H, W = x.shape
    L = H * W
    M = N * L
    xf = x.reshape(N, C, L)
    for c in range(k0, k1):
        k = np.float64(_input(x[0, c, 0, 0], relu, zero))
        s, q = np.zeros(L), np.zeros(L)          # per position j: the sums over the images of d and d^2
        n = 0
        while n + 4 <= N:                        # four images a pass: s[j] + d0 + d1 + d2 + d3, left to right
            p0, p1, p2, p3 = xf[n, c], xf[n + 1, c], xf[n + 2, c], xf[n + 3, c]
            for j in range(L):
                d0 = _input(p0[j], relu, zero) - k
                d1 = _input(p1[j], relu, zero) - k
                d2 = _input(p2[j], relu, zero) - k
                d3 = _input(p3[j], relu, zero) - k
                s[j] = s[j] + d0 + d1 + d2 + d3
                q[j] = q[j] + d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3
            n += 4
        for r in range(n, N):                    # the last N % 4 images, one a pass
            p = xf[r, c]
            for j in range(L):
                d = _input(p[j], relu, zero) - k
                s[j] += d
                q[j] += d * d
        S, Q = _in_order(s), _in_order(q)
        mean[c] = k + S / M
        var[c] = max(Q / M - (S / M) ** 2, 0.0)


@njit(cache=True, nogil=True)
def _affine(k0, k1, args):
    """y = (x - shift[c]) * scale[c] + beta[c] on the planes nc = k0 .. k1-1 (x: relu(x) when `relu`),
    args = (x, shift, scale, beta, y, relu)."""
    x, shift, scale, beta, y, relu = args
    zero = np.zeros(1, x.dtype)[0]
    N, C, H, W = x.shape
    xf, yf = x.reshape(N, C, H * W), y.reshape(N, C, H * W)
    for nc in range(k0, k1):
        n = nc // C
        c = nc % C
        m, s, b = shift[c], scale[c], beta[c]
        xp, yp = xf[n, c], yf[n, c]
        for j in range(H * W):
            yp[j] = (_input(xp[j], relu, zero) - m) * s + b


@njit(cache=True, nogil=True)
def _grad_sums(k0, k1, args):
    """dbeta[c] and dgamma[c] for the channels c = k0 .. k1-1, args = (gy, x, mean, invstd, dbeta, dgamma, relu)."""
    gy, x, mean, invstd, dbeta, dgamma, relu = args
    zero = np.zeros(1, x.dtype)[0]
    N, C, H, W = x.shape
    L = H * W
    gf, xf = gy.reshape(N, C, L), x.reshape(N, C, L)
    for c in range(k0, k1):
        m, k = np.float64(mean[c]), np.float64(invstd[c])
        b, g = np.zeros(L), np.zeros(L)          # per position j: the sums over the images of gy and of
        n = 0                                    # gy * (x - mean); g times invstd at the end
        while n + 4 <= N:                        # four images a pass, added left to right as in _stats
            g0, g1, g2, g3 = gf[n, c], gf[n + 1, c], gf[n + 2, c], gf[n + 3, c]
            x0, x1, x2, x3 = xf[n, c], xf[n + 1, c], xf[n + 2, c], xf[n + 3, c]
            for j in range(L):
                v0, v1, v2, v3 = np.float64(g0[j]), np.float64(g1[j]), np.float64(g2[j]), np.float64(g3[j])
                b[j] = b[j] + v0 + v1 + v2 + v3
                g[j] = (g[j] + v0 * (_input(x0[j], relu, zero) - m) + v1 * (_input(x1[j], relu, zero) - m)
                        + v2 * (_input(x2[j], relu, zero) - m) + v3 * (_input(x3[j], relu, zero) - m))
            n += 4
        for r in range(n, N):                    # the last N % 4 images, one a pass
            gp, xp = gf[r, c], xf[r, c]
            for j in range(L):
                v = np.float64(gp[j])
                b[j] += v
                g[j] += v * (_input(xp[j], relu, zero) - m)
        dbeta[c] = _in_order(b)
        dgamma[c] = _in_order(g) * k


@njit(cache=True, nogil=True)
def _grad_input(k0, k1, args):
    """gx on the planes nc = k0 .. k1-1, args = (gy, x, mean, invstd, gamma, dbeta, dgamma, gx, relu)."""
    gy, x, mean, invstd, gamma, dbeta, dgamma, gx, relu = args
    zero = np.zeros(1, x.dtype)[0]
    N, C, H, W = x.shape
    M = N * H * W
    gf, xf, of = gy.reshape(N, C, H * W), x.reshape(N, C, H * W), gx.reshape(N, C, H * W)
    for nc in range(k0, k1):
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
            op[j] = g * (1 if xp[j] > 0 else 0) if relu else g   # the ReLU's gradient, as relu.py writes it


def _run(kernel, chunks, args, values):
    """kernel(k0, k1, args) over the chunks 0 .. chunks-1: in one call on the calling thread when the pass reads fewer
    than PARALLEL_VALUES values, else one run per thread (run_chunks)."""
    if values < PARALLEL_VALUES:
        kernel(0, chunks, args)
    else:
        run_chunks(kernel, chunks, args)


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
    relu = bool(relu)
    _run(_stats, C, (x, mean, var, relu), x.size)
    invstd = 1.0 / np.sqrt(var + eps)
    y = np.empty_like(x)
    _run(_affine, N * C, (x, mean, invstd * gamma, beta.astype(np.float64), y, relu), x.size)
    with np.errstate(over="ignore"):   # statistics past float32's range become inf, as float32 arithmetic would give
        mean, var, invstd = mean.astype(x.dtype), var.astype(x.dtype), invstd.astype(x.dtype)
    if running_mean is not None:
        M = N * H * W
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (M / max(M - 1, 1))
    if dropout_p > 0:
        y = dropout_apply(y, dropout_p, dropout_key)
    return y, mean, var, invstd


def batch_norm_backward(gy, x, mean, invstd, gamma, relu=False, dropout_p=0.0, dropout_key=0):
    """Gradients (gx, dgamma, dbeta) of training-mode batch norm, recomputing xhat from x, mean and invstd
    (of relu(x), and gx times the ReLU's gradient, when `relu`; gy through the fused dropout's mask first)."""
    if dropout_p > 0:
        gy = dropout_apply(gy, dropout_p, dropout_key)
    gy, x = np.ascontiguousarray(gy), np.ascontiguousarray(x)
    N, C = x.shape[:2]
    relu = bool(relu)
    dbeta, dgamma = np.empty(C, np.float64), np.empty(C, np.float64)
    _run(_grad_sums, C, (gy, x, mean, invstd, dbeta, dgamma, relu), x.size)
    gx = np.empty_like(x)
    _run(_grad_input, N * C, (gy, x, mean, invstd, gamma, dbeta, dgamma, gx, relu), x.size)
    return gx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)

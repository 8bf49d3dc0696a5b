"""The plain-NumPy backend: every kernel of minicnn as NumPy array expressions, under the contract's names. No Numba.

It is the backend to read and to step through in a debugger: each function is the formula of its Numba
twin (im2col.py, pool.py, batchnorm.py, ...: the notation and index formulas are in their docstrings)
written with whole-array operations, one after the other, on one thread. It runs the whole engine --
training, the data pipeline and augmentation -- where Numba is not installed, or when chosen with
`MINICNN_KERNELS=numpy` or `minicnn.config.using(kernels="numpy")`. It is slower, and it is the baseline
the benchmarks measure the Numba kernels against (benchmarks/train_bench.py).

Convolutions run the lesson path (minicnn/functional/conv.py: im2col, one GEMM per group, col2im), except
the two shapes that are one matrix product (conv_matmul.py).
"""
import math
import sys
from types import MappingProxyType

import numpy as np

from . import conv_matmul
from .conv_geometry import ConvGeometry, out_size  # noqa: F401
from .gemm import matmul, sum_leading, sum_rows  # noqa: F401

capabilities = MappingProxyType({
    "name": "numpy",
    "conv_algorithms": ("im2col", "pointwise", "whole_image"),
    "gemm_routes": (),
    "fused_batch_norm": True,
})


def conv2d_plan(g, algorithm="auto"):
    """The one-matrix-product algorithms where they apply (conv_matmul.py), else None: the lesson path."""
    return conv_matmul.plan(g, algorithm, sys.modules[__name__])


# ---- im2col.py: one strided slice of the padded input per kernel offset ------------------------------------
def im2col(x, KH, KW, SH=1, SW=1, PH=0, PW=0, DH=1, DW=1):
    """x (N, C, H, W) -> col (C, KH, KW, N, OH, OW), col[c, kh, kw, n, oh, ow] = x[n, c, oh*SH-PH+kh*DH, ow*SW-PW+kw*DW]."""
    N, C, H, W = x.shape
    OH, OW = out_size(H, KH, SH, PH, DH), out_size(W, KW, SW, PW, DW)
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    col = np.empty((C, KH, KW, N, OH, OW), dtype=x.dtype)
    for kh in range(KH):
        for kw in range(KW):
            h0, w0 = kh * DH, kw * DW
            patch = xp[:, :, h0:h0 + SH * (OH - 1) + 1:SH, w0:w0 + SW * (OW - 1) + 1:SW]  # (N, C, OH, OW)
            col[:, kh, kw] = patch.transpose(1, 0, 2, 3)
    return col


def col2im(col, H, W, SH=1, SW=1, PH=0, PW=0, DH=1, DW=1):
    """The adjoint of im2col: each kernel offset's slice added back onto the padded input, then the padding cropped."""
    C, KH, KW, N, OH, OW = col.shape
    dxp = np.zeros((N, C, H + 2 * PH, W + 2 * PW), dtype=col.dtype)
    for kh in range(KH):
        for kw in range(KW):
            h0, w0 = kh * DH, kw * DW
            dxp[:, :, h0:h0 + SH * (OH - 1) + 1:SH, w0:w0 + SW * (OW - 1) + 1:SW] += col[:, kh, kw].transpose(1, 0, 2, 3)
    return dxp[:, :, PH:PH + H, PW:PW + W].copy()


# ---- pool.py: the windows as one strided view ---------------------------------------------------------------
def _windows(x, KH, KW, SH, SW, PH, PW, fill):
    """(N, C, OH, OW, KH*KW): every window of x padded with `fill`, in row-major window order."""
    N, C, H, W = x.shape
    OH, OW = out_size(H, KH, SH, PH), out_size(W, KW, SW, PW)
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)), constant_values=fill)
    view = np.lib.stride_tricks.sliding_window_view(xp, (KH, KW), axis=(2, 3))[:, :, ::SH, ::SW][:, :, :OH, :OW]
    return view.reshape(N, C, OH, OW, KH * KW)


def max_pool2d_forward(x, KH, KW, SH, SW, PH=0, PW=0):
    """(y, argmax): the window's maximum and its flat input index ih*W + iw; a NaN in the window wins (the last
    NaN in row-major window order), as in PyTorch; else the first maximum. Padding is -inf."""
    N, C, H, W = x.shape
    win = _windows(x, KH, KW, SH, SW, PH, PW, -np.inf)
    real = _windows(np.ones((1, 1, H, W), dtype=bool), KH, KW, SH, SW, PH, PW, False)   # not padding
    nan = np.isnan(win)
    values = np.where(real & ~nan, win, -np.inf)
    first_max = (real & (values == values.max(axis=-1, keepdims=True))).argmax(axis=-1)
    last_nan = KH * KW - 1 - nan[..., ::-1].argmax(axis=-1)
    k = np.where(nan.any(axis=-1), last_nan, first_max)
    y = np.take_along_axis(win, k[..., None], axis=-1)[..., 0]
    OH, OW = y.shape[2:]
    ih = np.arange(OH)[:, None] * SH - PH + k // KW
    iw = np.arange(OW)[None, :] * SW - PW + k % KW
    return y.astype(x.dtype, copy=False), (ih * W + iw).astype(np.int32)


def max_pool2d_backward(gy, argmax, H, W, KH, KW, SH, SW, PH=0, PW=0):
    """Each gradient added to its window's winner (np.add.at: overlapping windows accumulate)."""
    N, C = gy.shape[:2]
    gx = np.zeros((N, C, H * W), dtype=gy.dtype)
    n, c = np.meshgrid(np.arange(N), np.arange(C), indexing="ij")
    np.add.at(gx, (n[..., None], c[..., None], argmax.reshape(N, C, -1)), gy.reshape(N, C, -1))
    return gx.reshape(N, C, H, W)


def avg_pool2d_forward(x, KH, KW, SH, SW, PH=0, PW=0):
    """The window's mean, padding counted as zeros."""
    return (_windows(x, KH, KW, SH, SW, PH, PW, 0).sum(axis=-1) / (KH * KW)).astype(x.dtype, copy=False)


def avg_pool2d_backward(gy, H, W, KH, KW, SH, SW, PH=0, PW=0):
    """Each gradient spread evenly over its window: the windows' adjoint, as col2im adds columns back."""
    N, C, OH, OW = gy.shape
    col = np.broadcast_to((gy / (KH * KW)).transpose(1, 0, 2, 3)[:, None, None], (C, KH, KW, N, OH, OW))
    return col2im(np.ascontiguousarray(col), H, W, SH, SW, PH, PW).astype(gy.dtype, copy=False)


# ---- relu.py -------------------------------------------------------------------------------------------------
def relu_forward(x):
    """max(x, 0); NaN stays NaN."""
    return np.maximum(x, 0)


def relu_backward(gy, y):
    """gy where the output is positive, else 0 (y > 0 exactly where x > 0)."""
    return gy * (y > 0)


# ---- dropout.py: the counter-based hash as uint64 array arithmetic (it wraps mod 2^64) ---------------------
GOLDEN, MIX1, MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
BITS = 24


def dropout_threshold(p):
    """T = ceil(p * 2^24): an entry is kept when its 24 random bits are >= T."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
    return np.uint64(math.ceil(p * (1 << BITS)))


def dropout_mask(shape, p, key, dtype=np.float32):
    """mask[i] = 1/(1-p) where the hash of (key, i) keeps entry i, else 0."""
    dtype = np.dtype(dtype)
    i = np.arange(1, math.prod(shape) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(key) + i * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * MIX1
        z = (z ^ (z >> np.uint64(27))) * MIX2
    z = z ^ (z >> np.uint64(31))
    keep = (z >> np.uint64(64 - BITS)) >= dropout_threshold(p)
    return np.where(keep, dtype.type(1.0 / (1.0 - p)), dtype.type(0)).reshape(shape)


def dropout_apply(x, p, key):
    """x * mask(key): forward on activations, backward on gradients (the same mask, recomputed from the key)."""
    return x * dropout_mask(x.shape, p, key, x.dtype)


# ---- cross_entropy.py ------------------------------------------------------------------------------------------
def cross_entropy_forward(x, t, divisor=1):
    """(losses (N,), softmax p (N, K), sum of the losses / divisor): logsumexp - x[t], in float64."""
    x64 = x.astype(np.float64)
    shifted = x64 - x64.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    t = np.asarray(t, dtype=np.int64)
    bad = (t < 0) | (t >= x.shape[1])
    losses = -logp[np.arange(len(t)), np.where(bad, 0, t)]
    losses[bad] = np.nan
    p = np.exp(logp)
    p[bad] = np.nan
    return losses.astype(x.dtype), p.astype(x.dtype), np.asarray(losses.sum() / divisor, dtype=x.dtype)


def cross_entropy_backward(p, t, gy, divisor):
    """(p - onehot(t)) * gy / divisor; gy one value (mean or sum) or one per row ("none")."""
    gy = np.asarray(gy, dtype=p.dtype).reshape(-1, 1)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(t)), np.asarray(t, dtype=np.int64)] = 1
    return (p - onehot) * (gy / p.dtype.type(divisor))


# ---- optim.py: the updates on the flat buffers, in place -------------------------------------------------------
def adam_update(p, g, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0, decoupled=False):
    """One Adam (AdamW when decoupled) step on flat arrays p, g, m, v, in place (arithmetic in float64, stored in the
    buffers' dtype between the steps, as the Numba loop does)."""
    f64 = np.float64
    g = g.astype(f64)
    if decoupled:
        p -= (lr * weight_decay * p.astype(f64)).astype(p.dtype)
    else:
        g += weight_decay * p.astype(f64)
    m[...] = beta1 * m.astype(f64) + (1.0 - beta1) * g
    v[...] = beta2 * v.astype(f64) + (1.0 - beta2) * g * g
    bc1, bc2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
    p[...] = p.astype(f64) - lr * (m.astype(f64) / bc1) / (np.sqrt(v.astype(f64) / bc2) + eps)


def sgd_update(p, g, buf, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """One SGD step (momentum, Nesterov, L2 weight decay) on flat arrays p, g, buf, in place (float64 arithmetic)."""
    g = g.astype(np.float64) + weight_decay * p.astype(np.float64)
    if momentum != 0.0:
        buf[...] = momentum * buf.astype(np.float64) + g
        g = g + momentum * buf.astype(np.float64) if nesterov else buf.astype(np.float64)
    p[...] = p.astype(np.float64) - lr * g


def accumulate_grads(dsts, srcs):
    """dsts[k] += srcs[k] for every k, in place."""
    for d, s in zip(dsts, srcs):
        d += s


# ---- batchnorm.py: statistics in float64 ---------------------------------------------------------------------
def _normalised_input(x, relu):
    return np.maximum(x, 0).astype(np.float64) if relu else x.astype(np.float64)


def batch_norm_forward(x, gamma, beta, eps, running_mean=None, running_var=None, momentum=0.1, relu=False,
                       dropout_p=0.0, dropout_key=0):
    """(y, mean, var, invstd) of training-mode batch norm of x (of relu(x) when `relu`), dropout applied to y when
    dropout_p > 0; running statistics updated in place (the variance unbiased)."""
    N, C, H, W = x.shape
    v = _normalised_input(x, relu)
    mean = v.mean(axis=(0, 2, 3))
    var = ((v - mean.reshape(1, C, 1, 1)) ** 2).mean(axis=(0, 2, 3))
    invstd = 1.0 / np.sqrt(var + eps)
    scale = (invstd * gamma).reshape(1, C, 1, 1)
    with np.errstate(over="ignore"):   # statistics past float32's range become inf, as float32 arithmetic would give
        y = ((v - mean.reshape(1, C, 1, 1)) * scale + beta.astype(np.float64).reshape(1, C, 1, 1)).astype(x.dtype)
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
    """(gx, dgamma, dbeta): dbeta = sum gy, dgamma = sum gy * xhat, gx = gamma*invstd*(gy - dbeta/M - xhat*dgamma/M)."""
    if dropout_p > 0:
        gy = dropout_apply(gy, dropout_p, dropout_key)
    N, C, H, W = x.shape
    M = N * H * W
    shape = (1, C, 1, 1)
    k = invstd.astype(np.float64).reshape(shape)
    xhat = (_normalised_input(x, relu) - mean.astype(np.float64).reshape(shape)) * k
    g = gy.astype(np.float64)
    dbeta, dgamma = g.sum(axis=(0, 2, 3)), (g * xhat).sum(axis=(0, 2, 3))
    gx = gamma.astype(np.float64).reshape(shape) * k * (g - dbeta.reshape(shape) / M - xhat * dgamma.reshape(shape) / M)
    if relu:
        gx = gx * (x > 0)
    return gx.astype(x.dtype), dgamma.astype(x.dtype), dbeta.astype(x.dtype)


# ---- affine.py: bilinear warp, one image at a time ---------------------------------------------------------------
def affine_warp(x, theta):
    """Warp each float32 image x[n] (C, H, W) by the inverse affine map theta[n] (2, 3): bilinear, zero outside."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
        raise TypeError(f"affine_warp expects x as a float32 NumPy array (N, C, H, W), got "
                        f"{type(x).__name__} dtype={getattr(x, 'dtype', None)} shape={getattr(x, 'shape', None)}")
    theta = np.asarray(theta, dtype=np.float32)
    if theta.shape != (x.shape[0], 2, 3):
        raise ValueError(f"theta must have shape (N, 2, 3) = {(x.shape[0], 2, 3)} for x of shape {x.shape}, "
                         f"got {theta.shape}")
    N, C, H, W = x.shape
    out = np.zeros_like(x)
    i, j = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    for n in range(N):
        t = theta[n].astype(np.float64)
        xs, ys = t[0, 0] * j + t[0, 1] * i + t[0, 2], t[1, 0] * j + t[1, 1] * i + t[1, 2]
        j0, i0 = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
        a, b = xs - j0, ys - i0
        acc = np.zeros((C, H, W))
        for di, dj, weight in ((0, 0, (1 - a) * (1 - b)), (0, 1, a * (1 - b)), (1, 0, (1 - a) * b), (1, 1, a * b)):
            ii, jj = i0 + di, j0 + dj
            inside = (ii >= 0) & (ii < H) & (jj >= 0) & (jj < W)
            acc += np.where(inside, weight, 0.0) * x[n][:, np.clip(ii, 0, H - 1), np.clip(jj, 0, W - 1)]
        out[n] = acc
    return out

"""Depthwise convolution on the CPU: one small filter per channel, computed plane by plane, no column matrix.

Notation: N, C, H, W input (already padded); one filter per channel, w (C, 1, KH, KW); stride 1, no
dilation; OH = H - KH + 1, OW = W - KW + 1. Groups = C = OC: channel c of the output sees only channel c
of the input.

    y[n, c, oh, ow]  = b[c] + sum_{kh, kw} w[c, 0, kh, kw] * x[n, c, oh + kh, ow + kw]
    gx[n, c, i, j]   = sum_{kh, kw} gy[n, c, i - kh, j - kw] * w[c, 0, kh, kw]          (gy 0 outside)
    gw[c, 0, kh, kw] = sum_{n, oh, ow} gy[n, c, oh, ow] * x[n, c, oh + kh, ow + kw]

Through im2col a depthwise layer is C products of a 1 x KH*KW row by a KH*KW x OH*OW column matrix:
the columns cost KH*KW times the image to write and read for one multiply-add per value, and each tiny
product is a BLAS call. Here each (n, c) plane is its own small problem: for every tap, one pass along
each output row, `y_row += w[kh, kw] * x_row shifted by kw`, which the loop vectorizer turns into vector
multiply-adds. The planes run in parallel (prange over n*C); the weight gradient runs in parallel over
channels and sums each channel's images in order, so results are the same bits on every run. The
image gradient scatters instead of gathering: every gy value adds w * gy into a padded plane at its KH
x KW window, in a fixed order, and the padding is cropped at the end.

On `tiny` (batch 64, 2 threads) its five depthwise layers took 24 of the 37 ms of a training step
through im2col (benchmarks/README.md).
"""
import numba
import numpy as np
from numba import njit, prange

u = numba.uint64   # unsigned flat indices, as in direct.py's copies


@njit(cache=True, nogil=True, parallel=True)
def depthwise_forward(x, w, b, y):
    """y (N, C, OH, OW) <- x (N, C, H, W) padded, correlated plane by plane with w (C, 1, KH, KW), + b (C,)."""
    N, C, H, W = x.shape
    KH, KW = w.shape[2], w.shape[3]
    OH, OW = H - KH + 1, W - KW + 1
    xf, yf = x.reshape(x.size), y.reshape(y.size)
    for nc in prange(N * C):
        c = nc % C
        src, dst = nc * H * W, nc * OH * OW
        for oh in range(OH):
            row = u(dst + oh * OW)
            for ow in range(OW):
                yf[row + u(ow)] = b[c]
            for kh in range(KH):
                for kw in range(KW):
                    wv = w[c, 0, kh, kw]
                    s = u(src + (oh + kh) * W + kw)
                    for ow in range(OW):
                        yf[row + u(ow)] += wv * xf[s + u(ow)]


@njit(cache=True, nogil=True, parallel=True)
def depthwise_image_grad(gy, w, PH, PW, gx):
    """gx (N, C, H, W), unpadded, <- gy (N, C, OH, OW) and w (C, 1, KH, KW): each gy value spread over its window of
    a padded plane (HP = OH + KH - 1 rows), then the padding cropped."""
    N, C, OH, OW = gy.shape
    KH, KW = w.shape[2], w.shape[3]
    HP, WP = OH + KH - 1, OW + KW - 1
    H, W = gx.shape[2], gx.shape[3]
    gyf, gxf = gy.reshape(gy.size), gx.reshape(gx.size)
    planes = np.zeros(N * C * HP * WP, dtype=gy.dtype)   # one allocation for all planes, not one per plane
    for nc in prange(N * C):
        c = nc % C
        src, plane = nc * OH * OW, nc * HP * WP
        for oh in range(OH):
            g = u(src + oh * OW)
            for kh in range(KH):
                for kw in range(KW):
                    wv = w[c, 0, kh, kw]
                    d = u(plane + (oh + kh) * WP + kw)
                    for ow in range(OW):
                        planes[d + u(ow)] += wv * gyf[g + u(ow)]
        for i in range(H):
            s, d = u(plane + (i + PH) * WP + PW), u(nc * H * W + i * W)
            for j in range(W):
                gxf[d + u(j)] = planes[s + u(j)]


@njit(cache=True, nogil=True, parallel=True, fastmath={'reassoc'})   # each sum split into vector lanes
def depthwise_weight_grad(x, gy, gw, gb):
    """gw (C, 1, KH, KW) and gb (C,) float64 <- x (N, C, H, W) padded and gy (N, C, OH, OW); channels in parallel,
    each channel's images summed in order."""
    N, C, H, W = x.shape
    OH, OW = gy.shape[2], gy.shape[3]
    KH, KW = gw.shape[2], gw.shape[3]
    xf, gyf = x.reshape(x.size), gy.reshape(gy.size)
    for c in prange(C):
        sb = 0.0
        for n in range(N):
            g0 = (n * C + c) * OH * OW
            for p in range(OH * OW):
                sb += gyf[u(g0 + p)]
        gb[c] = sb
        for kh in range(KH):
            for kw in range(KW):
                s = 0.0
                for n in range(N):
                    g0, x0 = (n * C + c) * OH * OW, (n * C + c) * H * W
                    for oh in range(OH):
                        g, xs = u(g0 + oh * OW), u(x0 + (oh + kh) * W + kw)
                        for ow in range(OW):
                            s += gyf[g + u(ow)] * xf[xs + u(ow)]
                gw[c, 0, kh, kw] = s


def check(x, w):
    """Raise ValueError unless w (C, 1, KH, KW) is one filter per channel of x (N, C, H, W) that fits in it."""
    N, C, H, W = x.shape
    if w.ndim != 4 or w.shape[0] != C or w.shape[1] != 1:
        raise ValueError(f"depthwise convolution: weight of shape {w.shape}, expected ({C}, 1, KH, KW) for x with C={C}")
    if w.shape[2] > H or w.shape[3] > W:
        raise ValueError(f"depthwise convolution: kernel {w.shape[2]}x{w.shape[3]} larger than the image {H}x{W}")


def conv2d_depthwise(x, w, b=None):
    """y (N, C, OH, OW) of the depthwise convolution of x (N, C, H, W), already padded, with w (C, 1, KH, KW), + b."""
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    check(x, w)
    N, C, H, W = x.shape
    b = np.zeros(C, x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    y = np.empty((N, C, H - w.shape[2] + 1, W - w.shape[3] + 1), dtype=x.dtype)
    depthwise_forward(x, w, b, y)
    return y


def conv2d_depthwise_grads(x, gy, w, PH, PW, need_x=True, need_w=True):
    """(gx (N, C, H, W), gw (C, 1, KH, KW), gb (C,) float64) of y = depthwise conv2d(x, w, padding=(PH, PW)).
    x unpadded; gx or gw None where not asked (gb always: it comes with the weight gradient's pass, or from gy)."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w, dtype=x.dtype)
    gy = np.ascontiguousarray(gy, dtype=x.dtype)
    N, C, H, W = x.shape
    KH, KW = w.shape[2], w.shape[3]
    if gy.shape != (N, C, H + 2 * PH - KH + 1, W + 2 * PW - KW + 1):
        raise ValueError(f"depthwise convolution: gy has shape {gy.shape}, expected "
                         f"({N}, {C}, {H + 2 * PH - KH + 1}, {W + 2 * PW - KW + 1})")
    gx = gw = None
    if need_x:
        gx = np.empty((N, C, H, W), dtype=x.dtype)
        depthwise_image_grad(gy, w, PH, PW, gx)
    if need_w:
        xp = x if PH == PW == 0 else np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
        gw, gb = np.empty_like(w), np.empty(C)
        depthwise_weight_grad(xp, gy, gw, gb)
    else:
        gb = gy.sum(axis=(0, 2, 3), dtype=np.float64)
    return gx, gw, gb

"""Max and average pooling on the CPU: a window slides over each plane; max keeps the winner's position for backward.

Notation:
    N, C    images, channels          H, W    input height, width
    KH, KW  window height, width      SH, SW  stride
    PH, PW  padding (each side)       OH, OW  output height, width
    OH = (H + 2*PH - KH) // SH + 1    (same for OW)

Max pool:  y[n, c, oh, ow] = max over kh, kw of x[n, c, oh*SH - PH + kh, ow*SW - PW + kw]
           padding counts as minus infinity (never chosen, because PH <= KH // 2 leaves every window
           at least one real pixel). The scan is PyTorch's: the winner starts as the window's first
           real pixel; the real pixels are visited in row-major order (kh, then kw), and v becomes the
           winner when v > best or v is NaN. So:
             - ties: the FIRST maximum wins, and it alone receives the gradient;
             - NaN: a NaN anywhere in the window makes y NaN, and the LAST NaN in row-major order wins
               (y is that NaN, bits and all; argmax is its position), so the gradient lands on it;
             - a window of -inf only: y = -inf, argmax = its first real pixel.
           argmax[n, c, oh, ow] = ih * W + iw of the winner, so backward adds gy there:
           dx[n, c, argmax // W, argmax % W] += gy[n, c, oh, ow]  (overlapping windows accumulate).
Avg pool:  y = (sum of the window, padding counted as zeros) / (KH * KW).
"""
import numpy as np
from numba import njit, prange

from .im2col import out_size


@njit(cache=True, parallel=True)
def _max_forward(x, KH, KW, SH, SW, PH, PW, y, argmax):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for oh in range(OH):
            for ow in range(OW):
                ih0, iw0 = max(oh * SH - PH, 0), max(ow * SW - PW, 0)  # the window's first real pixel
                best, where = x[n, c, ih0, iw0], ih0 * W + iw0
                for kh in range(KH):
                    ih = oh * SH - PH + kh
                    if ih < 0 or ih >= H:
                        continue
                    for kw in range(KW):
                        iw = ow * SW - PW + kw
                        if iw < 0 or iw >= W:
                            continue
                        v = x[n, c, ih, iw]
                        if v > best or v != v:  # larger, or NaN (v != v holds for NaN only)
                            best = v
                            where = ih * W + iw
                y[n, c, oh, ow] = best
                argmax[n, c, oh, ow] = where


@njit(cache=True, parallel=True)
def _max_forward_2x2(x, y, argmax):
    """_max_forward for 2x2 windows, stride 2, no padding (eip4's pools): the four reads without the bounds
    tests, and the same rule in a form that LLVM compiles without branches on the values (written as
    `v > best or v != v`, the selects become branches that mispredict on random data, 8x slower):
        key    the largest value so far, a NaN counted as +inf (v if v < inf else inf): never NaN itself;
        v wins when not (v <= key): v is NaN (so the last NaN wins) or larger than all before it (a tie
               does not win, so the first maximum does);
        y      key, or the winner itself when key is +inf (a NaN won, or +inf did): the NaN, bits and all.
    """
    inf = np.float32(np.inf)  # float32: np.inf (float64) would widen the float32 compares to float64
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for oh in range(OH):
            r0, r1 = x[n, c, 2 * oh], x[n, c, 2 * oh + 1]
            yo, ao = y[n, c, oh], argmax[n, c, oh]
            base = 2 * oh * W
            for ow in range(OW):
                j = 2 * ow
                v = r0[j]
                where, key = base + j, (v if v < inf else inf)
                v = r0[j + 1]
                if not v <= key:
                    where = base + j + 1
                vk = v if v < inf else inf  # NaN -> +inf
                key = vk if vk > key else key
                v = r1[j]
                if not v <= key:
                    where = base + W + j
                vk = v if v < inf else inf  # NaN -> +inf
                key = vk if vk > key else key
                v = r1[j + 1]
                if not v <= key:
                    where = base + W + j + 1
                vk = v if v < inf else inf  # NaN -> +inf
                key = vk if vk > key else key
                yo[ow] = key if key < inf else x[n, c, where // W, where % W]
                ao[ow] = where


@njit(cache=True, parallel=True)
def _max_backward(gy, argmax, gx):
    N, C, OH, OW = gy.shape
    W = gx.shape[3]
    for nc in prange(N * C):  # one plane per iteration: the scatter-add stays race-free
        n = nc // C
        c = nc % C
        for oh in range(OH):
            for ow in range(OW):
                k = argmax[n, c, oh, ow]
                gx[n, c, k // W, k % W] += gy[n, c, oh, ow]


@njit(cache=True, parallel=True)
def _avg_forward(x, KH, KW, SH, SW, PH, PW, y):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    scale = 1.0 / (KH * KW)
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for oh in range(OH):
            for ow in range(OW):
                s = 0.0
                for kh in range(KH):
                    ih = oh * SH - PH + kh
                    if 0 <= ih < H:
                        for kw in range(KW):
                            iw = ow * SW - PW + kw
                            if 0 <= iw < W:
                                s += x[n, c, ih, iw]
                y[n, c, oh, ow] = s * scale


@njit(cache=True, parallel=True)
def _avg_backward(gy, KH, KW, SH, SW, PH, PW, gx):
    N, C, OH, OW = gy.shape
    H, W = gx.shape[2], gx.shape[3]
    scale = 1.0 / (KH * KW)
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for oh in range(OH):
            for ow in range(OW):
                g = gy[n, c, oh, ow] * scale
                for kh in range(KH):
                    ih = oh * SH - PH + kh
                    if 0 <= ih < H:
                        for kw in range(KW):
                            iw = ow * SW - PW + kw
                            if 0 <= iw < W:
                                gx[n, c, ih, iw] += g


def max_pool2d_forward(x, KH, KW, SH, SW, PH=0, PW=0):
    """x (N, C, H, W) -> (y (N, C, OH, OW), argmax int32 (N, C, OH, OW)) by the rule in the module docstring."""
    N, C, H, W = x.shape
    OH, OW = out_size(H, KH, SH, PH), out_size(W, KW, SW, PW)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = np.empty((N, C, OH, OW), dtype=np.int32)
    if (KH, KW, SH, SW, PH, PW) == (2, 2, 2, 2, 0, 0):
        _max_forward_2x2(np.ascontiguousarray(x), y, argmax)
    else:
        _max_forward(np.ascontiguousarray(x), KH, KW, SH, SW, PH, PW, y, argmax)
    return y, argmax


def max_pool2d_backward(gy, argmax, H, W, KH, KW, SH, SW, PH=0, PW=0):
    """gy (N, C, OH, OW) -> gx (N, C, H, W): each gradient goes to its window's winner.

    This scatter needs only argmax; the window (KH, KW, SH, SW, PH, PW) is part of the contract because
    the GPU twin gathers instead: each pixel visits the windows that contain it.
    """
    N, C = gy.shape[:2]
    gx = np.zeros((N, C, H, W), dtype=gy.dtype)
    _max_backward(np.ascontiguousarray(gy), argmax, gx)
    return gx


def avg_pool2d_forward(x, KH, KW, SH, SW, PH=0, PW=0):
    """x (N, C, H, W) -> y (N, C, OH, OW): window means, padding counted as zeros."""
    N, C, H, W = x.shape
    y = np.empty((N, C, out_size(H, KH, SH, PH), out_size(W, KW, SW, PW)), dtype=x.dtype)
    _avg_forward(np.ascontiguousarray(x), KH, KW, SH, SW, PH, PW, y)
    return y


def avg_pool2d_backward(gy, H, W, KH, KW, SH, SW, PH=0, PW=0):
    """gy (N, C, OH, OW) -> gx (N, C, H, W): each gradient spread evenly over its window."""
    N, C = gy.shape[:2]
    gx = np.zeros((N, C, H, W), dtype=gy.dtype)
    _avg_backward(np.ascontiguousarray(gy), KH, KW, SH, SW, PH, PW, gx)
    return gx

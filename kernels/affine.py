"""Affine warp of a batch of images with bilinear interpolation: the kernel behind random rotation/scale/shift augmentation.

Notation
--------
    N  images in the batch        C  channels per image
    H  rows (height)              W  columns (width)
    x      input,  float32 (N, C, H, W)
    theta  float32 (N, 2, 3): for image n, maps an OUTPUT pixel (column j, row i) to INPUT coordinates
    out    output, float32 (N, C, H, W)

Index formula (inverse mapping, so every output pixel gets exactly one value):

    x_in = theta[n,0,0]*j + theta[n,0,1]*i + theta[n,0,2]        (input column, fractional)
    y_in = theta[n,1,0]*j + theta[n,1,1]*i + theta[n,1,2]        (input row, fractional)
    j0 = floor(x_in), i0 = floor(y_in), a = x_in - j0, b = y_in - i0
    out[n,c,i,j] = (1-a)(1-b) x[n,c,i0,j0]   + a(1-b) x[n,c,i0,j0+1]
                 + (1-a) b    x[n,c,i0+1,j0] + a b    x[n,c,i0+1,j0+1]

where a neighbour outside 0 <= row < H, 0 <= col < W counts as 0 (zero padding).
The identity theta [[1,0,0],[0,1,0]] returns x; theta [[1,0,-dx],[0,1,-dy]] shifts the image by
(+dx columns, +dy rows).
"""
import math

import numpy as np
from numba import njit, prange

__all__ = ["affine_warp", "affine_warp_reference"]


@njit(cache=True, parallel=True)
def _affine_warp_kernel(x, theta, out):
    N, C, H, W = x.shape
    for n in prange(N):  # one image per thread
        t00 = np.float64(theta[n, 0, 0])
        t01 = np.float64(theta[n, 0, 1])
        t02 = np.float64(theta[n, 0, 2])
        t10 = np.float64(theta[n, 1, 0])
        t11 = np.float64(theta[n, 1, 1])
        t12 = np.float64(theta[n, 1, 2])
        for i in range(H):
            for j in range(W):
                xs = t00 * j + t01 * i + t02
                ys = t10 * j + t11 * i + t12
                fj = math.floor(xs)
                fi = math.floor(ys)
                a = xs - fj
                b = ys - fi
                j0 = int(fj)
                i0 = int(fi)
                j1 = j0 + 1
                i1 = i0 + 1
                # corner weights, set to zero for neighbours outside the image
                w00 = (1.0 - a) * (1.0 - b)
                w01 = a * (1.0 - b)
                w10 = (1.0 - a) * b
                w11 = a * b
                in_j0 = 0 <= j0 < W
                in_j1 = 0 <= j1 < W
                in_i0 = 0 <= i0 < H
                in_i1 = 0 <= i1 < H
                if not (in_i0 and in_j0):
                    w00 = 0.0
                if not (in_i0 and in_j1):
                    w01 = 0.0
                if not (in_i1 and in_j0):
                    w10 = 0.0
                if not (in_i1 and in_j1):
                    w11 = 0.0
                # clamp indices so reads stay in bounds (their weight is already 0 when clamped)
                cj0 = min(max(j0, 0), W - 1)
                cj1 = min(max(j1, 0), W - 1)
                ci0 = min(max(i0, 0), H - 1)
                ci1 = min(max(i1, 0), H - 1)
                for c in range(C):
                    v = (w00 * x[n, c, ci0, cj0] + w01 * x[n, c, ci0, cj1]
                         + w10 * x[n, c, ci1, cj0] + w11 * x[n, c, ci1, cj1])
                    out[n, c, i, j] = v
    return out


def _check(x, theta):
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
        raise TypeError(f"affine_warp expects x as a float32 NumPy array (N, C, H, W), got "
                        f"{type(x).__name__} dtype={getattr(x, 'dtype', None)} shape={getattr(x, 'shape', None)}")
    theta = np.asarray(theta, dtype=np.float32)
    if theta.shape != (x.shape[0], 2, 3):
        raise ValueError(f"theta must have shape (N, 2, 3) = {(x.shape[0], 2, 3)} for x of shape {x.shape}, "
                         f"got {theta.shape}")
    return np.ascontiguousarray(x), np.ascontiguousarray(theta)


def affine_warp(x, theta):
    """Warp each image x[n] by the inverse affine map theta[n] (see module docstring); returns a new float32 array."""
    x, theta = _check(x, theta)
    out = np.empty_like(x)
    if x.size:
        _affine_warp_kernel(x, theta, out)
    return out


def affine_warp_reference(x, theta):
    """Plain NumPy version of affine_warp (vectorised over pixels, a loop over images) to test the kernel against."""
    x, theta = _check(x, theta)
    N, C, H, W = x.shape
    out = np.zeros_like(x)
    i, j = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    for n in range(N):
        t = theta[n].astype(np.float64)
        xs = t[0, 0] * j + t[0, 1] * i + t[0, 2]
        ys = t[1, 0] * j + t[1, 1] * i + t[1, 2]
        j0 = np.floor(xs).astype(np.int64)
        i0 = np.floor(ys).astype(np.int64)
        a = xs - j0
        b = ys - i0
        acc = np.zeros((C, H, W), dtype=np.float64)
        for di, dj, w in ((0, 0, (1 - a) * (1 - b)), (0, 1, a * (1 - b)),
                          (1, 0, (1 - a) * b), (1, 1, a * b)):
            ii, jj = i0 + di, j0 + dj
            inside = (ii >= 0) & (ii < H) & (jj >= 0) & (jj < W)
            vals = x[n][:, np.clip(ii, 0, H - 1), np.clip(jj, 0, W - 1)]
            acc += np.where(inside, w, 0.0) * vals
        out[n] = acc
    return out

"""im2col and col2im on the CPU: unfold every receptive field into a column so convolution becomes one matrix product.

Notation (used the same way in every kernel of minicnn):
    N   images in the batch          C   input channels
    H, W    input height and width   KH, KW  kernel height and width
    SH, SW  stride                   PH, PW  zero padding (each side)
    DH, DW  dilation                 OH, OW  output height and width
    OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1   (same for OW)

The column matrix has shape (C, KH, KW, N, OH, OW), read as a (C*KH*KW, N*OH*OW) matrix:
    col[c, kh, kw, n, oh, ow] = x[n, c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW]   (0 outside the image)
so a convolution is  y[(oc), (n, oh, ow)] = W[(oc), (c, kh, kw)] @ col  -- one GEMM.

col2im is the adjoint (transpose) of im2col: it adds every column entry back onto the input
pixel it was copied from.

These kernels run on one thread and release the GIL (nogil): conv2d calls them on chunks of a few
images at a time from a pool of threads (kernels/parallel.py), so each chunk's column matrix stays
in the cache between im2col and the matrix product that reads it. The plain NumPy versions
(`im2col_numpy`, `col2im_numpy`, and for the wide grid below `im2col_wide_numpy`, `col2im_wide_numpy`)
sit beside the Numba kernels; they are the readable reference and the baseline in the benchmarks.
"""
import numpy as np
from numba import njit


def out_size(size, k, s=1, p=0, d=1):
    """Output length of a sliding window along one axis: (size + 2p - d(k-1) - 1) // s + 1 (pooling: d = 1)."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@njit(cache=True, inline="always")
def _valid(offset, P, S, size, O):
    """The output positions o in [lo, hi) whose input position o*S - P + offset lies inside [0, size)."""
    lo = max(0, -((offset - P) // S))             # ceil((P - offset) / S)
    hi = min(O, (size - 1 + P - offset) // S + 1)
    return lo, max(lo, hi)


@njit(cache=True, nogil=True)
def _im2col(x, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, col):
    N, C, H, W = x.shape
    for rn in range(C * KH * KW * N):  # one (row, image) block of the column matrix at a time
        r, n = rn // N, rn % N
        c, kh, kw = r // (KH * KW), (r // KW) % KH, r % KW
        oh0, oh1 = _valid(kh * DH, PH, SH, H, OH)
        ow0, ow1 = _valid(kw * DW, PW, SW, W, OW)
        block = col[c, kh, kw, n]
        block[:oh0, :] = 0.0
        block[oh1:, :] = 0.0
        iw0 = ow0 * SW - PW + kw * DW             # the input column of output column ow0
        for oh in range(oh0, oh1):
            ih = oh * SH - PH + kh * DH
            row = block[oh]
            row[:ow0] = 0.0
            row[ow1:] = 0.0
            # the valid run as two views indexed by t alone: no bounds test and no index arithmetic
            # inside the loop (an index that might be negative would be wrapped, Python-style, and
            # keep LLVM from vectorising)
            dst, src = row[ow0:ow1], x[n, c, ih, iw0:iw0 + (ow1 - ow0 - 1) * SW + 1:SW]
            for t in range(ow1 - ow0):
                dst[t] = src[t]


@njit(cache=True, nogil=True)
def _col2im(col, SH, SW, PH, PW, DH, DW, dx):
    C, KH, KW, N, OH, OW = col.shape
    H, W = dx.shape[2], dx.shape[3]
    for nc in range(N * C):  # one (image, channel) plane at a time: every addition lands in that plane
        n, c = nc // C, nc % C
        for kh in range(KH):
            oh0, oh1 = _valid(kh * DH, PH, SH, H, OH)
            for kw in range(KW):
                ow0, ow1 = _valid(kw * DW, PW, SW, W, OW)
                iw0 = ow0 * SW - PW + kw * DW
                for oh in range(oh0, oh1):
                    ih = oh * SH - PH + kh * DH
                    src = col[c, kh, kw, n, oh, ow0:ow1]
                    dst = dx[n, c, ih, iw0:iw0 + (ow1 - ow0 - 1) * SW + 1:SW]   # every SW-th pixel of the row
                    for t in range(ow1 - ow0):
                        dst[t] += src[t]


def im2col(x, KH, KW, SH=1, SW=1, PH=0, PW=0, DH=1, DW=1):
    """x (N, C, H, W) -> col (C, KH, KW, N, OH, OW), by the formula in the module docstring."""
    N, C, H, W = x.shape
    OH, OW = out_size(H, KH, SH, PH, DH), out_size(W, KW, SW, PW, DW)
    col = np.empty((C, KH, KW, N, OH, OW), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x), KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, col)
    return col


def col2im(col, H, W, SH=1, SW=1, PH=0, PW=0, DH=1, DW=1):
    """col (C, KH, KW, N, OH, OW) -> dx (N, C, H, W): every entry added back to the pixel it came from."""
    C, KH, KW, N, OH, OW = col.shape
    dx = np.zeros((N, C, H, W), dtype=col.dtype)
    _col2im(np.ascontiguousarray(col), SH, SW, PH, PW, DH, DW, dx)
    return dx


# ---- the wide grid: stride 1, no padding, every row of the column matrix one contiguous copy ----------------
#
# With stride 1, the window offset (kh, kw) of output pixel (oh, ow) reads x[n, c, oh + kh*DH, ow + kw*DW]:
# in the flattened image (index ih*W + iw) that is position q + kh*DH*W + kw*DW with q = oh*W + ow.
# Let ow run over all W columns instead of the OW valid ones (the "wide grid", OH x W) and each row
# (c, kh, kw, n) of the column matrix becomes ONE slice of the flattened image, shifted by the offset:
#     col_wide[c, kh, kw, n, q] = xflat[n, c, q + kh*DH*W + kw*DW]    for q < OH*W (0 past the image's end)
# The columns with ow >= OW wrap into the next image row: they are garbage, and the convolution drops
# those outputs. In exchange, im2col copies runs of OH*W numbers instead of OW at a time, several
# times faster on the CPU (benchmarks/README.md). Padding is applied to x beforehand.


@njit(cache=True, nogil=True)
def _im2col_wide(x, KH, KW, DH, DW, col):
    N, C, H, W = x.shape
    L = col.shape[4] * col.shape[5]           # OH * W
    xf = x.reshape(N, C, H * W)
    cf = col.reshape(C, KH, KW, N, L)
    for rn in range(C * KH * KW * N):
        r, n = rn // N, rn % N
        c, kh, kw = r // (KH * KW), (r // KW) % KH, r % KW
        off = kh * DH * W + kw * DW
        m = min(L, H * W - off)               # the last row's garbage columns can run past the image
        dst, src = cf[c, kh, kw, n], xf[n, c, off:off + m]   # plain q indices on both sides: the loop vectorises
        for q in range(m):
            dst[q] = src[q]
        for q in range(m, L):
            dst[q] = 0.0


@njit(cache=True, nogil=True)
def _col2im_wide(col, DH, DW, dx):
    C, KH, KW, N, OH, W = col.shape
    H = dx.shape[2]
    L = OH * W
    cf = col.reshape(C, KH, KW, N, L)
    dxf = dx.reshape(N, C, H * W)
    for nc in range(N * C):  # one (image, channel) plane at a time, offsets in a fixed order: deterministic
        n, c = nc // C, nc % C
        dst = dxf[n, c]
        for kh in range(KH):
            for kw in range(KW):
                off = kh * DH * W + kw * DW
                m = min(L, H * W - off)
                src, part = cf[c, kh, kw, n], dst[off:off + m]
                for q in range(m):
                    part[q] += src[q]


def im2col_wide(x, KH, KW, DH=1, DW=1):
    """x (N, C, H, W) -> col (C, KH, KW, N, OH, W) on the wide grid (stride 1, no padding; see above)."""
    N, C, H, W = x.shape
    OH = out_size(H, KH, 1, 0, DH)
    col = np.empty((C, KH, KW, N, OH, W), dtype=x.dtype)
    _im2col_wide(np.ascontiguousarray(x), KH, KW, DH, DW, col)
    return col


def col2im_wide(col, H, DH=1, DW=1):
    """col (C, KH, KW, N, OH, W) on the wide grid -> dx (N, C, H, W): the adjoint of im2col_wide.

    Columns with ow >= OW are added back too (to the pixels they wrapped onto): give them zeros, as the
    convolution's backward does, and dx is exactly col2im of the valid columns.
    """
    C, KH, KW, N, OH, W = col.shape
    dx = np.zeros((N, C, H, W), dtype=col.dtype)
    _col2im_wide(np.ascontiguousarray(col), DH, DW, dx)
    return dx


def im2col_wide_numpy(x, KH, KW, DH=1, DW=1):
    """Plain NumPy im2col_wide: one shifted slice of the flattened (and end-padded) images per kernel offset."""
    N, C, H, W = x.shape
    OH = out_size(H, KH, 1, 0, DH)
    L = OH * W
    xf = np.concatenate([x.reshape(N, C, H * W), np.zeros((N, C, (KW - 1) * DW), x.dtype)], axis=2)
    col = np.empty((C, KH, KW, N, L), dtype=x.dtype)
    for kh in range(KH):
        for kw in range(KW):
            off = kh * DH * W + kw * DW
            col[:, kh, kw] = xf[:, :, off:off + L].transpose(1, 0, 2)
    return col.reshape(C, KH, KW, N, OH, W)


def col2im_wide_numpy(col, H, DH=1, DW=1):
    """Plain NumPy col2im_wide: add each kernel offset's slice back onto the flattened (end-padded) images."""
    C, KH, KW, N, OH, W = col.shape
    L = OH * W
    dxf = np.zeros((N, C, H * W + (KW - 1) * DW), dtype=col.dtype)
    for kh in range(KH):
        for kw in range(KW):
            off = kh * DH * W + kw * DW
            dxf[:, :, off:off + L] += col[:, kh, kw].reshape(C, N, L).transpose(1, 0, 2)
    return dxf[:, :, :H * W].reshape(N, C, H, W).copy()


def im2col_numpy(x, KH, KW, SH=1, SW=1, PH=0, PW=0, DH=1, DW=1):
    """Plain NumPy im2col: one strided slice of the padded input per kernel offset (kh, kw)."""
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


def col2im_numpy(col, H, W, SH=1, SW=1, PH=0, PW=0, DH=1, DW=1):
    """Plain NumPy col2im: add each kernel offset's slice back onto the padded input, then crop the padding."""
    C, KH, KW, N, OH, OW = col.shape
    dxp = np.zeros((N, C, H + 2 * PH, W + 2 * PW), dtype=col.dtype)
    for kh in range(KH):
        for kw in range(KW):
            h0, w0 = kh * DH, kw * DW
            dxp[:, :, h0:h0 + SH * (OH - 1) + 1:SH, w0:w0 + SW * (OW - 1) + 1:SW] += col[:, kh, kw].transpose(1, 0, 2, 3)
    return dxp[:, :, PH:PH + H, PW:PW + W].copy()

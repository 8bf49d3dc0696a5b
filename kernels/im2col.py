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

The plain NumPy versions (`im2col` and `col2im` in numpy_backend.py: one strided slice per kernel
offset) compute the same matrix; these loops copy each valid run of a row once, without a padded copy
of the input, on flat arrays (a view per row would cost more than copying a 24-float row). They run on
one thread: the copy is bound by memory, and a second thread made it no faster here. im2col.cu is the
CUDA twin: one thread per column entry, and col2im as a gather.
"""
import numba
import numpy as np
from numba import njit

from .conv_geometry import out_size

u = numba.uint64   # flat indices as unsigned integers: Numba then adds no test for negative (wrapped) indices


@njit(cache=True, inline="always")
def _valid(offset, P, S, size, O):
    """The output positions o in [lo, hi) whose input position o*S - P + offset lies inside [0, size)."""
    lo = max(0, -((offset - P) // S))             # ceil((P - offset) / S)
    hi = min(O, (size - 1 + P - offset) // S + 1)
    return lo, max(lo, hi)


@njit(cache=True, nogil=True)
def _im2col(x, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, col):
    N, C, H, W = x.shape
    xf, cf = x.reshape(x.size), col.reshape(col.size)   # flat: one index per entry, no view per row
    zero = x.dtype.type(0)
    for c in range(C):   # one row (c, kh, kw) of the column matrix at a time: its valid output ranges once
        for kh in range(KH):
            oh0, oh1 = _valid(kh * DH, PH, SH, H, OH)
            for kw in range(KW):
                ow0, ow1 = _valid(kw * DW, PW, SW, W, OW)
                r = (c * KH + kh) * KW + kw
                for n in range(N):   # then that row's block for each image
                    for oh in range(OH):
                        d = u(((r * N + n) * OH + oh) * OW)   # col[c, kh, kw, n, oh, 0] in the flat column matrix
                        if oh < oh0 or oh >= oh1:
                            for t in range(OW):
                                cf[d + u(t)] = zero
                            continue
                        ih = oh * SH - PH + kh * DH
                        s = u(((n * C + c) * H + ih) * W + ow0 * SW - PW + kw * DW)   # x[n, c, ih, iw of ow0]
                        for t in range(ow0):
                            cf[d + u(t)] = zero
                        for t in range(ow1 - ow0):   # the valid run: unsigned indices, no wraparound test
                            cf[d + u(ow0 + t)] = xf[s + u(t * SW)]
                        for t in range(ow1, OW):
                            cf[d + u(t)] = zero


@njit(cache=True, nogil=True)
def _col2im(col, SH, SW, PH, PW, DH, DW, dx):
    C, KH, KW, N, OH, OW = col.shape
    H, W = dx.shape[2], dx.shape[3]
    cf, df = col.reshape(col.size), dx.reshape(dx.size)
    for nc in range(N * C):   # one (image, channel) plane at a time: every addition lands in that plane
        n, c = nc // C, nc % C
        for kh in range(KH):   # the offsets in a fixed order: the same sums on any thread count
            oh0, oh1 = _valid(kh * DH, PH, SH, H, OH)
            for kw in range(KW):
                ow0, ow1 = _valid(kw * DW, PW, SW, W, OW)
                for oh in range(oh0, oh1):
                    ih = oh * SH - PH + kh * DH
                    s = u(((((c * KH + kh) * KW + kw) * N + n) * OH + oh) * OW + ow0)   # col[c, kh, kw, n, oh, ow0]
                    d = u((nc * H + ih) * W + ow0 * SW - PW + kw * DW)                  # dx[n, c, ih, iw of ow0]
                    for t in range(ow1 - ow0):
                        df[d + u(t * SW)] += cf[s + u(t)]


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

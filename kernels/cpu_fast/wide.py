"""im2col on the wide grid, chunk by chunk: the column matrix of a stride-1 convolution as long contiguous copies.

Notation: N, C, H, W input (padded first); OC output channels, G groups, Cg = C/G; KH, KW kernel; DH, DW
dilation; stride 1; OH = H - DH*(KH-1), OW = W - DW*(KW-1).

With stride 1, the window offset (kh, kw) of output pixel (oh, ow) reads x[n, c, oh + kh*DH, ow + kw*DW]:
in the flattened image (index ih*W + iw) that is position q + kh*DH*W + kw*DW with q = oh*W + ow.
Let ow run over all W columns instead of the OW valid ones (the "wide grid", OH x W) and each row
(c, kh, kw, n) of the column matrix becomes ONE slice of the flattened image, shifted by the offset:

    col_wide[c, kh, kw, n, q] = xflat[n, c, q + kh*DH*W + kw*DW]    for q < OH*W (0 past the image's end)

The columns with ow >= OW wrap into the next image row: garbage, which the convolution drops in forward
and gives a zero gradient in backward. In exchange, im2col copies runs of OH*W numbers instead of OW.

`WideConv` is the convolution built on it, the way the lesson path (minicnn/functional/conv.py) runs, with
two CPU habits added: the batch is cut into chunks whose column matrix fits in the cache, run on a pool
of threads (parallel.py), and the columns are rebuilt in backward rather than kept (rebuilding a chunk's
columns costs less than writing and re-reading the whole batch's). Its chunks are the same whatever the
thread count (parallel.batch_chunks), so its sums are too.
"""
import numpy as np
from numba import njit

from .parallel import batch_chunks, map_chunks, sum_in_order


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
    OH = H - DH * (KH - 1)
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
    OH = H - DH * (KH - 1)
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


def pad_images(x, PH, PW):
    """x (N, C, H, W) with PH zero rows above and below and PW zero columns left and right (x itself when none)."""
    return x if PH == PW == 0 else np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))


class WideConv:
    """A stride-1 convolution on the wide grid, chunk by chunk: forward(x, w, b) -> y, backward(gy, ...) -> grads.

    g is the layer's geometry (kernels/conv_geometry.py). Per chunk of m images, with WG = W + 2*PW:
        col  = im2col_wide(x padded)                    (G, Cg*KH*KW, m*OH*WG)
        y    = W @ col, garbage columns dropped          one GEMM per group
        gW  += (col @ gy^T)^T                            BLAS runs this orientation of the skinny product
                                                         about twice as fast as gy @ col^T (same numbers)
        gx   = col2im_wide(W^T @ gy), padding cropped    gy is 0 on the garbage columns
    """

    name = "wide"

    def __init__(self, g):
        self.g = g
        self.WG = g.W + 2 * g.PW

    def describe(self):
        return self.name

    def _columns(self, x, n0, n1):
        g = self.g
        col = im2col_wide(pad_images(x[n0:n1], g.PH, g.PW), g.KH, g.KW, g.DH, g.DW)
        return col.reshape(g.G, g.Cg * g.KH * g.KW, (n1 - n0) * g.OH * self.WG)

    def _chunks(self):
        g = self.g
        return batch_chunks(g.N, g.C * g.KH * g.KW * g.OH * self.WG * np.dtype(g.dtype).itemsize)

    def forward(self, x, w, b=None):
        g = self.g
        self.x, self.w = x, w
        wg = w.reshape(g.G, g.OC // g.G, g.Cg * g.KH * g.KW)
        y = np.empty((g.N, g.OC, g.OH, g.OW), dtype=x.dtype)

        def chunk(n0, n1):
            yc = np.matmul(wg, self._columns(x, n0, n1)).reshape(g.OC, n1 - n0, g.OH, self.WG)[..., :g.OW]
            y[n0:n1] = yc.transpose(1, 0, 2, 3)
            if b is not None:
                y[n0:n1] += b.reshape(1, g.OC, 1, 1)
        map_chunks(chunk, self._chunks())
        return y

    def backward(self, gy, need_x=True, need_w=True, need_b=True):
        """(gx, gw, gb), None for what is not asked."""
        g = self.g
        wg = self.w.reshape(g.G, g.OC // g.G, g.Cg * g.KH * g.KW)
        gx = np.empty((g.N, g.C, g.H, g.W), dtype=gy.dtype) if need_x else None

        def chunk(n0, n1):
            m = n1 - n0
            gy_grid = np.zeros((g.OC, m, g.OH, self.WG), dtype=gy.dtype)
            gy_grid[..., :g.OW] = gy[n0:n1].transpose(1, 0, 2, 3)   # the garbage outputs: gradient 0
            gy_mat = gy_grid.reshape(g.G, g.OC // g.G, m * g.OH * self.WG)
            part_w = None
            if need_w:
                part_w = np.matmul(self._columns(self.x, n0, n1), gy_mat.swapaxes(-1, -2)).swapaxes(-1, -2)
            if need_x:
                gcol = np.matmul(wg.swapaxes(-1, -2), gy_mat).reshape(g.C, g.KH, g.KW, m, g.OH, self.WG)
                gxp = col2im_wide(gcol, g.H + 2 * g.PH, g.DH, g.DW)
                gx[n0:n1] = gxp[:, :, g.PH:g.PH + g.H, g.PW:g.PW + g.W]
            return part_w
        parts = map_chunks(chunk, self._chunks())
        gw = sum_in_order(parts).reshape(self.w.shape) if need_w else None
        gb = gy.sum(axis=(0, 2, 3)) if need_b else None
        return gx, gw, gb

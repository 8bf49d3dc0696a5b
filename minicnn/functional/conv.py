"""2-D convolution: the definition (`conv2d_reference`) beside the fast path (im2col, one GEMM per group, col2im).

Notation: N, C, H, W input; OC output channels; KH, KW kernel; SH, SW stride; PH, PW padding;
DH, DW dilation; G groups (each group sees C/G input channels and makes OC/G outputs);
OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1, same for OW.

    y[n, oc, oh, ow] = b[oc] + sum_{c, kh, kw} w[oc, c, kh, kw] * x[n, g*C/G + c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW]
    where g = oc // (OC/G), and x is zero outside the image.

Deep learning's "convolution" does not flip the kernel: it is a cross-correlation.
"""
import numpy as np

from ..autograd import Function
from ..backend import get_array_module, kernels_for
from ..kernels.im2col import out_size
from ..kernels.parallel import sum_in_order
from .checks import check_float_4d, non_negative_pair, positive_pair


def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):
    """Output length along one axis: (size + 2*padding - dilation*(kernel-1) - 1) // stride + 1."""
    return out_size(size, kernel, stride, padding, dilation)


class Conv2d(Function):
    """Forward: col = im2col(x); y = W @ col per group. Backward: gW = gy @ col^T; gcol = W^T @ gy; gx = col2im(gcol).

    The products run through the backend's `matmul` (kernels/gemm.py: BLAS on the CPU; gemm.cu on the GPU).
    The batch is processed in chunks of images chosen by the backend (`batch_chunks`): on the CPU,
    chunks small enough that their column matrix stays in the cache, run on a pool of threads
    (`map_chunks`); on the GPU, the whole batch at once. The CPU does not keep the column matrix for
    backward: recomputing a chunk's im2col costs less than writing and re-reading the whole batch's.
    A backend with `keep_columns` (the GPU, where each launch costs more than the memory) keeps it.

    A backend with `direct_conv` (the CPU) runs stride-1, undilated, one-group layers without the column matrix
    where a register tile fits: forward by its direct convolution (kernels/conv_direct.py, conv_lanes.py; at least
    8 output channels), backward by conv2d_direct_grads (kernels/conv_direct_grad.py: the image gradient for at
    least 8 input channels, the weight gradient for at least 8 output channels and 3-wide kernels); what does
    not fit goes through the columns. Those kernels take the whole batch in one call and run its chunks on
    Numba's threads themselves (kernels/parallel.py says why). Lesson 11 (docs/11-direct-convolution.md)
    follows how. Depthwise layers (groups = C = OC, stride 1) go to the backend's plane-by-plane kernels
    (kernels/conv_depthwise.py) instead of C tiny products.

    Two shapes need no columns at all, on every backend: a 1x1 kernel (stride 1, no padding) is a matrix
    product over channels, and a kernel as large as the unpadded image (eip4's last layer: one output
    pixel) is a fully connected layer, (N, C*H*W) @ (C*H*W, OC).

    The columns come on a grid of OH rows by WG columns. Usually WG = OW. With stride 1, a backend
    that has them (`wide_columns`: the CPU) uses the wide grid, WG = the padded input width
    (kernels/im2col.py): the outputs with ow >= OW are garbage, dropped in forward and given zero
    gradient in backward.
    """

    def __init__(self, stride, padding, dilation, groups):
        (self.SH, self.SW), (self.PH, self.PW), (self.DH, self.DW) = stride, padding, dilation
        self.G = groups

    def _is_pointwise(self, KH, KW):
        """A 1x1 kernel with stride 1 and no padding needs no im2col: it is a matmul over channels."""
        return KH == KW == 1 and self.SH == self.SW == 1 and self.PH == self.PW == 0

    def _is_whole_image(self, H, W, KH, KW):
        """A kernel as large as the unpadded image, one group: one output pixel, a fully connected layer."""
        return (KH, KW) == (H, W) and self.PH == self.PW == 0 and self.DH == self.DW == 1 and self.G == 1

    _geom = None

    def _geometry(self):
        """(N, C, H, W, OC, Cg, KH, KW, OH, OW) of this call (worked out once: forward and backward ask often)."""
        if self._geom is None:
            N, C, H, W = self.x.shape
            OC, Cg, KH, KW = self.w.shape
            OH = conv_output_size(H, KH, self.SH, self.PH, self.DH)
            OW = conv_output_size(W, KW, self.SW, self.PW, self.DW)
            self._geom = N, C, H, W, OC, Cg, KH, KW, OH, OW
        return self._geom

    def _grid_width(self, K):
        """WG: the padded input width on the wide grid (stride 1, where the backend has it), else OW."""
        wide = K.wide_columns and self.SH == self.SW == 1
        return self.x.shape[3] + 2 * self.PW if wide else self._geometry()[-1]

    def _columns(self, K, n0, n1, WG):
        """The column matrix of images n0..n1-1 on a grid of width WG, as G matrices (C/G*KH*KW, (n1-n0)*OH*WG)."""
        N, C, H, W, OC, Cg, KH, KW, OH, OW = self._geometry()
        x = self.x if (n0, n1) == (0, N) else self.x[n0:n1]
        if WG == OW:
            col = K.im2col(x, KH, KW, self.SH, self.SW, self.PH, self.PW, self.DH, self.DW)
        else:
            col = K.im2col_wide(pad_images(x, self.PH, self.PW), KH, KW, self.DH, self.DW)
        return col.reshape(self.G, Cg * KH * KW, (n1 - n0) * OH * WG)

    def _image_gradient(self, K, gcol):
        """col2im on the grid gcol (C, KH, KW, m, OH, WG) came on: images' gradient (m, C, H, W)."""
        N, C, H, W, OC, Cg, KH, KW, OH, OW = self._geometry()
        if gcol.shape[-1] == OW:
            return K.col2im(gcol, H, W, self.SH, self.SW, self.PH, self.PW, self.DH, self.DW)
        gx = K.col2im_wide(gcol, H + 2 * self.PH, self.DH, self.DW)
        return gx[:, :, self.PH:self.PH + H, self.PW:self.PW + W]

    def _column_free(self, K):
        """True when the backend has kernels without columns (`direct_conv`) and the layer is stride 1, undilated."""
        return K.direct_conv and self.SH == self.SW == 1 and self.DH == self.DW == 1

    def _direct(self, K, OC, H, W, KH, KW):
        """True when the backend's direct convolution serves a stride-1, undilated, one-group layer of this shape."""
        return self._column_free(K) and self.G == 1 and K.conv2d_direct_fits(OC, H, W, KH, KW)

    def _depthwise(self, K, C, OC):
        """True when the backend's direct kernels serve a stride-1, undilated depthwise layer (groups = C = OC)."""
        return self._column_free(K) and self.G == C == OC

    def _chunks(self, K, WG):
        N, C, H, W, OC, Cg, KH, KW, OH, OW = self._geometry()
        return K.batch_chunks(N, C * KH * KW * OH * WG * self.x.dtype.itemsize)

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        N, C, H, W, OC, Cg, KH, KW, OH, OW = self._geometry()
        G = self.G
        xp, K = get_array_module(x), kernels_for(x)
        if N == 0:   # an empty batch: nothing to compute (the kernels cut the batch into chunks of at least one image)
            return xp.zeros((0, OC, OH, OW), dtype=x.dtype)
        wg = w.reshape(G, OC // G, Cg * KH * KW)
        if self._is_pointwise(KH, KW):  # (G, OC/G, C/G) @ (N, G, C/G, HW) -> (N, G, OC/G, HW); one group: bias in it
            y = K.matmul(wg, x.reshape(N, G, Cg, H * W), bias=b if G == 1 else None).reshape(N, OC, OH, OW)
            return y if b is None or G == 1 else y + b.reshape(1, OC, 1, 1)
        if self._is_whole_image(H, W, KH, KW):  # (N, C*H*W) @ (C*H*W, OC): no columns to build
            y = K.matmul(x.reshape(N, C * H * W), w.reshape(OC, C * H * W).T).reshape(N, OC, 1, 1)
            return y if b is None else y + b.reshape(1, OC, 1, 1)
        self.col = None
        if self._depthwise(K, C, OC):   # one filter per channel: plane by plane (kernels/conv_depthwise.py)
            return K.conv2d_depthwise(pad_images(x, self.PH, self.PW), w, b)
        if self._direct(K, OC, H + 2 * self.PH, W + 2 * self.PW, KH, KW):   # its chunks on Numba's threads, one call
            return K.conv2d_direct(pad_images(x, self.PH, self.PW), w, b)
        WG = self._grid_width(K)
        chunks = self._chunks(K, WG)
        own_layout = G == 1 and WG == OW  # no garbage columns, one group: the product can write y's layout itself

        def chunk(n0, n1):
            m = n1 - n0
            col = self._columns(K, n0, n1, WG)
            if K.keep_columns and len(chunks) == 1:
                self.col = col  # kept for backward (the GPU's choice; the CPU recomputes, see above)
            if own_layout:  # image i: y[i] (OC, OH*OW) = W @ col[:, i*OH*OW:(i+1)*OH*OW] + b, one batched product
                return K.matmul(wg, col.reshape(Cg * KH * KW, m, OH * OW).transpose(1, 0, 2),
                                bias=b).reshape(m, OC, OH, OW)
            # one GEMM per group: (OC/G, C/G*KH*KW) @ (C/G*KH*KW, chunk*OH*WG), then (OC, chunk) swapped
            yc = K.matmul(wg, col).reshape(OC, m, OH, WG)[..., :OW].transpose(1, 0, 2, 3)
            if b is not None:
                yc += b.reshape(1, OC, 1, 1)
            return yc
        if own_layout and len(chunks) == 1:
            return K.map_chunks(chunk, chunks)[0]
        y = xp.empty((N, OC, OH, OW), dtype=x.dtype)

        def store(n0, n1):
            y[n0:n1] = chunk(n0, n1)
        K.map_chunks(store, chunks)
        return y

    def backward(self, gy):
        N, C, H, W, OC, Cg, KH, KW, OH, OW = self._geometry()
        G = self.G
        xp, K = get_array_module(gy), kernels_for(gy)
        wg = self.w.reshape(G, OC // G, Cg * KH * KW)
        need_x, need_w = self.needs_input_grad[0], self.needs_input_grad[1]
        need_b = len(self.needs_input_grad) > 2 and self.needs_input_grad[2]
        if N == 0:   # an empty batch: the sums over its images are 0
            return (xp.zeros_like(self.x) if need_x else None, xp.zeros_like(self.w) if need_w else None,
                    xp.zeros(OC, dtype=gy.dtype) if need_b else None)
        gx = gw = gb = None
        if self._is_pointwise(KH, KW):  # sums over the images by the backend (sum_rows, sum_leading: one launch each)
            gy = xp.ascontiguousarray(gy)
            gb = K.sum_leading(K.sum_rows(gy.reshape(N * OC, H * W)).reshape(N, OC)) if need_b else None
            gyg = gy.reshape(N, G, OC // G, H * W)
            if need_w:
                xg = self.x.reshape(N, G, Cg, H * W)
                gw = K.sum_leading(K.matmul(gyg, xg.swapaxes(-1, -2))).reshape(self.w.shape)
            if need_x:
                gx = K.matmul(wg.swapaxes(-1, -2), gyg).reshape(N, C, H, W)
            return gx, gw, gb
        if self._is_whole_image(H, W, KH, KW):
            gy2 = gy.reshape(N, OC)
            gb = K.sum_leading(gy2) if need_b else None
            gw = K.matmul(gy2.T, self.x.reshape(N, C * H * W)).reshape(self.w.shape) if need_w else None
            gx = K.matmul(gy2, self.w.reshape(OC, C * H * W)).reshape(N, C, H, W) if need_x else None
            return gx, gw, gb
        if self._depthwise(K, C, OC):
            gx, gw, gb = K.conv2d_depthwise_grads(self.x, gy, self.w, self.PH, self.PW, need_x, need_w)
            return gx, gw, gb.astype(gy.dtype) if need_b else None
        direct = self._column_free(K) and G == 1
        direct_x = direct and need_x and K.conv2d_image_grad_fits(C, H, W, KH, KW, self.PH, self.PW)
        direct_w = direct and need_w and K.conv2d_weight_grad_fits(OC, KW)
        if direct_x or direct_w:
            gx, gw, gb = self._direct_backward(K, gy, direct_x, direct_w, need_b)
            need_x, need_w, need_b = need_x and not direct_x, need_w and not direct_w, False
        if need_x or need_w or need_b:   # what the direct kernels do not serve, through the columns
            cx, cw, cb = self._column_backward(K, gy, need_x, need_w, need_b)
            gx, gw, gb = cx if need_x else gx, cw if need_w else gw, cb if need_b else gb
        return gx, gw, gb

    def _direct_backward(self, K, gy, direct_x, direct_w, need_b):
        """(gx, gw, gb) without columns (kernels/conv_direct_grad.py: its chunks on Numba's threads, one call);
        None for what was not asked."""
        N, C, H, W, OC, Cg, KH, KW, OH, OW = self._geometry()
        wt = K.flipped_weights(self.w)
        gx, gw, gb = K.conv2d_direct_grads(self.x, gy, wt, KH, KW, self.PH, self.PW, direct_x, direct_w)
        return gx, gw, gb.astype(gy.dtype) if need_b else None

    def _column_backward(self, K, gy, need_x, need_w, need_b):
        """(gx, gw, gb) through the columns: gW = gy @ col^T, gcol = W^T @ gy, gx = col2im(gcol), chunk by chunk."""
        N, C, H, W, OC, Cg, KH, KW, OH, OW = self._geometry()
        G = self.G
        xp = get_array_module(gy)
        wg = self.w.reshape(G, OC // G, Cg * KH * KW)
        gx = gw = gb = None
        WG = self._grid_width(K)
        chunks = self._chunks(K, WG)
        whole = len(chunks) == 1  # one chunk (the GPU's): its image gradient is gx itself, no copy
        if need_b and not whole:  # several chunks (the CPU): one sum over the batch beats one per chunk
            gb = gy.sum(axis=(0, 2, 3))
        if need_x and not whole:
            gx = xp.empty((N, C, H, W), dtype=gy.dtype)

        def chunk(n0, n1):
            nonlocal gx, gb
            m = n1 - n0
            if WG == OW:
                gy_grid = xp.ascontiguousarray((gy if whole else gy[n0:n1]).transpose(1, 0, 2, 3))
            else:
                gy_grid = xp.zeros((OC, m, OH, WG), dtype=gy.dtype)
                gy_grid[..., :OW] = gy[n0:n1].transpose(1, 0, 2, 3)   # the wide grid's garbage outputs: gradient 0
            gy_mat = gy_grid.reshape(G, OC // G, m * OH * WG)
            part_w = None
            if need_b and whole:  # rows of gy_mat are contiguous: on the GPU a cheaper sum than gy's over (0, 2, 3)
                gb = K.sum_rows(gy_mat.reshape(OC, m * OH * WG))
            if need_w:
                col = self.col if self.col is not None else self._columns(K, n0, n1, WG)
                if K.weight_grad_columns_first:
                    # (col @ gy^T)^T rather than gy @ col^T: the same numbers, but BLAS runs this orientation of
                    # the skinny product about twice as fast (benchmarks/README.md)
                    part_w = K.matmul(col, gy_mat.swapaxes(-1, -2)).swapaxes(-1, -2)
                else:  # gy @ col^T: the result in the weight's layout, no copy after (the GPU's choice)
                    part_w = K.matmul(gy_mat, col.swapaxes(-1, -2))
            if need_x:
                gcol = K.matmul(wg.swapaxes(-1, -2), gy_mat).reshape(C, KH, KW, m, OH, WG)
                if whole:
                    gx = self._image_gradient(K, gcol)
                else:
                    gx[n0:n1] = self._image_gradient(K, gcol)
            return part_w
        parts = K.map_chunks(chunk, chunks)
        self.col = None
        if need_w:
            gw = sum_in_order(parts).reshape(self.w.shape)
        return gx, gw, gb


def pad_images(x, PH, PW):
    """x (N, C, H, W) with PH zero rows above and below and PW zero columns left and right (x itself when none)."""
    if PH == PW == 0:
        return x
    return get_array_module(x).pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))


def check_conv2d_args(x, w, b, stride, padding, dilation, groups):
    """Validate conv2d's arguments up front; returns (stride, padding, dilation) as pairs."""
    check_float_4d(x, "input", "conv2d")
    if w.ndim != 4:
        raise ValueError(f"conv2d expects a weight of shape (OC, C/groups, KH, KW), got shape {tuple(w.shape)}")
    if w.dtype != x.dtype:
        raise TypeError(f"conv2d: input dtype {x.dtype} and weight dtype {w.dtype} differ")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    stride = positive_pair(stride, "stride")
    dilation = positive_pair(dilation, "dilation")
    padding = non_negative_pair(padding, "padding")
    N, C, H, W = x.shape
    OC, Cg, KH, KW = w.shape
    if C % groups:
        raise ValueError(f"conv2d: input channels C={C} are not divisible by groups={groups}")
    if OC % groups:
        raise ValueError(f"conv2d: output channels OC={OC} are not divisible by groups={groups}")
    if Cg * groups != C:
        raise ValueError(f"conv2d: input has {C} channels but the weight expects {Cg * groups} "
                         f"({Cg} per group x {groups} groups)")
    if b is not None and tuple(b.shape) != (OC,):
        raise ValueError(f"conv2d: bias must have shape ({OC},), got {tuple(b.shape)}")
    eff_h, eff_w = dilation[0] * (KH - 1) + 1, dilation[1] * (KW - 1) + 1
    ph, pw = H + 2 * padding[0], W + 2 * padding[1]
    if eff_h > ph or eff_w > pw:
        raise ValueError(f"conv2d: the kernel ({eff_h}x{eff_w} after dilation) is larger than "
                         f"the padded input ({ph}x{pw})")
    return stride, padding, dilation


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution of x (N, C, H, W) with w (OC, C/groups, KH, KW) and optional bias b (OC,)."""
    stride, padding, dilation = check_conv2d_args(x, w, b, stride, padding, dilation, groups)
    f = Conv2d(stride, padding, dilation, groups)
    return f(x, w) if b is None else f(x, w, b)


def conv2d_reference(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """The definition, in float64 nested loops over raw arrays: slow, obvious, and the reference every test uses."""
    x, w = np.asarray(getattr(x, "data", x), np.float64), np.asarray(getattr(w, "data", w), np.float64)
    b = None if b is None else np.asarray(getattr(b, "data", b), np.float64)
    (SH, SW), (PH, PW), (DH, DW) = check_conv2d_args(x, w, b, stride, padding, dilation, groups)
    N, C, H, W = x.shape
    OC, Cg, KH, KW = w.shape
    OH, OW = conv_output_size(H, KH, SH, PH, DH), conv_output_size(W, KW, SW, PW, DW)
    y = np.zeros((N, OC, OH, OW))
    for n in range(N):
        for oc in range(OC):
            g = oc // (OC // groups)
            for oh in range(OH):
                for ow in range(OW):
                    total = 0.0 if b is None else b[oc]
                    for c in range(Cg):
                        for kh in range(KH):
                            ih = oh * SH - PH + kh * DH
                            if not 0 <= ih < H:
                                continue
                            for kw in range(KW):
                                iw = ow * SW - PW + kw * DW
                                if 0 <= iw < W:
                                    total += w[oc, c, kh, kw] * x[n, g * Cg + c, ih, iw]
                    y[n, oc, oh, ow] = total
    return y

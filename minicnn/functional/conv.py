"""2-D convolution: the definition (`conv2d_reference`) beside the lesson (`Conv2d`: im2col, one GEMM per group, col2im).

Notation: N, C, H, W input; OC output channels; KH, KW kernel; SH, SW stride; PH, PW padding;
DH, DW dilation; G groups (each group sees Cg = C/G input channels and makes OC/G outputs);
OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1, same for OW.

    y[n, oc, oh, ow] = b[oc] + sum_{c, kh, kw} w[oc, c, kh, kw] * x[n, g*Cg + c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW]
    where g = oc // (OC/G), and x is zero outside the image.

Deep learning's "convolution" does not flip the kernel: it is a cross-correlation.
"""
import numpy as np

from .. import config
from ..autograd import Function
from ..backend import get_array_module, kernels_for
from .checks import check_input, non_negative_pair, positive_pair


def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):
    """Output length along one axis: (size + 2*padding - dilation*(kernel-1) - 1) // stride + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class Conv2d(Function):
    """Forward: col = im2col(x); y = W @ col, one GEMM per group. Backward: gW = gy @ col^T; gcol = W^T @ gy;
    gx = col2im(gcol); gb = gy summed over n, oh, ow.

        col   (C, KH, KW, N, OH, OW)  read as G matrices (Cg*KH*KW, N*OH*OW): col[c, kh, kw, n, oh, ow] is the
                                      input pixel that weight (c, kh, kw) meets for output (n, oh, ow)
        W     (OC, Cg, KH, KW)        read as G matrices (OC/G, Cg*KH*KW)
        y     G products (OC/G, N*OH*OW), laid out as (N, OC, OH, OW)

    The kernels (im2col, col2im, matmul) are the backend's: kernels/im2col.py and gemm.py on the CPU,
    im2col.cu and gemm.cu on the GPU, numpy_backend.py in plain NumPy. col2im is the adjoint of im2col: it
    adds every column entry back onto the pixel it was copied from, which is exactly the chain rule.

    One line lets a faster algorithm take the layer: the backend's `conv2d_plan` looks at the layer's
    geometry and the configuration (minicnn.config: conv = "auto", "im2col", or a fast one by name) and
    returns an object with its own forward and backward, or None for the lesson below. Which algorithm
    serves which shape is decided there (kernels/cpu_fast/plan.py on the CPU), not here; under
    `config.using(conv="im2col")` every layer runs the lesson.
    """

    def __init__(self, stride, padding, dilation, groups):
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    def forward(self, x, w, b=None):
        K = kernels_for(x)
        g = self.g = K.ConvGeometry.of(x.shape, w.shape, self.stride, self.padding, self.dilation, self.groups,
                                       x.dtype)
        self.fast = K.conv2d_plan(g, config.current().conv) if g.N else None   # the door to a faster algorithm
        if self.fast is not None:
            return self.fast.forward(x, w, b)
        self.w = w
        col = K.im2col(x, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW, g.DH, g.DW)
        self.col = col.reshape(g.G, g.Cg * g.KH * g.KW, g.N * g.OH * g.OW)
        y = K.matmul(w.reshape(g.G, g.OC // g.G, g.Cg * g.KH * g.KW), self.col)   # (G, OC/G, N*OH*OW)
        y = y.reshape(g.OC, g.N, g.OH, g.OW).transpose(1, 0, 2, 3)
        return get_array_module(y).ascontiguousarray(y) if b is None else y + b.reshape(1, g.OC, 1, 1)

    def backward(self, gy):
        need_x, need_w = self.needs_input_grad[:2]
        need_b = len(self.needs_input_grad) > 2 and self.needs_input_grad[2]
        if self.fast is not None:
            return self.fast.backward(gy, need_x, need_w, need_b)
        g, K = self.g, kernels_for(gy)
        gy_mat = gy.transpose(1, 0, 2, 3).reshape(g.G, g.OC // g.G, g.N * g.OH * g.OW)
        gb = gy.sum(axis=(0, 2, 3)) if need_b else None
        gw = K.matmul(gy_mat, self.col.swapaxes(1, 2)).reshape(self.w.shape) if need_w else None   # gy @ col^T
        gx = None
        if need_x:
            wg = self.w.reshape(g.G, g.OC // g.G, g.Cg * g.KH * g.KW)
            gcol = K.matmul(wg.swapaxes(1, 2), gy_mat).reshape(g.C, g.KH, g.KW, g.N, g.OH, g.OW)   # W^T @ gy
            gx = K.col2im(gcol, g.H, g.W, g.SH, g.SW, g.PH, g.PW, g.DH, g.DW)
        self.col = None
        return gx, gw, gb


def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """The column matrix of x (N, C, H, W), shape (C*KH*KW, N*OH*OW): column (n, oh, ow) holds the pixels that
    output pixel (oh, ow) of image n sees, row (c, kh, kw) one weight's view of the batch. A raw array from the
    backend's im2col (no gradient): for looking at, as lesson 3 and examples/visualize.py do."""
    data = check_input(x, "im2col")
    (KH, KW), stride = positive_pair(kernel_size, "kernel_size"), positive_pair(stride, "stride")
    padding, dilation = non_negative_pair(padding, "padding"), positive_pair(dilation, "dilation")
    col = kernels_for(data).im2col(data, KH, KW, *stride, *padding, *dilation)
    return col.reshape(data.shape[1] * KH * KW, -1)


def conv2d_algorithm(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1, device="cpu", dtype=np.float32):
    """The name of the algorithm a convolution of these shapes runs with under the current configuration:
    "im2col" (the lesson path) or the fast one the backend picks, e.g. "direct" or "pointwise"."""
    from ..backend import kernels_for_device
    K = kernels_for_device(device)
    stride, dilation = positive_pair(stride, "stride"), positive_pair(dilation, "dilation")
    padding = non_negative_pair(padding, "padding")
    g = K.ConvGeometry.of(tuple(x_shape), tuple(w_shape), stride, padding, dilation, groups, dtype)
    fast = K.conv2d_plan(g, config.current().conv) if g.N else None
    return "im2col" if fast is None else fast.describe()


def check_conv2d_args(x, w, b, stride, padding, dilation, groups):
    """Validate conv2d's arguments up front; returns (stride, padding, dilation) as pairs."""
    x = check_input(x, "conv2d")
    w = check_input(w, "conv2d", None, "weight")
    if w.ndim != 4:
        raise ValueError(f"conv2d expects a weight of shape (OC, C/groups, KH, KW), got shape {tuple(w.shape)}")
    if b is not None:
        b = check_input(b, "conv2d", None, "bias")
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


def same_padding(kernel, dilation):
    """(before, after) zero padding that keeps a stride-1 output as large as the input: the dilated kernel's
    reach minus one, split as PyTorch splits it (the odd one after)."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def resolve_padding(padding, w, stride, dilation):
    """padding as given (an int or a pair), or "valid" (none) or "same" (stride 1 only, from the kernel size of
    weight w): returns the symmetric padding to run with and how many leading output rows and columns to drop
    for an odd "same" split."""
    if not isinstance(padding, str):
        return padding, (0, 0)
    if padding == "valid":
        return 0, (0, 0)
    if padding != "same":
        raise ValueError(f"conv2d: padding must be an int, a pair of ints, 'valid' or 'same', got {padding!r}")
    stride, dilation = positive_pair(stride, "stride"), positive_pair(dilation, "dilation")
    if stride != (1, 1):
        raise ValueError(f"conv2d: padding='same' needs stride 1 (the output keeps the input's size), got stride "
                         f"{stride}")
    KH, KW = check_input(w, "conv2d", None, "weight").shape[2:]
    (th, bh), (tw, bw) = (same_padding(k, d) for k, d in zip((KH, KW), dilation))
    return (bh, bw), (bh - th, bw - tw)   # pad by the larger part on both sides, then drop the extra first row/column


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution of x (N, C, H, W) with w (OC, C/groups, KH, KW) and optional bias b (OC,).

    padding: an int, a pair, "valid" (no padding) or "same" (stride 1: the output is H x W; an even kernel
    pads one more row and column after than before, as PyTorch does)."""
    padding, (drop_h, drop_w) = resolve_padding(padding, w, stride, dilation)
    stride, padding, dilation = check_conv2d_args(x, w, b, stride, padding, dilation, groups)
    f = Conv2d(stride, padding, dilation, groups)
    y = f(x, w) if b is None else f(x, w, b)
    return y[:, :, drop_h:, drop_w:] if drop_h or drop_w else y


def conv2d_reference(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """The definition, in float64 nested loops over raw arrays: slow, obvious, and the reference every test uses."""
    x, w = np.asarray(getattr(x, "data", x), np.float64), np.asarray(getattr(w, "data", w), np.float64)
    b = None if b is None else np.asarray(getattr(b, "data", b), np.float64)
    same = padding == "same"
    padding, _ = resolve_padding(padding, w, stride, dilation)
    (SH, SW), (PH, PW), (DH, DW) = check_conv2d_args(x, w, b, stride, padding, dilation, groups)
    N, C, H, W = x.shape
    OC, Cg, KH, KW = w.shape
    OH, OW = conv_output_size(H, KH, SH, PH, DH), conv_output_size(W, KW, SW, PW, DW)
    if same:   # the padding before each axis, and an output as large as the input
        (PH, _), (PW, _), OH, OW = same_padding(KH, DH), same_padding(KW, DW), H, W
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

"""Two convolutions that are one matrix product and need no column matrix, on every backend.

Notation: kernels/conv_geometry.py. `ops` is the backend's module (its matmul, sum_rows and sum_leading),
so the same two classes serve NumPy, Numba and CuPy arrays.

Pointwise (1x1 kernel, stride 1, no padding): each output pixel mixes the channels of the same input
pixel, so per image and group
    y[n, g] = W[g] @ x[n, g]                        (OC/G, Cg) @ (Cg, H*W)
    gW[g]   = sum_n gy[n, g] @ x[n, g]^T            gx[n, g] = W[g]^T @ gy[n, g]

Whole image (KH, KW = H, W, no padding, one group; eip4's last layer): one output pixel per image, each
the dot product of the whole image with a filter: a fully connected layer,
    y = x_flat @ W_flat^T                           (N, C*H*W) @ (C*H*W, OC)
    gW = gy^T @ x_flat                              gx = gy @ W_flat
"""


class PointwiseConv:
    name = "pointwise"

    def __init__(self, g, ops):
        self.g, self.ops = g, ops

    def describe(self):
        return self.name

    def forward(self, x, w, b=None):
        g, ops = self.g, self.ops
        self.x, self.w = x, w
        wg = w.reshape(g.G, g.OC // g.G, g.Cg)
        # (G, OC/G, Cg) @ (N, G, Cg, HW) -> (N, G, OC/G, HW); with one group the bias goes into the same product
        y = ops.matmul(wg, x.reshape(g.N, g.G, g.Cg, g.H * g.W), bias=b if g.G == 1 else None)
        y = y.reshape(g.N, g.OC, g.OH, g.OW)
        return y if b is None or g.G == 1 else y + b.reshape(1, g.OC, 1, 1)

    def backward(self, gy, need_x=True, need_w=True, need_b=True):
        g, ops = self.g, self.ops
        gy = gy.reshape(g.N, g.OC, g.H * g.W)
        gb = ops.sum_leading(ops.sum_rows(gy.reshape(g.N * g.OC, g.H * g.W)).reshape(g.N, g.OC)) if need_b else None
        gyg = gy.reshape(g.N, g.G, g.OC // g.G, g.H * g.W)
        gw = gx = None
        if need_w:
            xg = self.x.reshape(g.N, g.G, g.Cg, g.H * g.W)
            gw = ops.sum_leading(ops.matmul(gyg, xg.swapaxes(-1, -2))).reshape(self.w.shape)
        if need_x:
            wg = self.w.reshape(g.G, g.OC // g.G, g.Cg)
            gx = ops.matmul(wg.swapaxes(-1, -2), gyg).reshape(g.N, g.C, g.H, g.W)
        return gx, gw, gb


class WholeImageConv:
    name = "whole_image"

    def __init__(self, g, ops):
        self.g, self.ops = g, ops

    def describe(self):
        return self.name

    def forward(self, x, w, b=None):
        g = self.g
        self.x, self.w = x, w
        y = self.ops.matmul(x.reshape(g.N, -1), w.reshape(g.OC, -1).T).reshape(g.N, g.OC, 1, 1)
        return y if b is None else y + b.reshape(1, g.OC, 1, 1)

    def backward(self, gy, need_x=True, need_w=True, need_b=True):
        g, ops = self.g, self.ops
        gy2 = gy.reshape(g.N, g.OC)
        gb = ops.sum_leading(gy2) if need_b else None
        gw = ops.matmul(gy2.T, self.x.reshape(g.N, -1)).reshape(self.w.shape) if need_w else None
        gx = ops.matmul(gy2, self.w.reshape(g.OC, -1)).reshape(g.N, g.C, g.H, g.W) if need_x else None
        return gx, gw, gb


def plan(g, algorithm, ops):
    """The matrix-product algorithm for geometry g where it applies and `algorithm` allows it ('auto' or its name)."""
    if g.pointwise and algorithm in ("auto", "pointwise"):
        return PointwiseConv(g, ops)
    if g.whole_image and algorithm in ("auto", "whole_image"):
        return WholeImageConv(g, ops)
    return None

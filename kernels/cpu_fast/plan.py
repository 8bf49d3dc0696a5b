"""Which fast algorithm serves which convolution on the CPU: decided here, in one place, from the layer's geometry.

The engine's Conv2d (minicnn/functional/conv.py) runs the lesson path -- im2col, one GEMM per group,
col2im -- unless `plan()` returns an object with forward(x, w, b) and backward(gy, need_x, need_w, need_b)
for the layer. For a stride-1, undilated layer, in this order:

    depthwise   groups = C = OC: plane by plane, no columns (depthwise.py)
    direct      one group, where a register tile fits the forward pass (at least 8 output channels and 16
                wide-grid positions per image; lanes.py's tiles where they compute fewer outputs), or, under
                "auto", where only the backward's tiles fit: the image gradient from gy laid out on the
                images' grid, the weight gradient from rows of the images (direct_grad.py). What the tiles do
                not serve of a layer goes through the wide grid's columns.
    wide        everything else of stride 1: im2col on the wide grid, chunk by chunk (wide.py)

Strided or dilated layers take the lesson path. `algorithm` is the configuration's choice: "auto" takes
the first that applies; a name takes that algorithm where it applies and nothing (the lesson path) elsewhere.
"""
import numpy as np

from .depthwise import conv2d_depthwise, conv2d_depthwise_grads
from .direct import conv2d_direct, fits as direct_fits
from .direct_grad import conv2d_direct_grads, flipped_weights, image_grad_fits, weight_grad_fits
from .wide import WideConv, pad_images

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class DepthwiseConv:
    """groups = C = OC, stride 1: each channel's plane convolved with its own filter (depthwise.py)."""

    name = "depthwise"

    def __init__(self, g):
        self.g = g

    def describe(self):
        return self.name

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        return conv2d_depthwise(pad_images(x, self.g.PH, self.g.PW), w, b)

    def backward(self, gy, need_x=True, need_w=True, need_b=True):
        gx, gw, gb = conv2d_depthwise_grads(self.x, gy, self.w, self.g.PH, self.g.PW, need_x, need_w)
        return gx, gw, gb.astype(gy.dtype) if need_b else None


class DirectConv:
    """One group, stride 1: register tiles where they fit, the wide grid's columns for the rest of the layer."""

    name = "direct"

    def __init__(self, g, forward_direct):
        self.g, self.forward_direct = g, forward_direct
        self.image_grad = image_grad_fits(g.C, g.H, g.W, g.KH, g.KW, g.PH, g.PW)
        self.weight_grad = weight_grad_fits(g.OC, g.KW)
        self.wide = WideConv(g)

    def describe(self):
        """The forward pass's algorithm, and the weight gradient's where it differs: 'direct', 'wide (weight
        gradient: direct)', 'direct (weight gradient: wide)'. (The image gradient takes its tile where it fits.)"""
        forward = "direct" if self.forward_direct else "wide"
        weight = "direct" if self.weight_grad else "wide"
        return forward if weight == forward else f"{forward} (weight gradient: {weight})"

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        if not self.forward_direct:
            return self.wide.forward(x, w, b)
        self.wide.x, self.wide.w = x, w   # for the parts of the backward the tiles do not serve
        return conv2d_direct(pad_images(x, self.g.PH, self.g.PW), w, b)

    def backward(self, gy, need_x=True, need_w=True, need_b=True):
        g = self.g
        direct_x, direct_w = need_x and self.image_grad, need_w and self.weight_grad
        gx = gw = gb = None
        if direct_x or direct_w:
            gx, gw, gb = conv2d_direct_grads(self.x, gy, flipped_weights(self.w), g.KH, g.KW, g.PH, g.PW,
                                             direct_x, direct_w)
            gb = gb.astype(gy.dtype) if need_b else None
            need_x, need_w, need_b = need_x and not direct_x, need_w and not direct_w, False
        if need_x or need_w or need_b:
            cx, cw, cb = self.wide.backward(gy, need_x, need_w, need_b)
            gx, gw, gb = cx if need_x else gx, cw if need_w else gw, cb if need_b else gb
        return gx, gw, gb


def plan(g, algorithm):
    """The fast algorithm for geometry g under the configuration's `algorithm`, or None for the lesson path."""
    if not g.stride_1 or g.dtype not in FLOATS:
        return None
    if g.depthwise and algorithm in ("auto", "depthwise"):
        return DepthwiseConv(g)
    if g.G == 1 and algorithm in ("auto", "direct"):
        forward = direct_fits(g.OC, g.H + 2 * g.PH, g.W + 2 * g.PW, g.KH, g.KW)
        backward = image_grad_fits(g.C, g.H, g.W, g.KH, g.KW, g.PH, g.PW) or weight_grad_fits(g.OC, g.KW)
        if forward or (algorithm == "auto" and backward):
            return DirectConv(g, forward)
    if algorithm in ("auto", "wide"):
        return WideConv(g)
    return None

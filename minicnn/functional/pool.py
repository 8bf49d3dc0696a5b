"""Pooling: max (remembers the winner of each window), average, and global average; references beside the kernels."""
import numpy as np

from ..autograd import Function
from ..backend import kernels_for
from .checks import check_input, non_negative_pair, positive_pair, raw_array


class MaxPool2d(Function):
    """Forward keeps argmax (the first maximum in row-major window order); backward adds gy at argmax."""

    def __init__(self, kernel, stride, padding):
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x):
        self.H, self.W = x.shape[2], x.shape[3]
        y, self.argmax = kernels_for(x).max_pool2d_forward(x, *self.kernel, *self.stride, *self.padding)
        return y

    def backward(self, gy):
        return kernels_for(gy).max_pool2d_backward(gy, self.argmax, self.H, self.W,
                                                   *self.kernel, *self.stride, *self.padding)


class AvgPool2d(Function):
    def __init__(self, kernel, stride, padding):
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x):
        self.H, self.W = x.shape[2], x.shape[3]
        return kernels_for(x).avg_pool2d_forward(x, *self.kernel, *self.stride, *self.padding)

    def backward(self, gy):
        return kernels_for(gy).avg_pool2d_backward(gy, self.H, self.W, *self.kernel, *self.stride, *self.padding)


def pool_window(kernel_size, stride, padding, op):
    """(kernel, stride, padding) as pairs, checked: a positive window and stride (stride defaults to the window),
    padding of at most half the window (so every window holds a real pixel). nn.MaxPool2d checks with it too."""
    kernel = positive_pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None else positive_pair(stride, "stride", op)
    padding = non_negative_pair(padding, "padding", op)
    for k, p, axis in zip(kernel, padding, ("height", "width")):
        if p > k // 2:
            raise ValueError(f"{op}: padding {p} must be at most half the kernel {axis} {k} "
                             f"(so every window holds a real pixel)")
    return kernel, stride, padding


def _pool_args(x, kernel_size, stride, padding, op):
    x = check_input(x, op)
    kernel, stride, padding = pool_window(kernel_size, stride, padding, op)
    H, W = x.shape[2], x.shape[3]
    if kernel[0] > H + 2 * padding[0] or kernel[1] > W + 2 * padding[1]:
        raise ValueError(f"{op}: the window {kernel[0]}x{kernel[1]} is larger than the padded input "
                         f"{H + 2 * padding[0]}x{W + 2 * padding[1]}")
    return kernel, stride, padding


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over each window (stride defaults to the window size); padding counts as minus infinity."""
    return MaxPool2d(*_pool_args(x, kernel_size, stride, padding, "max_pool2d"))(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over each window; padding counts as zeros in the mean (PyTorch's count_include_pad=True)."""
    return AvgPool2d(*_pool_args(x, kernel_size, stride, padding, "avg_pool2d"))(x)


def global_avg_pool2d(x):
    """(N, C, H, W) -> (N, C): the mean of each channel's plane."""
    check_input(x, "global_avg_pool2d")
    from .shape import mean
    return mean(x, axis=(2, 3))


def max_pool2d_reference(x, kernel_size, stride=None, padding=0):
    """The definition in float64 loops: max over each window, padding is -inf."""
    x = np.asarray(raw_array(x, "max_pool2d_reference"), np.float64)
    (KH, KW), (SH, SW), (PH, PW) = _pool_args(x, kernel_size, stride, padding, "max_pool2d")
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)), constant_values=-np.inf)
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    y = np.empty((N, C, OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            y[:, :, oh, ow] = xp[:, :, oh * SH:oh * SH + KH, ow * SW:ow * SW + KW].max(axis=(2, 3))
    return y

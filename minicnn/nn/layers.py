"""The layers of a CNN as Modules: each holds its parameters and calls one function from minicnn.functional."""
import numpy as np

from .. import functional as F
from ..functional.checks import non_negative_pair, positive_int, positive_pair, real_number
from ..functional.norm import check_momentum_and_eps
from ..functional.pool import pool_window
from . import init
from .module import Module, Parameter


class Conv2d(Module):
    """Conv2d(C, OC, kernel_size): weight (OC, C/groups, KH, KW) Glorot-uniform (Keras default), bias zeros."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, weight_init="glorot_uniform"):
        super().__init__()
        in_channels = positive_int(in_channels, "in_channels", "Conv2d")
        out_channels = positive_int(out_channels, "out_channels", "Conv2d")
        groups = positive_int(groups, "groups", "Conv2d")
        KH, KW = positive_pair(kernel_size, "kernel_size", "Conv2d")
        stride, dilation = positive_pair(stride, "stride", "Conv2d"), positive_pair(dilation, "dilation", "Conv2d")
        padding = non_negative_pair(padding, "padding", "Conv2d")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels={in_channels} and out_channels={out_channels} "
                             f"must both be divisible by groups={groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (KH, KW), stride, padding
        self.dilation, self.groups = dilation, groups
        self.weight = Parameter(init.get(weight_init)((out_channels, in_channels // groups, KH, KW)))
        self.bias = Parameter(np.zeros(out_channels, np.float32)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}")


class Linear(Module):
    """y = x @ W^T + b with W (out, in)."""

    def __init__(self, in_features, out_features, bias=True, weight_init="glorot_uniform"):
        super().__init__()
        in_features = positive_int(in_features, "in_features", "Linear")
        out_features = positive_int(out_features, "out_features", "Linear")
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.get(weight_init)((out_features, in_features)))
        self.bias = Parameter(np.zeros(out_features, np.float32)) if bias else None

    def forward(self, x):
        y = F.matmul(x, F.transpose(self.weight))
        return y + self.bias if self.bias is not None else y

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}"


class BatchNorm2d(Module):
    """Per-channel normalisation; `momentum` weighs the new batch statistic (Keras momentum 0.99 == 0.01 here)."""

    def __init__(self, num_features, momentum=0.1, eps=1e-5):
        super().__init__()
        num_features = positive_int(num_features, "num_features", "BatchNorm2d")
        check_momentum_and_eps(momentum, eps, "BatchNorm2d")
        self.num_features, self.momentum, self.eps = num_features, momentum, eps
        self.weight = Parameter(np.ones(num_features, np.float32))   # gamma
        self.bias = Parameter(np.zeros(num_features, np.float32))    # beta
        self.register_buffer("running_mean", np.zeros(num_features, np.float32))
        self.register_buffer("running_var", np.ones(num_features, np.float32))

    def forward(self, x):
        """Batch norm of x (a ReLU before it and a Dropout after it run fused with it through nn.fuse)."""
        return F.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                            self.training, self.momentum, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = pool_window(kernel_size, stride, padding, type(self).__name__)

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class AvgPool2d(MaxPool2d):
    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class GlobalAvgPool2d(Module):
    """(N, C, H, W) -> (N, C)."""

    def forward(self, x):
        return F.global_avg_pool2d(x)


class Dropout(Module):
    """Inverted dropout in training, identity in eval; `seed` gives the layer its own generator."""

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        if not 0.0 <= real_number(p, "p", "Dropout") < 1.0:
            raise ValueError(f"Dropout: the probability p must lie in [0, 1), got {p}")
        self.p = p
        self.generator = None if seed is None else np.random.default_rng(seed)

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.generator)

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W)."""

    def forward(self, x):
        return F.flatten(x, 1)

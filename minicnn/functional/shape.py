"""Reductions and shape changes: sum, mean, reshape, transpose, flatten, indexing."""
import math

from ..autograd import Function
from ..backend import get_array_module


def _normalize_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
    return tuple(sorted(a % ndim for a in axes))


class Sum(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        self.axes = _normalize_axes(self.axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        if not self.keepdims:
            gy = xp.expand_dims(gy, self.axes)
        return xp.broadcast_to(gy, self.shape)


class Mean(Sum):
    def forward(self, x):
        y = super().forward(x)
        self.count = 1
        for a in self.axes:
            self.count *= x.shape[a]
        return y / x.dtype.type(self.count)

    def backward(self, gy):
        return super().backward(gy / gy.dtype.type(self.count))


class Reshape(Function):
    def __init__(self, shape):
        self.new_shape = shape

    def forward(self, x):
        self.shape = x.shape
        return x.reshape(self.new_shape)

    def backward(self, gy):
        return gy.reshape(self.shape)


class Transpose(Function):
    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        self.axes = tuple(reversed(range(x.ndim))) if not self.axes else tuple(a % x.ndim for a in self.axes)
        return x.transpose(self.axes)

    def backward(self, gy):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a] = i
        return gy.transpose(inverse)


class GetItem(Function):
    """x[key]; the backward scatters into zeros (np.add.at, so repeated indices add up)."""

    def __init__(self, key):
        self.key = key

    def forward(self, x):
        self.shape, self.dtype = x.shape, x.dtype
        return x[self.key]

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.shape, dtype=self.dtype)
        if xp.__name__ == "numpy":
            xp.add.at(gx, self.key, gy)
        else:  # cupy
            import cupyx
            cupyx.scatter_add(gx, self.key, gy)
        return gx


def sum(x, axis=None, keepdims=False):
    return Sum(axis, keepdims)(x)


def mean(x, axis=None, keepdims=False):
    return Mean(axis, keepdims)(x)


def reshape(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape(shape)(x)


def transpose(x, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return Transpose(axes or None)(x)


def flatten(x, start_dim=1):
    """Keep the first `start_dim` axes, merge the rest: (N, C, H, W) -> (N, C*H*W). The merged size is written out
    rather than -1, which an empty batch (N = 0) leaves undetermined."""
    return reshape(x, tuple(x.shape[:start_dim]) + (math.prod(x.shape[start_dim:]),))


def getitem(x, key):
    from ..tensor import Tensor
    if isinstance(key, Tensor):  # not hasattr(key, "data"): a raw array's .data is a memoryview / device pointer
        key = key.data
    return GetItem(key)(x)

"""Activation functions and the log-softmax, each with its derivative written next to it."""
from ..autograd import Function
from ..backend import get_array_module, kernels_for
from .checks import check_input


class ReLU(Function):
    """max(x, 0); the derivative is 1 where x > 0 and 0 elsewhere (0 at the kink x = 0 itself).

    Only the output is kept: y > 0 exactly where x > 0, so the backward pass needs no mask of its own.
    The kernels (kernels/relu.py) are these two lines: maximum(x, 0) and gy * (y > 0), in one pass each."""

    def forward(self, x):
        self.y = kernels_for(x).relu_forward(x)
        return self.y

    def backward(self, gy):
        return kernels_for(gy).relu_backward(gy, self.y)


class Sigmoid(Function):
    """1 / (1 + e^-x); its derivative y (1 - y) is at most 1/4, which is why deep sigmoid stacks fade."""

    def forward(self, x):
        xp = get_array_module(x)
        self.y = 0.5 * (xp.tanh(0.5 * x) + 1)  # stable for large |x|
        return self.y

    def backward(self, gy):
        return gy * self.y * (1 - self.y)


class Tanh(Function):
    def forward(self, x):
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, gy):
        return gy * (1 - self.y * self.y)


class LogSoftmax(Function):
    """log(softmax(x)) = x - max - log(sum(exp(x - max))): subtracting the max keeps exp from overflowing."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        xp = get_array_module(x)
        shifted = x - x.max(axis=self.axis, keepdims=True)
        self.y = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        return self.y

    def backward(self, gy):
        xp = get_array_module(gy)
        return gy - xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True)


def relu(x):
    check_input(x, "relu", ndim=None)   # float32 or float64: what the kernels take
    return ReLU()(x)


def sigmoid(x): return Sigmoid()(x)
def tanh(x): return Tanh()(x)
def log_softmax(x, axis=-1): return LogSoftmax(axis)(x)


def softmax(x, axis=-1):
    from .arith import exp
    return exp(log_softmax(x, axis))

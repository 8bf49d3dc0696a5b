"""Inverted dropout: zero each value with probability p and scale the survivors by 1/(1-p), so eval needs no change."""
from ..autograd import Function
from ..backend import kernels_for
from .. import random as mrandom
from .checks import check_input


class Dropout(Function):
    """The mask is a hash of (key, index) (kernels/dropout.py): the forward pass applies it to x, the
    backward pass applies the same mask to the gradient, and only the 64-bit key is kept in between."""

    def __init__(self, p, key):
        self.p, self.key = p, key

    def forward(self, x):
        return kernels_for(x).dropout_apply(x, self.p, self.key)

    def backward(self, gy):
        return kernels_for(gy).dropout_apply(gy, self.p, self.key)


def dropout(x, p=0.5, training=True, generator=None):
    """In training, keep each value with probability 1-p (scaled by 1/(1-p)); in eval, return x unchanged.

    One key per call is drawn from `generator` (a numpy.random.Generator; default: minicnn's host
    generator, whatever the device of x), so checkpoints that save the generator repeat the masks.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
    check_input(x, "dropout", ndim=None)   # float32 or float64: what the kernels take
    if not training or p == 0.0:
        return x
    gen = generator if generator is not None else mrandom.default_generator()
    return Dropout(p, mrandom.draw_key(gen))(x)

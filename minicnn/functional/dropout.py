"""Inverted dropout: zero each value with probability p and scale the survivors by 1/(1-p), so eval needs no change."""
from ..autograd import Function
from ..backend import kernels_for
from .. import random as mrandom


class Dropout(Function):
    def __init__(self, p, generator):
        self.p, self.generator = p, generator

    def forward(self, x):
        self.mask = kernels_for(x).dropout_mask(x.shape, self.p, self.generator, x.dtype)
        return x * self.mask

    def backward(self, gy):
        return gy * self.mask


def dropout(x, p=0.5, training=True, generator=None):
    """In training, keep each value with probability 1-p (scaled by 1/(1-p)); in eval, return x unchanged."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    gen = generator if generator is not None else mrandom.default_generator(x.data)
    return Dropout(p, gen)(x)

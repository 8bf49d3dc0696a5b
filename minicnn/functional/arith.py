"""Elementwise arithmetic and the matrix product, each a Function with forward and backward side by side.

Broadcasting is handled once, in the engine (`autograd.sum_to`), so these backward passes
return gradients of the broadcast shape.
"""
from ..autograd import Function
from ..backend import get_array_module, kernels_for


class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        return gy, gy


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, gy):
        return gy, -gy


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        return gy * self.b, gy * self.a


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        gb = None
        if self.needs_input_grad[1]:
            gb = -gy * self.a / (self.b * self.b)
        return gy / self.b, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, gy):
        return -gy


class Pow(Function):
    """a ** c for a constant exponent c: d/da = c * a ** (c - 1)."""

    def __init__(self, c):
        self.c = c

    def forward(self, a):
        self.a = a
        return a ** self.c

    def backward(self, gy):
        return gy * self.c * self.a ** (self.c - 1)


class Exp(Function):
    def forward(self, a):
        self.y = get_array_module(a).exp(a)
        return self.y

    def backward(self, gy):
        return gy * self.y


class Log(Function):
    def forward(self, a):
        self.a = a
        return get_array_module(a).log(a)

    def backward(self, gy):
        return gy / self.a


class MatMul(Function):
    """a @ b for 2-D matrices (or stacks of them): ga = gy @ b^T, gb = a^T @ gy (the backend's matmul, kernels/gemm.py)."""

    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul needs operands with at least 2 dimensions, got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape} ({a.shape[-1]} != {b.shape[-2]})")
        self.a, self.b = a, b
        return kernels_for(a).matmul(a, b)

    def backward(self, gy):
        K = kernels_for(gy)
        ga = K.matmul(gy, self.b.swapaxes(-1, -2)) if self.needs_input_grad[0] else None
        gb = K.matmul(self.a.swapaxes(-1, -2), gy) if self.needs_input_grad[1] else None
        return ga, gb


def add(a, b): return Add()(a, b)
def sub(a, b): return Sub()(a, b)
def mul(a, b): return Mul()(a, b)
def div(a, b): return Div()(a, b)
def neg(a): return Neg()(a)
def exp(a): return Exp()(a)
def log(a): return Log()(a)
def matmul(a, b): return MatMul()(a, b)


def pow(a, c):
    """a ** c with a constant (non-tensor) exponent c."""
    if hasattr(c, "data") or hasattr(c, "shape"):
        raise TypeError("pow: the exponent must be a Python number, not a tensor or array")
    return Pow(c)(a)

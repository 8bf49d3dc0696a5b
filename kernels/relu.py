"""ReLU on the CPU, one parallel pass each way: y = max(x, 0) and gx = gy * (y > 0).

Notation: n values (the activations, flattened).
    y[i]  = x[i]  if x[i] > 0, else 0       (NaN passes through, as with numpy.maximum)
    gx[i] = gy[i] if y[i] > 0, else 0       (y > 0 exactly where x > 0: the output is the mask)

The plain versions are one NumPy expression each (`relu_forward_numpy`, `relu_backward_numpy`), and
the readable definition is in minicnn/functional/activation.py. NumPy runs them on one thread, the
backward in two passes (a boolean mask, then a product); these loops split the values over Numba's
threads and read each array once. relu.cu holds the same two loops for the GPU, one thread per value.
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _relu_forward(x, y):
    for i in prange(x.size):
        v = x[i]
        y[i] = v if not v <= 0 else 0      # "not <= 0" rather than "> 0": NaN stays NaN, like numpy.maximum


@njit(cache=True, parallel=True)
def _relu_backward(gy, y, gx):
    for i in prange(gy.size):
        gx[i] = gy[i] * (1 if y[i] > 0 else 0)   # a product, as in gy * (y > 0): NaN and inf in gy propagate


def relu_forward(x):
    """max(x, 0) of an array of any shape."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _relu_forward(x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(gy, y):
    """The gradient of ReLU given its output y: gy where y > 0, else 0."""
    gy, y = np.ascontiguousarray(gy), np.ascontiguousarray(y)
    gx = np.empty_like(gy)
    _relu_backward(gy.reshape(-1), y.reshape(-1), gx.reshape(-1))
    return gx


def relu_forward_numpy(x):
    return np.maximum(x, 0)


def relu_backward_numpy(gy, y):
    return gy * (y > 0)

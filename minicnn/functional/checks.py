"""Argument checks for the functions and layers: bad input is one clear error naming the values, before any work."""
import numbers

import numpy as np

from ..backend import is_gpu_array
from ..tensor import Tensor

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
LAYOUTS = {1: "(C,)", 2: "(N, F)", 4: "(N, C, H, W)"}  # how a message spells the expected shape


def type_name(value):
    """What a message calls the type of `value`: 'list', 'float', 'numpy.float32'."""
    cls = type(value)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def raw_array(x, op, what="input"):
    """The array behind x: a Tensor's .data, or x itself when it is a NumPy or CuPy array.

    Not getattr(x, "data", x): a NumPy array's own .data is a memoryview of its bytes, not the array.
    Lists, numbers and other objects are a TypeError naming their type."""
    if isinstance(x, Tensor):
        return x.data
    if isinstance(x, np.ndarray) or is_gpu_array(x):
        return x
    role = "" if what == "input" else f" as {what}"
    raise TypeError(f"{op} expects a Tensor or an array{role}, got {type_name(x)}")


def check_input(x, op, ndim=4, what="input"):
    """x must be a Tensor or a NumPy/CuPy array of float32 or float64 with `ndim` dimensions (None: any number).

    Returns the raw array. The checks, in order, each a one-line error that names `op`:
        not a Tensor or an array  TypeError   "conv2d expects a Tensor or an array, got list"
        ndim dimensions           ValueError  "conv2d expects input of shape (N, C, H, W), got a 3-D tensor of shape
                                              (2, 5, 5)"
        a floating-point dtype    TypeError   "conv2d needs floating-point input, got dtype uint8; convert with ..."
        float32 or float64        TypeError   "conv2d supports float32 and float64, got float16; convert with
                                              .astype(np.float32)"
    `what` names the argument in the messages ("input", "weight", "gamma", ...)."""
    a = raw_array(x, op, what)
    if ndim is not None and a.ndim != ndim:
        layout = LAYOUTS.get(ndim, f"{ndim} dimensions")
        raise ValueError(f"{op} expects {what} of shape {layout}, got a {a.ndim}-D tensor of shape {tuple(a.shape)}")
    dtype = a.dtype
    if dtype.kind != "f":
        hint = " (images: divide by 255)" if dtype.kind in "ui" else ""
        raise TypeError(f"{op} needs floating-point {what}, got dtype {dtype}; convert with .astype(np.float32){hint}")
    if dtype not in SUPPORTED_DTYPES:
        role = "" if what == "input" else f" {what}"
        raise TypeError(f"{op} supports float32 and float64, got {dtype}{role}; convert with .astype(np.float32)")
    return a


def _prefix(op):
    return f"{op}: " if op else ""


def pair(value, name, op=None):
    """An int or a pair of ints -> (a, b); anything else is a TypeError naming the argument (and `op`, when given)."""
    if type(value) is int:  # the usual case first (bool, a subclass of int, is refused below)
        return value, value
    if isinstance(value, bool):
        raise TypeError(f"{_prefix(op)}{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return value, value
    try:
        a, b = value
    except (TypeError, ValueError):
        raise TypeError(f"{_prefix(op)}{name} must be an int or a pair of ints, got {value!r}") from None
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, int) or not isinstance(b, int):
        raise TypeError(f"{_prefix(op)}{name} must be an int or a pair of ints, got {value!r}")
    return a, b


def positive_pair(value, name, op=None):
    a, b = pair(value, name, op)
    if a <= 0 or b <= 0:
        raise ValueError(f"{_prefix(op)}{name} must be positive, got {value!r}")
    return a, b


def non_negative_pair(value, name, op=None):
    a, b = pair(value, name, op)
    if a < 0 or b < 0:
        raise ValueError(f"{_prefix(op)}{name} must not be negative, got {value!r}")
    return a, b


def positive_int(value, name, op=None):
    """A positive int (a NumPy integer too; not a bool): a TypeError for other types, a ValueError below 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{_prefix(op)}{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{_prefix(op)}{name} must be a positive int, got {value!r}")
    return int(value)


def real_number(value, name, op=None):
    """A real number (int, float or NumPy scalar; not a bool) as a float, else a TypeError naming the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{_prefix(op)}{name} must be a number, got {value!r}")
    return float(value)

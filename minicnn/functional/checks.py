"""Input checks shared by the convolution and pooling functions: every message names the offending values."""


def pair(value, name):
    """An int or a pair of ints -> (a, b); anything else is a TypeError naming the argument."""
    if type(value) is int:  # the usual case first (bool, a subclass of int, is refused below)
        return value, value
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return value, value
    try:
        a, b = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, int) or not isinstance(b, int):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return a, b


def positive_pair(value, name):
    a, b = pair(value, name)
    if a <= 0 or b <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return a, b


def non_negative_pair(value, name):
    a, b = pair(value, name)
    if a < 0 or b < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return a, b


def check_float_4d(x, what, op):
    """x must be a 4-D floating-point array (N, C, H, W)."""
    if x.ndim != 4:
        raise ValueError(f"{op} expects {what} of shape (N, C, H, W), got a {x.ndim}-D tensor of shape {tuple(x.shape)}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op} needs floating-point {what}, got dtype {x.dtype}; convert with .astype(float32) "
                        "(images: divide by 255)")

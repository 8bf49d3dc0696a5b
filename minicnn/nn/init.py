"""Weight initialisers: keep the variance of activations (and gradients) steady from layer to layer.

fan_in = C_in * KH * KW (inputs feeding one output), fan_out = C_out * KH * KW.
Glorot/Xavier uniform (the Keras default): U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
He/Kaiming normal (for ReLU networks): N(0, 2 / fan_in); He uniform: U(-a, a), a = sqrt(6 / fan_in).
"""
import numpy as np

from .. import random as mrandom


def fans(shape):
    """(fan_in, fan_out) of a weight: Linear (out, in) or Conv (OC, C, KH, KW)."""
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def glorot_uniform(shape, generator=None, dtype=np.float32):
    fan_in, fan_out = fans(shape)
    a = np.sqrt(6.0 / (fan_in + fan_out))
    gen = generator or mrandom.default_generator()
    return gen.uniform(-a, a, size=shape).astype(dtype)


def he_normal(shape, generator=None, dtype=np.float32):
    fan_in, _ = fans(shape)
    gen = generator or mrandom.default_generator()
    return (gen.standard_normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def he_uniform(shape, generator=None, dtype=np.float32):
    fan_in, _ = fans(shape)
    a = np.sqrt(6.0 / fan_in)
    gen = generator or mrandom.default_generator()
    return gen.uniform(-a, a, size=shape).astype(dtype)


INITIALIZERS = {"glorot_uniform": glorot_uniform, "he_normal": he_normal, "he_uniform": he_uniform}


def get(name):
    if callable(name):
        return name
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise ValueError(f"unknown initialiser {name!r}; choose from {sorted(INITIALIZERS)}") from None

"""The dropout mask on the CPU: keep each value with probability 1-p, scaled by 1/(1-p) (inverted dropout).

    u[i]    = uniform float32 in [0, 1): the i-th 32-bit half of the generator's raw 64-bit output
              (low half first), shifted right by 8 and times 2^-24 -- the way NumPy makes float32s
    mask[i] = 1/(1-p) if u[i] >= float32(p) else 0
Reading the raw bits (random_raw) and thresholding them in one Numba pass costs about half of
generator.random(dtype=float32) followed by NumPy comparisons. `uniform_float32` gives the same u
as an array, so the GPU backend, handed a NumPy generator, draws exactly the CPU's mask.
"""
import numpy as np
from numba import njit, prange

_SCALE = np.float32(1.0 / 16777216.0)  # 2^-24


@njit(cache=True, inline="always")
def _u(raw, i):
    half = (raw[i >> 1] >> np.uint64(32 * (i & 1))) & np.uint64(0xFFFFFFFF)
    return np.float32(half >> np.uint64(8)) * _SCALE


@njit(cache=True, parallel=True)
def _mask(raw, threshold, scale, mask):
    for i in prange(mask.size):
        mask[i] = scale if _u(raw, i) >= threshold else 0.0


@njit(cache=True, parallel=True)
def _uniform(raw, u):
    for i in prange(u.size):
        u[i] = _u(raw, i)


def _raw_bits(generator, n):
    return generator.bit_generator.random_raw((n + 1) // 2)


def uniform_float32(generator, shape):
    """Uniform float32 numbers in [0, 1) of `shape`, drawn from a NumPy generator by the rule above."""
    u = np.empty(shape, dtype=np.float32)
    _uniform(_raw_bits(generator, u.size), u.reshape(-1))
    return u


def dropout_mask(shape, p, generator, dtype=np.float32):
    """A mask of `shape` for inverted dropout, drawn from the numpy Generator `generator`."""
    mask = np.empty(shape, dtype=dtype)
    _mask(_raw_bits(generator, mask.size), np.float32(p), mask.dtype.type(1.0 / (1.0 - p)), mask.reshape(-1))
    return mask

"""Dropout masks from a counter-based hash: entry i of the mask depends only on (key, i), so no mask is stored.

Notation: n values (the activations, flattened), p the drop probability, key a 64-bit integer drawn
from a NumPy generator once per dropout call (minicnn.random.draw_key), all arithmetic mod 2^64:

    z       = key + (i + 1) * 0x9E3779B97F4A7C15           the i-th point of a Weyl sequence
    z       = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9          the SplitMix64 finaliser: every output
    z       = (z ^ (z >> 27)) * 0x94D049BB133111EB          bit depends on every input bit
    z       = z ^ (z >> 31)
    r[i]    = z >> 40                                        24 random bits: r / 2^24 is uniform in [0, 1)
    keep[i] = r[i] >= T,  T = ceil(p * 2^24)                 so P(keep) = 1 - T / 2^24 (1 - p, to 6e-8)
    mask[i] = keep[i] ? scale : 0,  scale = 1 / (1 - p)      inverted dropout: E[mask] = 1

Why a hash and not a stream of random numbers: entry i is computed wherever it is needed, by any
thread, in any order, on any device. The forward pass multiplies x by the mask and the backward pass
multiplies the gradient by the same mask, recomputed from the key: nothing of the mask's size is
kept between the two. The CUDA twin (dropout.cu) computes the same bits, so a seeded run drops the
same units on the CPU and on the GPU, and a checkpoint only needs the generator that draws the keys.
"""
import math

import numpy as np
from numba import njit, prange

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
BITS = 24


def threshold(p):
    """T = ceil(p * 2^24): an entry is kept when its 24 random bits are >= T."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
    return np.uint64(math.ceil(p * (1 << BITS)))


# ---- the plain version: the formulas above as NumPy array expressions -------------------------------
def dropout_mask_numpy(shape, p, key, dtype=np.float32):
    """The mask of `shape` for `key`, written with NumPy uint64 arrays (which wrap mod 2^64)."""
    dtype = np.dtype(dtype)
    i = np.arange(1, math.prod(shape) + 1, dtype=np.uint64)
    z = np.uint64(key) + i * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    z = z ^ (z >> np.uint64(31))
    keep = (z >> np.uint64(64 - BITS)) >= threshold(p)
    return np.where(keep, dtype.type(1.0 / (1.0 - p)), dtype.type(0)).reshape(shape)


# ---- the Numba version: one pass, the mask never materialised -------------------------------------
@njit(cache=True, inline="always")
def _kept(key, i, T):
    z = key + (np.uint64(i) + np.uint64(1)) * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(64 - BITS)) >= T


@njit(cache=True, parallel=True)
def _apply(x, key, T, scale, zero, y):
    for i in prange(x.size):
        y[i] = x[i] * (scale if _kept(key, i, T) else zero)


def dropout_apply(x, p, key):
    """x * mask(key), elementwise, in one pass: the forward pass on activations, the backward on gradients."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _apply(x.reshape(-1), np.uint64(key), threshold(p), x.dtype.type(1.0 / (1.0 - p)), x.dtype.type(0),
           y.reshape(-1))
    return y


def dropout_mask(shape, p, key, dtype=np.float32):
    """The mask itself (scale where kept, 0 where dropped): dropout_apply on ones."""
    return dropout_apply(np.ones(shape, dtype=dtype), p, key)

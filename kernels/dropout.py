"""The dropout mask on the CPU: keep each value with probability 1-p, scaled by 1/(1-p) (inverted dropout).

mask[i] = 1/(1-p) if u[i] >= p else 0,  with u[i] uniform in [0, 1) from the given generator.
"""
import numpy as np


def dropout_mask(shape, p, generator, dtype=np.float32):
    """A mask of `shape` for inverted dropout, drawn from the numpy Generator `generator`."""
    u = generator.random(shape, dtype=np.float32)
    scale = np.asarray(1.0 / (1.0 - p), dtype=dtype)
    return (u >= p).astype(dtype) * scale

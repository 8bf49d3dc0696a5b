"""Random affine augmentation: draw N rotation/scale/shift matrices at once, then warp the whole batch in one kernel call."""
import numpy as np

from ..backend import get_array_module, kernels_for

__all__ = ["affine_matrices", "random_affine"]


def _range(value, name, symmetric_positive=True):
    """A float v becomes (-v, v); a pair stays (lo, hi)."""
    if np.isscalar(value):
        value = float(value)
        if symmetric_positive and value < 0:
            raise ValueError(f"{name} must be >= 0 (or a (low, high) pair), got {value}")
        return -value, value
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ValueError(f"{name} range must have low <= high, got ({lo}, {hi})")
    return lo, hi


def _uniform(rng, lo, hi, n):
    """n uniform numbers in [lo, hi) as a NumPy float64 array, whatever the generator's device."""
    u = rng.uniform(lo, hi, size=n)
    return np.asarray(u.get() if hasattr(u, "get") else u, dtype=np.float64)


def affine_matrices(angles_deg, scales, shifts_x, shifts_y, height, width):
    """Inverse 2x3 matrices (N, 2, 3) float32 for the forward map 'rotate by angle and scale about the centre, then shift'.

    Forward:  p_out = R(angle) S (p_in - c) + c + t,  p = (column, row), c = ((W-1)/2, (H-1)/2), t in pixels.
    Inverse:  p_in  = A (p_out - c - t) + c  with  A = R(-angle) / scale, which is what the kernel needs.
    """
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    s = np.asarray(scales, dtype=np.float64)
    tx = np.asarray(shifts_x, dtype=np.float64)
    ty = np.asarray(shifts_y, dtype=np.float64)
    cos, sin = np.cos(a) / s, np.sin(a) / s
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    theta = np.empty((a.shape[0], 2, 3), dtype=np.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos, sin
    theta[:, 1, 0], theta[:, 1, 1] = -sin, cos
    theta[:, 0, 2] = cx - cos * (cx + tx) - sin * (cy + ty)
    theta[:, 1, 2] = cy + sin * (cx + tx) - cos * (cy + ty)
    return theta.astype(np.float32)


def random_affine(x, rng, degrees=10.0, translate=0.1, scale=(0.9, 1.1)):
    """Randomly rotate (degrees), shift (fraction of width/height) and scale every image of a batch.

    x: float32 (N, C, H, W), NumPy or CuPy. rng: a numpy Generator (or an int seed, or a CuPy generator).
    degrees: v -> angle in [-v, v], or a (low, high) pair. translate: f or (fx, fy) -> shift in
    [-fx*W, fx*W] columns and [-fy*H, fy*H] rows. scale: (low, high) or None for no scaling.
    One matrix per image, drawn vectorised; the warp is a single kernel call (bilinear, zero outside).
    """
    xp = get_array_module(x)
    if x.ndim != 4 or x.dtype != xp.float32:
        raise TypeError(f"random_affine expects float32 images (N, C, H, W), got dtype {x.dtype} shape {x.shape}")
    if not hasattr(rng, "uniform"):
        rng = np.random.default_rng(rng)
    n, _, height, width = x.shape
    angles = _uniform(rng, *_range(degrees, "degrees"), n)
    fx, fy = (translate, translate) if np.isscalar(translate) else translate
    if not (0 <= fx <= 1 and 0 <= fy <= 1):
        raise ValueError(f"translate fractions must lie in [0, 1], got {translate}")
    shifts_x = _uniform(rng, -fx * width, fx * width, n)
    shifts_y = _uniform(rng, -fy * height, fy * height, n)
    if scale is None:
        scales = np.ones(n)
    else:
        lo, hi = _range(scale, "scale", symmetric_positive=False)
        if lo <= 0:
            raise ValueError(f"scale factors must be > 0, got {scale}")
        scales = _uniform(rng, lo, hi, n)
    theta = affine_matrices(angles, scales, shifts_x, shifts_y, height, width)
    return kernels_for(x).affine_warp(x, xp.asarray(theta))

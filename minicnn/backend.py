"""One engine, several array backends: pick NumPy or CuPy, and the matching kernels, from the arrays themselves."""
import os

import numpy as np

_cupy = None
_cupy_error = None


def cupy_module():
    """Return the cupy module, or None when CuPy is not installed (the reason is kept for error messages)."""
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy
            _cupy = cupy
        except Exception as exc:  # ImportError, or a CUDA library that fails to load
            _cupy_error = exc
    return _cupy


def gpu_unavailable_reason():
    """None when a GPU can be used, otherwise a sentence saying what is missing and how to fix it."""
    cp = cupy_module()
    if cp is None:
        return (f"CuPy is not installed ({_cupy_error}); install the gpu extra: "
                "pip install -e \".[gpu]\" (or the cupy-cudaXXx wheel matching your CUDA)")
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"CuPy is installed but no usable CUDA device was found ({exc})"
    if count < 1:
        return "CuPy is installed but no CUDA device was found"
    return None


def gpu_available():
    """True when CuPy is installed and a CUDA device answers."""
    return gpu_unavailable_reason() is None


def require_gpu():
    """Raise one clear RuntimeError when the GPU cannot be used."""
    reason = gpu_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"the GPU was asked for but cannot be used: {reason}")
    return cupy_module()


def is_gpu_array(a):
    cp = _cupy
    return cp is not None and isinstance(a, cp.ndarray)


def device_of(a):
    """'gpu' for a CuPy array, 'cpu' for anything else."""
    return "gpu" if is_gpu_array(a) else "cpu"


def get_array_module(*arrays):
    """numpy, or cupy when any of the arrays lives on the GPU."""
    for a in arrays:
        if is_gpu_array(a):
            return _cupy
    return np


_cpu_kernels = None


def use_reference_kernels(flag=True):
    """Run the CPU engine on kernels/reference.py (plain NumPy im2col/col2im) instead of the Numba kernels."""
    global _cpu_kernels
    if flag:
        from minicnn.kernels import reference
        _cpu_kernels = reference
    else:
        from minicnn.kernels import cpu
        _cpu_kernels = cpu


def kernels_for(a):
    """The kernel module (same function names on every backend) for the device of array `a`."""
    if is_gpu_array(a):
        from minicnn.kernels import gpu
        return gpu
    if _cpu_kernels is None:
        use_reference_kernels(os.environ.get("MINICNN_KERNELS", "numba") == "numpy")
    return _cpu_kernels


def to_device(a, device):
    """Copy a raw array to 'cpu' or 'gpu' (no copy when it is already there)."""
    device = normalize_device(device)
    if device == "gpu":
        cp = require_gpu()
        return cp.asarray(a)
    if is_gpu_array(a):
        return a.get()
    return np.asarray(a)


def normalize_device(device):
    name = str(device).lower()
    if name in ("cuda", "gpu") or name.startswith("cuda:"):
        return "gpu"
    if name == "cpu":
        return "cpu"
    raise ValueError(f"unknown device {device!r}: use 'cpu' or 'gpu'")

"""One engine, several array backends: the kernels for an array are picked from the array itself and the configuration.

    kernels_for(x)   NumPy array -> the CPU kernels the configuration names ("numba": minicnn.kernels.cpu,
                     "numpy": minicnn.kernels.numpy_backend); CuPy array -> minicnn.kernels.gpu, its matrix
                     products on the configured route. Every backend has the same function names (the contract).

This module is the engine's only door to `minicnn.kernels`: no other engine module imports a kernel module,
so `import minicnn` loads Numba only when a Numba backend is first used, and CuPy only for GPU arrays.
"""
import importlib

import numpy as np

from . import config

_cupy = None
_cupy_error = None
CPU_MODULES = {"numba": "minicnn.kernels.cpu", "numpy": "minicnn.kernels.numpy_backend"}


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


def kernels_for(a):
    """The kernel module (same function names on every backend) for the device of array `a`, as configured."""
    return kernels_for_device(device_of(a))


def kernels_for_device(device):
    """The kernels that arrays on 'cpu' or 'gpu' run on under the current configuration."""
    cfg = config.current()
    if device == "gpu":
        return importlib.import_module("minicnn.kernels.gpu").with_gemm(cfg.gemm)
    return importlib.import_module(CPU_MODULES[cfg.kernels])


def on_first_compile(callback, device="cpu"):
    """Call callback(info) once, just before the backend of `device` compiles its first kernel in this process
    (nothing is called when every kernel comes from the disk cache). info is a dict with "cache_dir" (where the
    compiled kernels are kept) and "seconds" (about how long compiling the kernels of a training run takes on
    2 cores). Returns False when that backend compiles nothing ahead of use (plain NumPy, the GPU's NVRTC)."""
    kernels = kernels_for_device(device)
    register = getattr(kernels, "on_first_compile", None)
    if register is None:
        return False
    register(callback)
    return True


def set_num_threads(n):
    """Threads for the CPU kernels (a backend without threads of its own, plain NumPy, ignores it); returns the
    number in force, or None. Results do not depend on it: the kernels sum in an order fixed by the shapes."""
    setter = getattr(kernels_for_device("cpu"), "set_num_threads", None)
    return setter(n) if setter is not None else None


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

"""The GPU runtime: CuPy, the .cu files compiled once by NVRTC, launch plans, launches and the input checks.

Each operation has its CUDA source beside the Numba file of the same name (im2col.cu beside
im2col.py, ...). `_function` reads a .cu file ONCE, compiles it with NVRTC through `cupy.RawModule`
(cached in `_MODULES`; CuPy also keeps the binary on disk) and looks its kernels up by name. The source
is handed to CuPy exactly as it is on disk -- nothing is prepended -- and with `NVRTC_OPTIONS`, so
`.ci/compile_cuda.sh` compiles the very same text with nvcc (and with NVRTC itself where the library is
found) on machines without a GPU.

Launch configuration: 1-D grids of `THREADS` threads per block; every kernel runs a grid-stride
loop, so `min(ceil(total / THREADS), MAX_BLOCKS)` blocks cover any size. Scalars are passed as
explicitly typed NumPy scalars (np.int32, np.int64, np.float32, np.float64) so they match the C
parameter types exactly.

Importing this module without CuPy raises one RuntimeError that says how to install the `gpu` extra.
"""
import math
import os

import numpy as np

try:
    import cupy as cp
except Exception as exc:  # ImportError, or a CUDA library that fails to load
    raise RuntimeError(f"the GPU backend needs CuPy, but CuPy is not installed or cannot be loaded ({exc}); install "
                       "the gpu extra: pip install -e \".[gpu]\" (or the cupy-cudaXXx wheel matching your CUDA)") from exc

KERNEL_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # kernels/: the .cu files


# --fmad=false: no fused multiply-add contraction, so the double arithmetic of the optimizer, affine
# and average-pool kernels rounds operation by operation exactly like the Numba (LLVM, no fast-math)
# loops. The kernels are memory-bound; FMA would buy nothing measurable here.
NVRTC_OPTIONS = ("--fmad=false",)

# Every extern "C" entry point, per .cu file, without its type suffix; each exists as NAME_f32 and
# NAME_f64 (affine_warp: _f32 only). .ci/compile_cuda.sh checks these names in the compiled cubins.
KERNELS = {
    "im2col": ["im2col", "col2im"],
    "pool": ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward"],
    "dropout": ["dropout_apply"],
    "affine": ["affine_warp"],
    "optim": ["adam_update", "sgd_update", "accumulate_grads"],
    "gemm": ["gemm", "gemm_sum_slices", "sum_rows"],
    "relu": ["relu_forward", "relu_backward"],
    "cross_entropy": ["cross_entropy_forward", "cross_entropy_backward"],
    "batchnorm": ["batch_norm_forward_sums", "batch_norm_forward", "batch_norm_backward_sums", "batch_norm_backward"],
}
FLOAT32_ONLY = ["affine_warp"]

THREADS = 256
MAX_BLOCKS = 65536

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_MODULES = {}    # .cu name -> cupy.RawModule, built once per process
_FUNCTIONS = {}  # (.cu name, kernel name) -> cupy.RawKernel


def cuda_source(name):
    """The text of kernels/NAME.cu, exactly as CuPy compiles it."""
    path = os.path.join(KERNEL_DIR, name + ".cu")
    with open(path, encoding="utf-8") as f:
        return f.read()


def _function(module, kernel):
    """The compiled kernel `kernel` of kernels/`module`.cu (the module is compiled on first use only)."""
    key = (module, kernel)
    fn = _FUNCTIONS.get(key)
    if fn is None:
        mod = _MODULES.get(module)
        if mod is None:
            mod = cp.RawModule(code=cuda_source(module), options=NVRTC_OPTIONS)
            _MODULES[module] = mod
        fn = mod.get_function(kernel)
        _FUNCTIONS[key] = fn
    return fn


def compile_all():
    """Compile every .cu file and look up every entry point now (warm-up); returns the entry names."""
    names = []
    for module, kernels in KERNELS.items():
        for base in kernels:
            for suffix in (("f32",) if base in FLOAT32_ONLY else ("f32", "f64")):
                _function(module, f"{base}_{suffix}")
                names.append(f"{base}_{suffix}")
    return names


def _launch(fn, total, args):
    """Run `fn` over `total` work items (one thread each, grid-stride) on the current stream."""
    if total <= 0:
        return
    blocks = min((total + THREADS - 1) // THREADS, MAX_BLOCKS)
    fn((blocks,), (THREADS,), args)


# Launch plans. An eager training step calls the same wrappers with the same few shapes again and again, and
# their Python work -- checking the integer settings, computing output shapes and grids, making the typed
# scalars -- took more host time than the launches themselves. So that work is done once per combination of
# (shapes, dtypes, settings), the `key`, and its result kept here; a call then checks its arrays, looks the
# plan up, allocates its outputs and launches. The launch settings THREADS and MAX_BLOCKS are part of every key.
_PLANS = {}


def _plan(key, make):
    """make() for this key the first time, the kept result afterwards."""
    key = key + (THREADS, MAX_BLOCKS)
    plan = _PLANS.get(key)
    if plan is None:
        plan = make()
        if len(_PLANS) > 4096:  # many distinct shapes: start again rather than grow without bound
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _grid_stride(module, kernel, total, scalars):
    """The plan of a grid-stride launch over `total` items: (kernel, grid, trailing scalar arguments), or None
    when there is nothing to do. Run it with _run."""
    if total <= 0:
        return None
    return _function(module, kernel), (min((total + THREADS - 1) // THREADS, MAX_BLOCKS),), scalars


def _run(launch, arrays, extra=()):
    """Launch a planned grid-stride kernel on `arrays`, then the plan's scalars, then `extra` (per-call values)."""
    if launch is not None:
        fn, grid, scalars = launch
        fn(grid, (THREADS,), arrays + scalars + extra)


# The kernels split flat indices with 32-bit arithmetic (a 64-bit division is several times slower on a GPU),
# so every array they index stays below this many values (2^31 less room for a grid-stride step).
INDEX_LIMIT = 2 ** 31 - 2 ** 24


def _check_index_range(op, **sizes):
    for name, size in sizes.items():
        if size >= INDEX_LIMIT:
            raise ValueError(f"{op} (GPU): {name} would hold {size} values, more than the kernels' 32-bit index "
                             f"arithmetic allows ({INDEX_LIMIT}); use a smaller batch")


def _ints(*values):
    return tuple(np.int32(v) for v in values)


# ---- input checks: every message names the value ---------------------------------------------------
def _float_array(a, name, op, ndim):
    """a as a C-contiguous float32/float64 CuPy array of `ndim` dimensions (copied only when not contiguous)."""
    if not isinstance(a, cp.ndarray):
        raise TypeError(f"{op} (GPU): {name} must be a CuPy array, got {type(a).__module__}.{type(a).__name__}; "
                        "move the data with Tensor.to('gpu') or cupy.asarray first")
    if a.dtype not in _SUFFIX:
        raise TypeError(f"{op} (GPU): {name} has dtype {a.dtype}; the CUDA kernels take float32 or float64")
    if a.ndim != ndim:
        raise ValueError(f"{op} (GPU): {name} must have {ndim} dimensions, got shape {tuple(a.shape)}")
    return cp.ascontiguousarray(a)


def _check_ints(op, positive=(), non_negative=()):
    """Window sizes, strides and dilations must be positive ints, paddings non-negative ints."""
    for names, low in ((positive, 1), (non_negative, 0)):
        for name, value in names:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
                what = "a positive int" if low else "a non-negative int"
                raise ValueError(f"{op} (GPU): {name} must be {what}, got {value!r}")


def _flat_buffers(op, **arrays):
    """In-place optimizer buffers: 1-D, C-contiguous, one float dtype, one length (they cannot be copied)."""
    dtype = size = None
    for name, a in arrays.items():
        if not isinstance(a, cp.ndarray):
            raise TypeError(f"{op} (GPU): {name} must be a CuPy array, got {type(a).__module__}.{type(a).__name__}")
        if a.dtype not in _SUFFIX:
            raise TypeError(f"{op} (GPU): {name} has dtype {a.dtype}; the CUDA kernels take float32 or float64")
        if a.ndim != 1 or not a.flags.c_contiguous:
            raise ValueError(f"{op} (GPU): {name} must be a 1-D C-contiguous buffer (it is updated in place), "
                             f"got shape {tuple(a.shape)} with strides {a.strides}")
        if dtype is None:
            dtype, size = a.dtype, a.size
        elif a.dtype != dtype or a.size != size:
            first = next(iter(arrays))
            raise ValueError(f"{op} (GPU): {name} ({a.dtype}, {a.size} values) does not match "
                             f"{first} ({dtype}, {size} values)")
    return _SUFFIX[dtype], size


def _output_size(op, H, W, OH, OW, detail):
    if OH < 0 or OW < 0:
        raise ValueError(f"{op} (GPU): the window does not fit the input: H={H}, W={W}, {detail} "
                         f"give OH={OH}, OW={OW}")

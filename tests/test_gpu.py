"""The GPU backend: CUDA kernels (kernels/*.cu) and their CuPy wrappers (kernels/gpu.py) against the CPU backend.

Three groups of tests:

1. Without a GPU (run everywhere, no `gpu` marker, so `-m "not gpu"` keeps them):
   - asking for the GPU without CuPy fails with one RuntimeError that says CuPy is missing and names
     the `gpu` extra (skipped on a machine where the GPU works);
   - kernels/gpu.py defines every function of kernels/cpu.py with the same signature;
   - HOST EMULATION: each .cu file is compiled as ordinary C++ by the host compiler, with a six-line
     shim for __global__, blockIdx, threadIdx, ..., and driven through the real gpu.py wrappers (their
     checks, shapes, launch sizes and scalar types) with NumPy arrays in place of CuPy arrays. Every
     (block, thread) of the launch runs one after another, with tiny blocks and grids so the
     grid-stride loops wrap many times. Each kernel must equal its Numba twin BIT FOR BIT (same
     operation order, no fused multiply-add), and every scalar argument must have exactly the C type
     of the kernel parameter (CuPy passes scalars by value, so a wrong width would corrupt them on
     the GPU). Skipped when no C++ compiler is found.

2. On a GPU (marker `gpu`; skipped with the reason from minicnn.backend.gpu_unavailable_reason()
   when CuPy or a CUDA device is missing): every kernel, every op forward and backward, every layer,
   the optimizers and a few eip4 training steps give the same numbers on both devices, within the
   tolerances below; col2im is bit-for-bit repeatable; tensors and modules move between devices;
   a mixed-device op raises an error naming both devices.
"""
import copy
import ctypes
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import threading
import types

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import minicnn
import minicnn.backend as backend
import minicnn.functional as F
from minicnn import Tensor, nn
from minicnn.kernels import cpu
from minicnn.kernels.gemm import matmul_reference
from helpers import unfold_cases

KERNELS_DIR = os.path.dirname(cpu.__file__)
GPU_REASON = backend.gpu_unavailable_reason()
cp = backend.cupy_module() if GPU_REASON is None else None

gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"no GPU: {GPU_REASON}")

# ---- tolerances (float32: eps = 1.2e-7) ----------------------------------------------------------------
# Our own kernels (im2col, col2im, pooling, affine, dropout, optimizer updates) do the same operations in
# the same order on both devices, with --fmad=false: equal up to the last bit in practice; a few ulps are
# allowed so that a GPU math library rounding differently could never fail the test.
KERNEL_RTOL_F32, KERNEL_ATOL_F32 = 1e-6, 1e-7
# Ops with GEMMs and reductions (conv2d, linear, batch norm, losses): cuBLAS and CuPy's reductions sum in
# another order than OpenBLAS and NumPy. Inputs here are ~N(0, 1) with at most a few hundred terms per
# sum, so the difference is ~ sqrt(terms) * eps * |terms| ~ 1e-5 relative; 1e-4 / 1e-5 leaves a margin,
# while a wrong index or factor is off by O(1).
RTOL_F32, ATOL_F32 = 1e-4, 1e-5
# float64: the same reordering at eps = 2.2e-16.
RTOL_F64, ATOL_F64 = 1e-10, 1e-12
# A few training steps: the first loss is a forward pass from equal weights (RTOL_F32). Later losses are
# chaotic in the last bits: a max-pool window whose two best values differ by less than the rounding
# noise, or an activation that close to the ReLU kink, sends a whole gradient term elsewhere, and Adam
# turns a tiny gradient of either sign into an lr-sized step. Measured on the CPU by perturbing the
# input images by 1e-6 relative (more than float32 reordering does): eip4 with Adam(lr=1e-3, eps=1e-3),
# 8 trials, losses of steps 2-4 within 1e-3 relative, batch-norm running statistics within 1e-4
# absolute; the small models of the optimizer test within 1e-3 relative. TRAIN_RTOL leaves a margin;
# a real bug (wrong gradient, wrong update) moves the loss by far more.
TRAIN_RTOL = 5e-3
TRAIN_BUFFER_ATOL = 1e-3

GPU_SETTINGS = settings(max_examples=15, deadline=None)
HOST_SETTINGS = settings(max_examples=30, deadline=None)


def contract_names():
    """The functions kernels/cpu.py exports: the contract every backend implements."""
    return sorted(n for n, f in vars(cpu).items() if not n.startswith("_") and inspect.isfunction(f))


# =========================================================================================================
# 1. Without a GPU
# =========================================================================================================
@pytest.mark.skipif(GPU_REASON is None, reason="a GPU works on this machine: the no-GPU error cannot be seen here")
def test_asking_for_the_gpu_without_one_raises_a_clear_error():
    for ask in (lambda: Tensor([1.0, 2.0]).to("gpu"), lambda: nn.Linear(2, 3).to("gpu"),
                lambda: importlib.import_module("minicnn.kernels.gpu")):
        with pytest.raises(RuntimeError) as info:
            ask()
        message = str(info.value)
        if backend.cupy_module() is None:
            assert "CuPy is not installed" in message, message
            assert ".[gpu]" in message and "gpu extra" in message, message
        else:
            assert "CUDA device" in message, message


def load_gpu_module(fake_cupy, name="minicnn.kernels._gpu_with_fake_cupy"):
    """Execute kernels/gpu.py with `fake_cupy` standing in for CuPy (minicnn.backend.require_gpu patched)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(KERNELS_DIR, "gpu.py"))
    module = importlib.util.module_from_spec(spec)
    real = backend.require_gpu
    backend.require_gpu = lambda: fake_cupy
    try:
        spec.loader.exec_module(module)
    finally:
        backend.require_gpu = real
    return module


def host_cupy(raw_module):
    """NumPy dressed as the part of CuPy that gpu.py uses, with `raw_module` in place of cupy.RawModule."""
    return types.SimpleNamespace(ndarray=np.ndarray, ascontiguousarray=np.ascontiguousarray, empty=np.empty,
                                 empty_like=np.empty_like, asarray=np.asarray, ones=np.ones, zeros=np.zeros,
                                 broadcast_to=np.broadcast_to,
                                 RawModule=raw_module, cuda=types.SimpleNamespace(get_current_stream=lambda: _NEVER_CAPTURING))


_NEVER_CAPTURING = types.SimpleNamespace(ptr=0, is_capturing=lambda: False)  # the host has no CUDA graphs


# The wide-grid column kernels are needed only by a backend that declares wide_columns = True (the CPU's).
WIDE_GRID = {"im2col_wide", "col2im_wide"}
# The direct convolution likewise, only by a backend that declares direct_conv = True (the CPU's).
DIRECT = {"conv2d_direct", "conv2d_direct_fits", "conv2d_direct_grads", "flipped_weights", "conv2d_image_grad_fits",
          "conv2d_weight_grad_fits", "conv2d_depthwise", "conv2d_depthwise_grads"}


def test_gpu_backend_has_the_cpu_contract():
    """Same names, same parameters, same defaults: the engine calls kernels_for(x).NAME(...) on either backend."""
    host = load_gpu_module(host_cupy(raw_module=None))
    assert isinstance(host.wide_columns, bool) and cpu.wide_columns is True
    assert isinstance(host.keep_columns, bool) and cpu.keep_columns is False
    assert isinstance(host.weight_grad_columns_first, bool) and cpu.weight_grad_columns_first is True
    assert isinstance(host.direct_conv, bool) and cpu.direct_conv is True
    for name in contract_names():
        if (name in WIDE_GRID and not host.wide_columns) or (name in DIRECT and not host.direct_conv):
            continue
        assert hasattr(host, name), f"kernels/gpu.py lacks {name}"
        assert inspect.signature(getattr(host, name)) == inspect.signature(getattr(cpu, name)), name
    for module in host.KERNELS:  # every .cu file gpu.py names is there, and it is self-contained
        source = host.cuda_source(module)
        assert not re.search(r"^\s*#\s*include", source, re.M), f"kernels/{module}.cu must not #include anything (NVRTC == nvcc text)"
        assert source.isascii(), f"kernels/{module}.cu must be plain ASCII"


# ---- host emulation of the CUDA kernels ---------------------------------------------------------------
HOST_SHIM = r"""
#include <cmath>
#include <cstring>
#include <condition_variable>
#include <mutex>
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads() minicnn_syncthreads()
struct minicnn_dim3 { unsigned int x, y, z; };
static thread_local minicnn_dim3 blockIdx, threadIdx, blockDim, gridDim;
/* __syncthreads for kernels whose blocks run as real host threads (one block at a time, so __shared__
   arrays are plain statics): a barrier that opens when all blockDim.x threads have arrived. */
static std::mutex minicnn_mutex;
static std::condition_variable minicnn_opened;
static unsigned int minicnn_arrived = 0, minicnn_round = 0;
static void minicnn_syncthreads()
{
    std::unique_lock<std::mutex> lock(minicnn_mutex);
    const unsigned int round = minicnn_round;
    if (++minicnn_arrived == blockDim.x) {
        minicnn_arrived = 0;
        ++minicnn_round;
        minicnn_opened.notify_all();
    } else {
        minicnn_opened.wait(lock, [round] { return round != minicnn_round; });
    }
}
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, sizeof f); return f; }
static inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, sizeof d); return d; }
extern "C" void minicnn_set_thread(unsigned int block, unsigned int thread, unsigned int blocks, unsigned int threads)
{
    blockIdx.x = block; threadIdx.x = thread; gridDim.x = blocks; blockDim.x = threads;
    blockIdx.y = blockIdx.z = threadIdx.y = threadIdx.z = 0;
    gridDim.y = gridDim.z = blockDim.y = blockDim.z = 1;
}
#include "kernel.cu"
"""
CXX = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++") or shutil.which("clang++")
needs_cxx = pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++, c++ or clang++) to emulate the CUDA kernels")

_C_SCALARS = {"int": np.int32, "long long": np.int64, "unsigned long long": np.uint64, "float": np.float32,
              "double": np.float64}
_C_POINTEES = {"float": np.float32, "double": np.float64, "int": np.int32, "long long": np.int64,
               "unsigned long long": np.uint64}
_CTYPES = {np.int32: ctypes.c_int32, np.int64: ctypes.c_int64, np.uint64: ctypes.c_uint64, np.float32: ctypes.c_float,
           np.float64: ctypes.c_double}


def _parse_parameter(text):
    """'const float* x' -> ('ptr', float32); 'long long n' -> ('val', int64)."""
    text = " ".join(text.replace("*", " * ").replace("__restrict__", " ").split())
    words = [w for w in text.split() if w != "const"]
    if "*" in words:
        return "ptr", _C_POINTEES[" ".join(words[:words.index("*")])]
    return "val", _C_SCALARS[" ".join(words[:-1])]


class HostModule:
    """cupy.RawModule for the host: compiles the .cu text with the C++ compiler and runs the kernels block by block.

    Within a block the threads run one after another, except in a source that uses __syncthreads: there
    each thread of the block is a real host thread, and __syncthreads a barrier (see HOST_SHIM)."""

    _cache = {}

    def __init__(self, code, options=()):
        assert "--fmad=false" in options, "gpu.py must compile without FMA contraction, as the host does"
        key = hashlib.sha256(code.encode()).hexdigest()[:16]
        if key not in HostModule._cache:
            HostModule._cache[key] = self._build(code, key)
        self.lib, self.signatures = HostModule._cache[key]
        self.cooperative = "__syncthreads" in code

    @staticmethod
    def _build(code, key):
        folder = os.path.join(HostModule.build_root, key)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "kernel.cu"), "w") as f:
            f.write(code)
        with open(os.path.join(folder, "shim.cpp"), "w") as f:
            f.write(HOST_SHIM)
        expanded = subprocess.run([CXX, "-E", "-P", "-std=c++11", "shim.cpp"], cwd=folder, check=True,
                                  capture_output=True, text=True).stdout
        signatures = {}
        for name, params in re.findall(r'extern\s+"C"\s+void\s+(\w+)\s*\(([^)]*)\)', expanded):
            if name != "minicnn_set_thread" and not name.startswith("__"):  # not the C++ library's own
                signatures[name] = [_parse_parameter(p) for p in params.split(",") if p.strip()]
        subprocess.run([CXX, "-std=c++11", "-O1", "-ffp-contract=off", "-fPIC", "-shared", "-pthread", "-o", "kernel.so",
                        "shim.cpp"], cwd=folder, check=True, capture_output=True, text=True)
        return ctypes.CDLL(os.path.join(folder, "kernel.so")), signatures

    def get_function(self, name):
        assert name in self.signatures, f"no extern \"C\" kernel {name} in this .cu file"
        return HostKernel(self.lib, name, self.signatures[name], self.cooperative)


class HostKernel:
    launches = []  # (kernel name, grid, block) of every launch, for the tests to look at
    STRIDED = {"gemm_f32", "gemm_f64"}  # kernels given strides with their arrays: views need not be contiguous

    def __init__(self, lib, name, signature, cooperative=False):
        self.lib, self.name, self.signature, self.cooperative = lib, name, signature, cooperative

    def __call__(self, grid, block, args):
        assert len(args) == len(self.signature), f"{self.name}: {len(args)} arguments for {len(self.signature)} parameters"
        c_args = []
        for i, (arg, (kind, ctype)) in enumerate(zip(args, self.signature)):
            if kind == "ptr":
                assert isinstance(arg, np.ndarray) and arg.dtype == ctype and (
                    arg.flags.c_contiguous or self.name in HostKernel.STRIDED), \
                    f"{self.name}: argument {i} must be a contiguous {np.dtype(ctype)} array, got {type(arg)} {arg.dtype}"
                c_args.append(ctypes.c_void_p(arg.ctypes.data))
            else:
                assert type(arg) is ctype, (f"{self.name}: argument {i} is {type(arg).__name__}, but the kernel "
                                            f"parameter is {np.dtype(ctype)}: pass np.{np.dtype(ctype)}(...)")
                c_args.append(_CTYPES[ctype](arg.item()))
        (blocks,), (threads,) = grid, block
        HostKernel.launches.append((self.name, blocks, threads))
        kernel = getattr(self.lib, self.name)

        def run_thread(b, t):
            self.lib.minicnn_set_thread(b, t, blocks, threads)
            kernel(*c_args)
        for b in range(blocks):
            if self.cooperative:  # ctypes lets go of the GIL during the call, so the barrier can fill up
                workers = [threading.Thread(target=run_thread, args=(b, t)) for t in range(threads)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
            else:
                for t in range(threads):
                    run_thread(b, t)


@pytest.fixture(scope="module")
def host_gpu(tmp_path_factory):
    """kernels/gpu.py running the .cu kernels on the host, with 3-thread blocks and at most 2 blocks per launch."""
    HostModule.build_root = str(tmp_path_factory.mktemp("cuda_on_host"))
    module = load_gpu_module(host_cupy(HostModule), name="minicnn.kernels._gpu_on_host")
    module.THREADS, module.MAX_BLOCKS = 3, 2  # so every grid-stride loop wraps around many times
    return module


@st.composite
def pool_cases(draw):
    """(N, C, H, W, KH, KW, SH, SW, PH, PW, seed): padding at most half the window, window inside the padded input."""
    KH, KW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    PH, PW = draw(st.integers(0, KH // 2)), draw(st.integers(0, KW // 2))
    H, W = draw(st.integers(max(1, KH - 2 * PH), 7)), draw(st.integers(max(1, KW - 2 * PW), 7))
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    SH, SW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return N, C, H, W, KH, KW, SH, SW, PH, PW, draw(st.integers(0, 2 ** 31 - 1))


@needs_cxx
@HOST_SETTINGS
@given(unfold_cases(max_batch=2, max_size=7, max_kernel=3, max_padding=2, max_dilation=2),
       st.sampled_from([np.float32, np.float64]))
def test_host_emulated_im2col_and_col2im_equal_numba_bit_for_bit(host_gpu, case, dtype):
    N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    col = host_gpu.im2col(x, KH, KW, SH, SW, PH, PW, DH, DW)
    assert col.dtype == dtype
    np.testing.assert_array_equal(col, cpu.im2col(x, KH, KW, SH, SW, PH, PW, DH, DW))
    gcol = rng.standard_normal(col.shape).astype(dtype)
    dx = host_gpu.col2im(gcol, H, W, SH, SW, PH, PW, DH, DW)
    assert dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_array_equal(dx, cpu.col2im(gcol, H, W, SH, SW, PH, PW, DH, DW))


def pool_input(rng, shape, dtype, values):
    """normal: N(0, 1). ties: small integers, many equal values (the first maximum in row-major order wins).
    nans: small integers with NaN (several payloads and both signs), +inf and -inf mixed in, often several
    NaNs to a window (a NaN anywhere wins, the last one in row-major order)."""
    if values == "normal":
        return rng.standard_normal(shape).astype(dtype)
    x = rng.integers(-2, 3, shape).astype(dtype)
    if values == "nans":
        bits = x.view(np.uint32 if dtype == np.float32 else np.uint64)
        nan = [0x7FC00000, 0xFFC00000, 0x7FC00123] if dtype == np.float32 else \
            [0x7FF8000000000000, 0xFFF8000000000000, 0x7FF8000000000123]
        pick = rng.random(shape)
        bits[pick < 0.3] = rng.choice(np.array(nan, bits.dtype), size=int((pick < 0.3).sum()))
        x[(pick >= 0.3) & (pick < 0.4)] = np.inf
        x[(pick >= 0.4) & (pick < 0.5)] = -np.inf
    return x


def same_bits(a, b):
    """Equal arrays bit for bit: a NaN must be the same NaN (sign and payload), -0.0 is not 0.0."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@needs_cxx
@HOST_SETTINGS
@given(pool_cases(), st.sampled_from([np.float32, np.float64]), st.sampled_from(["normal", "ties", "nans"]))
def test_host_emulated_pooling_equals_numba_bit_for_bit(host_gpu, case, dtype, values):
    N, C, H, W, KH, KW, SH, SW, PH, PW, seed = case
    rng = np.random.default_rng(seed)
    x = pool_input(rng, (N, C, H, W), dtype, values)
    y, argmax = host_gpu.max_pool2d_forward(x, KH, KW, SH, SW, PH, PW)
    y_cpu, argmax_cpu = cpu.max_pool2d_forward(x, KH, KW, SH, SW, PH, PW)
    assert same_bits(y, y_cpu), (y, y_cpu)
    np.testing.assert_array_equal(argmax, argmax_cpu)
    assert argmax.dtype == np.int32
    gy = rng.standard_normal(y.shape).astype(dtype)
    window = (KH, KW, SH, SW, PH, PW)
    gx_cpu = cpu.max_pool2d_backward(gy, argmax_cpu, H, W, *window)
    np.testing.assert_array_equal(host_gpu.max_pool2d_backward(gy, argmax, H, W, *window), gx_cpu)  # gather
    np.testing.assert_array_equal(host_gpu.avg_pool2d_forward(x, KH, KW, SH, SW, PH, PW),
                                  cpu.avg_pool2d_forward(x, KH, KW, SH, SW, PH, PW))
    np.testing.assert_array_equal(host_gpu.avg_pool2d_backward(gy, H, W, KH, KW, SH, SW, PH, PW),
                                  cpu.avg_pool2d_backward(gy, H, W, KH, KW, SH, SW, PH, PW))


@needs_cxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window", [(2, 2, 2, 2, 0, 0), (3, 3, 1, 1, 1, 1), (3, 2, 2, 1, 1, 1)],
                         ids=["2x2 stride 2 (Numba's 2x2 path)", "3x3 stride 1 pad 1", "3x2 stride 2x1 pad 1"])
def test_host_emulated_max_pool_propagates_nan_like_numba(host_gpu, dtype, window):
    """One NaN at each position of the planes (so at every position of a window, first or not), then two and
    three NaNs in a plane, NaN beside +inf, a plane of -inf: the .cu kernel and the Numba kernel agree on the
    value (the same NaN, bit for bit), on argmax (the last NaN of the window) and on the gathered gradient."""
    H, W = 6, 5
    base = np.arange(H * W, dtype=dtype).reshape(H, W) - 7
    planes = []
    for k in range(H * W):
        plane = base.copy()
        plane.flat[k] = np.nan
        planes.append(plane)
    for ks in [(0, 1), (1, 5), (0, 6), (6, 12), (2, 3, 8), (7, 8, 12, 13)]:
        plane = base.copy()
        plane.flat[list(ks)] = np.nan
        plane.flat[ks[0] + 2] = np.inf
        planes.append(plane)
    planes.append(np.full((H, W), -np.inf, dtype))
    x = np.stack(planes)[:, None]
    y, argmax = host_gpu.max_pool2d_forward(x, *window)
    y_cpu, argmax_cpu = cpu.max_pool2d_forward(x, *window)
    assert same_bits(y, y_cpu), (y, y_cpu)
    np.testing.assert_array_equal(argmax, argmax_cpu)
    KH, KW, SH, SW, PH, PW = window   # the rule itself: the window's last NaN, else its first maximum
    for p, oh, ow in np.ndindex(len(planes), *y.shape[2:]):
        cells = [(ih, iw) for ih in range(oh * SH - PH, oh * SH - PH + KH)
                 for iw in range(ow * SW - PW, ow * SW - PW + KW) if 0 <= ih < H and 0 <= iw < W]
        nans = [cell for cell in cells if np.isnan(planes[p][cell])]
        ih, iw = nans[-1] if nans else max(cells, key=lambda cell: planes[p][cell])  # max: the first maximum
        assert argmax[p, 0, oh, ow] == ih * W + iw and same_bits(y[p, 0, oh, ow], planes[p][ih, iw]), (p, oh, ow)
    gy = np.random.default_rng(0).standard_normal(y.shape).astype(dtype)
    np.testing.assert_array_equal(host_gpu.max_pool2d_backward(gy, argmax, H, W, *window),
                                  cpu.max_pool2d_backward(gy, argmax_cpu, H, W, *window))


@needs_cxx
@HOST_SETTINGS
@given(st.integers(1, 3), st.integers(1, 2), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2 ** 31 - 1))
def test_host_emulated_affine_warp_equals_numba_bit_for_bit(host_gpu, N, C, H, W, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    theta = (np.tile(np.eye(2, 3), (N, 1, 1)) + rng.normal(0, 0.3, (N, 2, 3)) * [1, 1, 3]).astype(np.float32)
    np.testing.assert_array_equal(host_gpu.affine_warp(x, theta), cpu.affine_warp(x, theta))


@needs_cxx
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_host_emulated_dropout_equals_the_cpu_mask_for_the_same_key(host_gpu, p, dtype):
    """Same hash on both devices: keys above 2^63 check that the key travels as an unsigned 64-bit value."""
    x = np.random.default_rng(0).standard_normal((3, 5, 7)).astype(dtype)
    for key in (0, 99, 2**63 + 5, 2**64 - 1):
        y = host_gpu.dropout_apply(x, p, key)
        assert y.dtype == x.dtype and y.shape == x.shape
        np.testing.assert_array_equal(y, cpu.dropout_apply(x, p, key))
        np.testing.assert_array_equal(host_gpu.dropout_mask(x.shape, p, key, dtype),
                                      cpu.dropout_mask(x.shape, p, key, dtype))


@needs_cxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_host_emulated_kernels_read_the_dropout_key_from_its_slot_while_captured(host_gpu, monkeypatch, dtype):
    """While a CUDA graph is recorded (minicnn/cuda_graph.py), dropout.cu and batchnorm.cu get key 0 and a pointer
    to the key's device slot, and use key + *key_offset: with a slot holding another key, the masks are that
    key's. Without slots, the key passed by value is used and reported frozen."""
    slot_key = 2 ** 63 + 12345

    class Slots:
        asked = []

        def slot(self, key):
            self.asked.append(key)
            return np.array([slot_key], np.uint64)
    monkeypatch.setattr(host_gpu, "_capturing", lambda: True)
    monkeypatch.setattr(host_gpu, "key_slots", Slots())
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    gamma, beta = rng.uniform(0.5, 1.5, 3).astype(dtype), rng.standard_normal(3).astype(dtype)
    np.testing.assert_array_equal(host_gpu.dropout_apply(x, 0.3, 7), cpu.dropout_apply(x, 0.3, slot_key))
    got = host_gpu.batch_norm_forward(x, gamma, beta, 1e-3, relu=True, dropout_p=0.3, dropout_key=7)
    want = cpu.batch_norm_forward(x, gamma, beta, 1e-3, relu=True, dropout_p=0.3, dropout_key=slot_key)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    mean, invstd = want[1], want[3]
    got_back = host_gpu.batch_norm_backward(gy, x, mean, invstd, gamma, relu=True, dropout_p=0.3, dropout_key=7)
    want_back = cpu.batch_norm_backward(gy, x, mean, invstd, gamma, relu=True, dropout_p=0.3, dropout_key=slot_key)
    for a, b in zip(got_back, want_back):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert Slots.asked == [7, 7, 7]
    monkeypatch.setattr(host_gpu, "key_slots", None)
    host_gpu.frozen_scalars.clear()
    np.testing.assert_array_equal(host_gpu.dropout_apply(x, 0.3, 7), cpu.dropout_apply(x, 0.3, 7))
    assert host_gpu.frozen_scalars == ["dropout key"]
    host_gpu.frozen_scalars.clear()


@needs_cxx
@HOST_SETTINGS
@given(st.integers(1, 50), st.booleans(), st.sampled_from([0.0, 0.01]), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2 ** 31 - 1))
def test_host_emulated_adam_equals_numba_bit_for_bit(host_gpu, n, decoupled, wd, dtype, seed):
    rng = np.random.default_rng(seed)
    host = [rng.standard_normal(n).astype(dtype), None, np.zeros(n, dtype), np.zeros(n, dtype)]
    ref = [a.copy() if a is not None else None for a in host]
    for step in range(1, 4):
        g = (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 1, n)).astype(dtype)  # tiny and large gradients
        host[1], ref[1] = g, g.copy()
        host_gpu.adam_update(*host, 0.003, 0.9, 0.999, 1e-7, step, wd, decoupled)
        cpu.adam_update(*ref, 0.003, 0.9, 0.999, 1e-7, step, wd, decoupled)
        for a, b in zip(host, ref):
            np.testing.assert_array_equal(a, b)


@needs_cxx
@HOST_SETTINGS
@given(st.integers(1, 50), st.sampled_from([(0.0, False), (0.9, False), (0.9, True)]), st.sampled_from([0.0, 1e-4]),
       st.sampled_from([np.float32, np.float64]), st.integers(0, 2 ** 31 - 1))
def test_host_emulated_sgd_equals_numba_bit_for_bit(host_gpu, n, momentum, wd, dtype, seed):
    mu, nesterov = momentum
    rng = np.random.default_rng(seed)
    p, buf = rng.standard_normal(n).astype(dtype), np.zeros(n, dtype)
    p_ref, buf_ref = p.copy(), buf.copy()
    for _ in range(3):
        g = rng.standard_normal(n).astype(dtype)
        host_gpu.sgd_update(p, g, buf, 0.01, mu, wd, nesterov)
        cpu.sgd_update(p_ref, g.copy(), buf_ref, 0.01, mu, wd, nesterov)
        np.testing.assert_array_equal(p, p_ref)
        np.testing.assert_array_equal(buf, buf_ref)


@needs_cxx
@settings(max_examples=12, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.sampled_from([3, 5, 8]),
       st.sampled_from([np.float32, np.float64]), st.floats(-100, 100), st.booleans(), st.sampled_from([0.0, 0.4]),
       st.integers(0, 2 ** 31 - 1))
def test_host_emulated_batch_norm_matches_numba(host_gpu, N, C, H, W, threads, dtype, offset, relu, p, seed):
    """batchnorm.cu (block sums in shared memory, then one thread per value) against kernels/batchnorm.py;
    an offset far from zero checks the shifted sums. Block sizes 3, 5 and 8 give the tree odd and even rounds.
    With relu, both normalise relu(x) (a fused ReLU) and mask the input gradient; with p, a fused dropout."""
    assume(N * H * W >= 2)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, C, H, W)) * rng.uniform(0.1, 3) + offset).astype(dtype)
    gamma, beta = rng.uniform(0.5, 1.5, C).astype(dtype), rng.standard_normal(C).astype(dtype)
    gy = rng.standard_normal((N, C, H, W)).astype(dtype)
    old = host_gpu.THREADS
    host_gpu.THREADS = threads
    running = [rng.uniform(0.5, 2, C).astype(dtype) for _ in range(2)]  # running mean and variance
    running_ref = [a.copy() for a in running]
    try:
        fused = dict(relu=relu, dropout_p=p, dropout_key=seed)
        got = host_gpu.batch_norm_forward(x, gamma, beta, 1e-3, *running, 0.3, **fused)
        y, mean, var, invstd = cpu.batch_norm_forward(x, gamma, beta, 1e-3, *running_ref, 0.3, **fused)
        got_back = host_gpu.batch_norm_backward(gy, x, mean, invstd, gamma, **fused)
    finally:
        host_gpu.THREADS = old
    want_back = cpu.batch_norm_backward(gy, x, mean, invstd, gamma, **fused)
    rtol, atol = (2e-5, 2e-5) if dtype == np.float32 else (1e-10, 1e-10)
    for a, b in zip(got + got_back + tuple(running), (y, mean, var, invstd) + want_back + tuple(running_ref)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * max(1.0, float(np.abs(b).max())))


@needs_cxx
def test_host_emulated_batch_norm_blocks_wait_for_each_other(host_gpu):
    """With 64 real threads per block the sums are right only if __syncthreads holds every thread of the tree."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 2, 9, 9)).astype(np.float64)
    old = host_gpu.THREADS
    host_gpu.THREADS = 64
    try:
        y, mean, var, invstd = host_gpu.batch_norm_forward(x, np.ones(2), np.zeros(2), 1e-5)
    finally:
        host_gpu.THREADS = old
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(var, x.var(axis=(0, 2, 3)), rtol=1e-12)


@needs_cxx
@HOST_SETTINGS
@given(st.integers(1, 40), st.sampled_from([np.float32, np.float64]), st.integers(0, 2 ** 31 - 1))
def test_host_emulated_relu_equals_numba_bit_for_bit(host_gpu, n, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(dtype)
    x[rng.random(n) < 0.2] = 0.0
    x[rng.random(n) < 0.1] = np.nan
    gy = rng.standard_normal(n).astype(dtype)
    gy[rng.random(n) < 0.1] = np.inf
    y = host_gpu.relu_forward(x)
    np.testing.assert_array_equal(y, cpu.relu_forward(x))
    np.testing.assert_array_equal(host_gpu.relu_backward(gy, y), cpu.relu_backward(gy, y))


@needs_cxx
@HOST_SETTINGS
@given(st.integers(1, 9), st.integers(1, 11), st.sampled_from([np.float32, np.float64]), st.integers(0, 2 ** 31 - 1))
def test_host_emulated_cross_entropy_equals_numba(host_gpu, N, K, dtype, seed):
    """Same formulas, row sums in double on both sides: equal up to the last bit of exp/log in the two libms."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, K)) * 20).astype(dtype)
    t = rng.integers(0, K, N)
    t[rng.random(N) < 0.2] = K  # outside the classes: a NaN row on both
    losses, p, mean = host_gpu.cross_entropy_forward(x, t, N)
    want_losses, want_p, want_mean = cpu.cross_entropy_forward(x, t, N)
    tol = dict(rtol=1e-6, atol=0) if dtype == np.float32 else dict(rtol=1e-14, atol=0)
    np.testing.assert_allclose(losses, want_losses, **tol)
    np.testing.assert_allclose(p, want_p, **tol)
    np.testing.assert_allclose(mean, want_mean, **tol)  # the block's tree against a loop: both sum in double
    t[:] = 0
    total = host_gpu.cross_entropy_forward(x, t)[2]
    np.testing.assert_allclose(total, cpu.cross_entropy_forward(x, t)[2], **tol)
    for gy, divisor in ((rng.standard_normal(N).astype(dtype), 1), (np.ones(1, dtype), N)):
        np.testing.assert_allclose(host_gpu.cross_entropy_backward(p, t, gy, divisor),
                                   cpu.cross_entropy_backward(want_p, t, gy, divisor), **tol)


@needs_cxx
@HOST_SETTINGS
@given(st.lists(st.integers(1, 12), min_size=1, max_size=5), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2 ** 31 - 1))
def test_host_emulated_accumulate_grads_adds_every_pair(host_gpu, sizes, dtype, seed):
    """optim.cu's accumulate_grads: one launch adds K sources into K destinations (views into one flat
    buffer, as the optimizer's gradients are) through a table of addresses; nothing else is written."""
    rng = np.random.default_rng(seed)
    flat = rng.standard_normal(sum(sizes) + 3).astype(dtype)
    want = flat.copy()
    dsts, srcs, at = [], [], 1
    for n in sizes:
        dsts.append(flat[at:at + n])
        srcs.append(rng.standard_normal(n).astype(dtype))
        want[at:at + n] += srcs[-1]
        at += n
    HostKernel.launches.clear()
    real, host_gpu._address = host_gpu._address, (lambda a: a.ctypes.data)  # host memory stands in for the device's
    try:
        host_gpu.accumulate_grads(dsts, srcs)
    finally:
        host_gpu._address = real
    assert [name for name, *_ in HostKernel.launches] == ["accumulate_grads_" + ("f32" if dtype == np.float32 else "f64")]
    np.testing.assert_array_equal(flat, want)


def test_batchnorm_cu_carries_dropout_cu_mask_verbatim():
    """batchnorm.cu fuses a dropout and so needs its mask; each .cu compiles alone, so it holds a copy of
    dropout_kept, which must stay the same text as dropout.cu's (else the fused and plain layers differ)."""
    def kept(name):
        text = open(os.path.join(KERNELS_DIR, name)).read()
        return re.search(r"__device__ __forceinline__ bool dropout_kept\(.*?\n}\n", text, re.S).group(0)
    assert kept("batchnorm.cu") == kept("dropout.cu")


def test_gpu_batch_chunks_keep_every_column_matrix_within_32_bit_indices():
    """The whole batch in one chunk, unless its columns would pass INDEX_LIMIT values: then equal chunks that fit."""
    host = load_gpu_module(host_cupy(raw_module=None))
    assert host.batch_chunks(128, 144 * 576 * 4) == [(0, 128)]
    per_image = 4 * (host.INDEX_LIMIT // 10) + 4   # a bit more than a tenth of the limit, in float32 bytes
    chunks = host.batch_chunks(25, per_image)
    assert chunks[0] == (0, 9) and chunks[-1] == (18, 25) and all(b == c for (_, b), (c, _) in zip(chunks, chunks[1:]))
    with pytest.raises(ValueError, match="32-bit index"):
        host._check_index_range("im2col", col=host.INDEX_LIMIT)


@st.composite
def gemm_cases(draw):
    """(a, b): shapes with ragged tiles, views with other strides (transposed), broadcast batch dimensions."""
    M, N, K = draw(st.integers(1, 20)), draw(st.integers(1, 20)), draw(st.integers(1, 40))
    batch_a, batch_b = draw(st.sampled_from([((), ()), ((2,), (2,)), ((3,), ()), ((2, 1), (1, 2))]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31 - 1)))
    a = rng.standard_normal(batch_a + (M, K)).astype(dtype)
    b = rng.standard_normal(batch_b + (K, N)).astype(dtype)
    if draw(st.booleans()):  # a as the transpose of a contiguous (K, M) array: column strides
        a = np.ascontiguousarray(a.swapaxes(-1, -2)).swapaxes(-1, -2)
    if draw(st.booleans()):
        b = np.ascontiguousarray(b.swapaxes(-1, -2)).swapaxes(-1, -2)
    return a, b


@needs_cxx
@settings(max_examples=20, deadline=None)
@given(gemm_cases(), st.sampled_from([1, 3, 528]), st.booleans())
def test_host_emulated_gemm_equals_the_definition(host_gpu, case, wanted_blocks, with_bias):
    """gemm.cu (16x16 tiles in shared memory, blocks of 256 real threads) against matmul_reference; few wanted
    blocks keep k in one slice, many split it into slices of 16 whose partial products are added. A bias per
    row is added once, by the product itself or by the slices' sum."""
    a, b = case
    bias = np.random.default_rng(0).standard_normal(a.shape[-2]).astype(a.dtype) if with_bias else None
    old = host_gpu.GEMM_BLOCKS_WANTED
    host_gpu.GEMM_BLOCKS_WANTED = wanted_blocks
    try:
        got = host_gpu.gemm(a, b, bias)
    finally:
        host_gpu.GEMM_BLOCKS_WANTED = old
    want = matmul_reference(a, b) + (0 if bias is None else bias.astype(np.float64)[:, None])
    assert got.shape == want.shape and got.dtype == a.dtype
    tol = 1e-5 if a.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.sqrt(a.shape[-1]) * 4)


@needs_cxx
def test_host_emulated_launches_are_sized_by_the_grid_stride_rule(host_gpu):
    HostKernel.launches.clear()
    host_gpu.im2col(np.zeros((2, 3, 5, 5), np.float32), 3, 3)   # col has 3*3*3*2*3*3 = 486 entries
    host_gpu.col2im(np.zeros((3, 3, 3, 2, 3, 3), np.float32), 5, 5)  # dx has 2*3*5*5 = 150 entries
    assert HostKernel.launches == [("im2col_f32", 2, 3), ("col2im_f32", 2, 3)]


@needs_cxx
def test_host_emulated_wrappers_check_their_inputs(host_gpu):
    with pytest.raises(ValueError, match=r"bias must be a float32 CuPy array of shape \(2,\)"):
        host_gpu.gemm(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32), np.ones(4, np.float32))
    with pytest.raises(TypeError, match="float16"):
        host_gpu.im2col(np.zeros((1, 1, 3, 3), np.float16), 2, 2)
    with pytest.raises(ValueError, match="4 dimensions"):
        host_gpu.max_pool2d_forward(np.zeros((3, 3), np.float32), 2, 2, 2, 2)
    with pytest.raises(ValueError, match="SH must be a positive int, got 0"):
        host_gpu.im2col(np.zeros((1, 1, 3, 3), np.float32), 2, 2, 0, 1)
    with pytest.raises(ValueError, match="m .*does not match"):
        host_gpu.adam_update(np.zeros(4, np.float32), np.zeros(4, np.float32), np.zeros(3, np.float32),
                             np.zeros(4, np.float32), 0.1, 0.9, 0.999, 1e-8, 1)
    with pytest.raises(ValueError, match="1-D C-contiguous"):
        host_gpu.sgd_update(np.zeros((4, 2), np.float32)[:, 0], np.zeros(4, np.float32), np.zeros(4, np.float32), 0.1)
    with pytest.raises(TypeError, match="float32 CuPy array"):
        host_gpu.affine_warp(np.zeros((1, 1, 2, 2), np.float64), np.zeros((1, 2, 3)))
    with pytest.raises(TypeError, match="dtype int32 is not supported"):
        host_gpu.dropout_apply(np.zeros(2, np.int32), 0.5, 1)
    # a non-contiguous input is copied, as the CPU backend does
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32).transpose(0, 1, 3, 2)
    np.testing.assert_array_equal(host_gpu.im2col(x, 2, 2), cpu.im2col(x, 2, 2))


# =========================================================================================================
# 2. On a GPU
# =========================================================================================================
def gpu_test(f):
    """The `gpu` marker, and a skip with the reason when CuPy or a CUDA device is missing."""
    return gpu(needs_gpu(f))


def kgpu():
    from minicnn.kernels import gpu as kernels_gpu
    return kernels_gpu


def to_gpu(a):
    return cp.asarray(a)


def host(a):
    return cp.asnumpy(a) if cp is not None and isinstance(a, cp.ndarray) else np.asarray(a)


def assert_close(gpu_value, cpu_value, rtol, atol, what=""):
    g, c = host(gpu_value), host(cpu_value)
    assert g.shape == c.shape, f"{what}: shapes {g.shape} (gpu) and {c.shape} (cpu)"
    assert g.dtype == c.dtype, f"{what}: dtypes {g.dtype} (gpu) and {c.dtype} (cpu)"
    np.testing.assert_allclose(g, c, rtol=rtol, atol=atol, err_msg=what)


def tols(dtype, kernel=False):
    if np.dtype(dtype) == np.float64:
        return RTOL_F64, ATOL_F64
    return (KERNEL_RTOL_F32, KERNEL_ATOL_F32) if kernel else (RTOL_F32, ATOL_F32)


@gpu_test
def test_every_cuda_kernel_compiles_with_nvrtc_and_is_loaded_once():
    g = kgpu()
    names = g.compile_all()
    assert "col2im_f32" in names and "adam_update_f64" in names and "affine_warp_f32" in names
    modules = dict(g._MODULES)
    g.compile_all()
    assert all(g._MODULES[k] is m for k, m in modules.items()), "a RawModule was rebuilt"
    assert set(modules) == set(g.KERNELS)


@gpu_test
@GPU_SETTINGS
@given(unfold_cases(max_batch=2, max_size=7, max_kernel=3, max_padding=2, max_dilation=2),
       st.sampled_from([np.float32, np.float64]))
def test_gpu_im2col_col2im_match_the_cpu(case, dtype):
    N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    g = kgpu()
    col = g.im2col(to_gpu(x), KH, KW, SH, SW, PH, PW, DH, DW)
    assert isinstance(col, cp.ndarray)
    assert_close(col, cpu.im2col(x, KH, KW, SH, SW, PH, PW, DH, DW), 0, 0, "im2col (pure copies: exact)")
    gcol = rng.standard_normal(col.shape).astype(dtype)
    assert_close(g.col2im(to_gpu(gcol), H, W, SH, SW, PH, PW, DH, DW),
                 cpu.col2im(gcol, H, W, SH, SW, PH, PW, DH, DW), *tols(dtype, kernel=True), what="col2im")


@gpu_test
def test_gpu_col2im_is_bit_for_bit_repeatable():
    """A gather (one thread per pixel, fixed order), not atomicAdd: the same bits on every run."""
    g = kgpu()
    rng = np.random.default_rng(0)
    # 3x3 stride 1 with padding and dilation: every pixel sums up to 9 overlapping terms
    gcol = to_gpu(rng.standard_normal((16, 3, 3, 32, 28, 28)).astype(np.float32))
    first = g.col2im(gcol, 28, 28, 1, 1, 2, 2, 2, 2)
    for _ in range(5):
        assert bool(cp.array_equal(g.col2im(gcol, 28, 28, 1, 1, 2, 2, 2, 2), first))


@gpu_test
@GPU_SETTINGS
@given(pool_cases(), st.sampled_from([np.float32, np.float64]), st.booleans())
def test_gpu_pooling_kernels_match_the_cpu(case, dtype, ties):
    N, C, H, W, KH, KW, SH, SW, PH, PW, seed = case
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2, 3, (N, C, H, W)) if ties else rng.standard_normal((N, C, H, W))).astype(dtype)
    g = kgpu()
    y, argmax = g.max_pool2d_forward(to_gpu(x), KH, KW, SH, SW, PH, PW)
    y_cpu, argmax_cpu = cpu.max_pool2d_forward(x, KH, KW, SH, SW, PH, PW)
    assert_close(y, y_cpu, 0, 0, "max pool y")
    assert_close(argmax, argmax_cpu, 0, 0, "max pool argmax (same tie rule)")
    gy = rng.standard_normal(y.shape).astype(dtype)
    window = (KH, KW, SH, SW, PH, PW)
    gx_cpu = cpu.max_pool2d_backward(gy, argmax_cpu, H, W, *window)
    r, a = tols(dtype, kernel=True)
    assert_close(g.max_pool2d_backward(to_gpu(gy), argmax, H, W, *window), gx_cpu, r, a, "max pool backward (gather)")
    assert_close(g.avg_pool2d_forward(to_gpu(x), KH, KW, SH, SW, PH, PW),
                 cpu.avg_pool2d_forward(x, KH, KW, SH, SW, PH, PW), r, a, "avg pool forward")
    assert_close(g.avg_pool2d_backward(to_gpu(gy), H, W, KH, KW, SH, SW, PH, PW),
                 cpu.avg_pool2d_backward(gy, H, W, KH, KW, SH, SW, PH, PW), r, a, "avg pool backward")


@gpu_test
def test_gpu_affine_warp_matches_the_cpu():
    rng = np.random.default_rng(1)
    x = rng.random((8, 2, 28, 28), dtype=np.float32)
    theta = (np.tile(np.eye(2, 3), (8, 1, 1)) + rng.normal(0, 0.2, (8, 2, 3)) * [1, 1, 4]).astype(np.float32)
    assert_close(kgpu().affine_warp(to_gpu(x), to_gpu(theta)), cpu.affine_warp(x, theta),
                 KERNEL_RTOL_F32, KERNEL_ATOL_F32, "affine warp")
    assert_close(kgpu().affine_warp(to_gpu(x), theta), cpu.affine_warp(x, theta),  # theta may stay on the host
                 KERNEL_RTOL_F32, KERNEL_ATOL_F32, "affine warp, host theta")


@gpu_test
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_dropout_mask_equals_the_cpu_mask_for_the_same_key(dtype):
    mask = kgpu().dropout_mask((64, 16, 5, 5), 0.3, 2**63 + 12345, dtype)
    assert isinstance(mask, cp.ndarray)
    assert_close(mask, cpu.dropout_mask((64, 16, 5, 5), 0.3, 2**63 + 12345, dtype), 0, 0, "mask")


@gpu_test
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_gpu_dropout_mask_statistics(p):
    """Hashed on the device: a fraction p of zeros (within 5 standard deviations), the rest exactly 1/(1-p)."""
    n = 1_000_000
    mask = host(kgpu().dropout_mask((n,), p, minicnn.random.draw_key(np.random.default_rng(0)), np.float32))
    dropped = np.count_nonzero(mask == 0) / n
    assert abs(dropped - p) < 5 * np.sqrt(p * (1 - p) / n)
    assert set(np.unique(mask)) == {np.float32(0), np.float32(1 / (1 - p))}
    assert abs(mask.mean() - 1.0) < 5 * np.sqrt(p / (1 - p) / n)


@gpu_test
def test_gpu_default_dropout_generator_follows_manual_seed():
    x = Tensor(cp.ones((4, 100), np.float32))
    minicnn.manual_seed(11)
    a = host(F.dropout(x, 0.5).data)
    minicnn.manual_seed(11)
    b = host(F.dropout(x, 0.5).data)
    np.testing.assert_array_equal(a, b)
    assert 0 < np.count_nonzero(a) < a.size


@gpu_test
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd", "sgd_momentum", "sgd_nesterov"])
def test_gpu_optimizer_kernels_match_the_cpu(kind, dtype):
    rng = np.random.default_rng(3)
    n = 10_007
    p = rng.standard_normal(n).astype(dtype)
    state_cpu = [p.copy(), np.zeros(n, dtype), np.zeros(n, dtype)]
    state_gpu = [to_gpu(a) for a in state_cpu]
    g = kgpu()
    for step in range(1, 6):
        grad = (rng.standard_normal(n) * 10.0 ** rng.integers(-6, 1, n)).astype(dtype)
        if kind.startswith("adam"):
            args = (0.003, 0.9, 0.999, 1e-7, step, 0.01, kind == "adamw")
            cpu.adam_update(state_cpu[0], grad, state_cpu[1], state_cpu[2], *args)
            g.adam_update(state_gpu[0], to_gpu(grad), state_gpu[1], state_gpu[2], *args)
        else:
            args = (0.01, 0.0 if kind == "sgd" else 0.9, 1e-4, kind == "sgd_nesterov")
            cpu.sgd_update(state_cpu[0], grad, state_cpu[1], *args)
            g.sgd_update(state_gpu[0], to_gpu(grad), state_gpu[1], *args)
        for name, a, b in zip(("p", "m/buf", "v"), state_gpu, state_cpu):
            assert_close(a, b, *tols(dtype, kernel=True), what=f"{kind} step {step} {name}")


# ---- ops forward and backward --------------------------------------------------------------------------
def both_devices(fn, arrays, seed=0, wrt=None):
    """Run fn(*tensors) on the CPU and on the GPU from the same arrays; backward with the same random gy.

    Returns ((out_cpu, grads_cpu), (out_gpu, grads_gpu)) as NumPy arrays."""
    wrt = range(len(arrays)) if wrt is None else wrt
    results = []
    for device in ("cpu", "gpu"):
        tensors = [Tensor(a if device == "cpu" else to_gpu(a), requires_grad=i in wrt) for i, a in enumerate(arrays)]
        out = fn(*tensors)
        assert out.device == device
        gy = np.asarray(np.random.default_rng(seed).standard_normal(out.shape), dtype=out.dtype)
        out.backward(gy if device == "cpu" else to_gpu(gy))
        results.append((host(out.data), [host(t.grad) if t.requires_grad else None for t in tensors]))
    return results


def assert_same_on_both(fn, arrays, dtype, what, wrt=None, kernel=False):
    (out_c, grads_c), (out_g, grads_g) = both_devices(fn, arrays, wrt=wrt)
    rtol, atol = tols(dtype, kernel)
    assert_close(out_g, out_c, rtol, atol, f"{what}: forward")
    for i, (a, b) in enumerate(zip(grads_g, grads_c)):
        if b is not None:
            assert_close(a, b, rtol, atol, f"{what}: gradient of input {i}")


@st.composite
def conv_cases(draw):
    G = draw(st.integers(1, 3))
    case = dict(N=draw(st.integers(1, 3)), G=G, C=G * draw(st.integers(1, 3)), OC=G * draw(st.integers(1, 3)),
                H=draw(st.integers(1, 9)), W=draw(st.integers(1, 9)), KH=draw(st.integers(1, 3)),
                KW=draw(st.integers(1, 3)), stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                padding=(draw(st.integers(0, 2)), draw(st.integers(0, 2))),
                dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))), bias=draw(st.booleans()),
                seed=draw(st.integers(0, 2 ** 31 - 1)))
    assume(case["dilation"][0] * (case["KH"] - 1) + 1 <= case["H"] + 2 * case["padding"][0])
    assume(case["dilation"][1] * (case["KW"] - 1) + 1 <= case["W"] + 2 * case["padding"][1])
    return case


@gpu_test
@GPU_SETTINGS
@given(conv_cases(), st.sampled_from([np.float32, np.float64]))
def test_gpu_conv2d_forward_and_backward_match_the_cpu(case, dtype):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["N"], case["C"], case["H"], case["W"])).astype(dtype)
    w = rng.standard_normal((case["OC"], case["C"] // case["G"], case["KH"], case["KW"])).astype(dtype)
    arrays = [x, w] + ([rng.standard_normal(case["OC"]).astype(dtype)] if case["bias"] else [])
    hyper = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["G"])
    assert_same_on_both(lambda *t: F.conv2d(*t, **hyper), arrays, dtype, f"conv2d {case}")


@gpu_test
def test_gpu_conv2d_pointwise_fast_path_matches_the_cpu():
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((4, 6, 5, 5)).astype(np.float32), rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
              rng.standard_normal(4).astype(np.float32)]
    assert_same_on_both(lambda x, w, b: F.conv2d(x, w, b, groups=2), arrays, np.float32, "1x1 conv2d")


@gpu_test
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_pool_ops_match_the_cpu(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 9, 8)).astype(dtype)
    for name, fn in [("max_pool2d 2", lambda t: F.max_pool2d(t, 2)),
                     ("max_pool2d 3/2 pad 1", lambda t: F.max_pool2d(t, 3, 2, 1)),
                     ("avg_pool2d 3/1 pad 1", lambda t: F.avg_pool2d(t, 3, 1, 1)),
                     ("avg_pool2d (2,3)", lambda t: F.avg_pool2d(t, (2, 3))),
                     ("global_avg_pool2d", F.global_avg_pool2d)]:
        assert_same_on_both(fn, [x], dtype, name)


@gpu_test
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_batch_norm_matches_the_cpu_in_training_and_eval(dtype):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((8, 5, 6, 6)) * 3 + 1).astype(dtype)
    gamma, beta = rng.standard_normal(5).astype(dtype), rng.standard_normal(5).astype(dtype)
    for training in (True, False):
        rm, rv = np.full(5, 0.5, dtype), np.full(5, 2.0, dtype)
        stats = {"cpu": (rm, rv), "gpu": (to_gpu(rm), to_gpu(rv))}  # updated in place by training passes

        def fn(t, g, b, training=training, stats=stats):
            return F.batch_norm(t, g, b, *stats[t.device], training=training, momentum=0.1, eps=1e-5)
        assert_same_on_both(fn, [x, gamma, beta], dtype, f"batch_norm training={training}")
        for a, b in zip(stats["gpu"], stats["cpu"]):
            assert_close(a, b, *tols(dtype), what="running statistics")
    stats = {"cpu": (np.zeros(5, dtype), np.ones(5, dtype)), "gpu": (to_gpu(np.zeros(5, dtype)), to_gpu(np.ones(5, dtype)))}

    def fused(t, g, b):  # ReLU in front and dropout behind, fused; about half of t - 1 is negative here
        return F.batch_norm(t - 1, g, b, *stats[t.device], training=True, relu=True, dropout=0.3,
                            generator=np.random.default_rng(9))
    assert_same_on_both(fused, [x, gamma, beta], dtype, "batch_norm relu=True dropout=0.3")
    for a, b in zip(stats["gpu"], stats["cpu"]):
        assert_close(a, b, *tols(dtype), what="running statistics (relu=True)")


@gpu_test
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_activations_and_losses_match_the_cpu(dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((16, 10)).astype(dtype) * 4
    labels = rng.integers(0, 10, 16)
    for name, fn in [("relu", F.relu), ("sigmoid", F.sigmoid), ("tanh", F.tanh), ("log_softmax", F.log_softmax),
                     ("softmax", F.softmax), ("exp", F.exp)]:
        assert_same_on_both(fn, [x], dtype, name)
    for reduction in ("mean", "sum", "none"):
        def loss(t, r=reduction):
            return F.cross_entropy(t, labels if t.device == "cpu" else to_gpu(labels), reduction=r)
        assert_same_on_both(loss, [x], dtype, f"cross_entropy {reduction}")
    def nll(t):
        return F.nll_loss(F.log_softmax(t), labels if t.device == "cpu" else to_gpu(labels))
    assert_same_on_both(nll, [x], dtype, "nll_loss")
    y = rng.standard_normal((10, 7)).astype(dtype)
    assert_same_on_both(lambda a, b: F.relu(a @ b).sum(axis=1).mean(), [x, y], dtype, "matmul, sum, mean")


@gpu_test
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_dropout_op_with_a_seeded_numpy_generator_matches_the_cpu(dtype):
    x = np.random.default_rng(8).standard_normal((4, 3, 5, 5)).astype(dtype)
    assert_same_on_both(lambda t: F.dropout(t, 0.25, generator=np.random.default_rng(1)), [x], dtype, "dropout",
                        kernel=True)


# ---- layers --------------------------------------------------------------------------------------------
LAYERS = {
    "Conv2d 3x3 s2 p1": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 9, 9)),
    "Conv2d dilated grouped": (lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), (2, 4, 7, 8)),
    "Conv2d 1x1": (lambda: nn.Conv2d(3, 5, 1), (2, 3, 6, 6)),
    "Conv2d no bias": (lambda: nn.Conv2d(2, 3, (2, 3), bias=False), (3, 2, 5, 6)),
    "Linear": (lambda: nn.Linear(12, 7), (5, 12)),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3, momentum=0.01, eps=1e-3), (4, 3, 5, 5)),
    "BatchNorm2d eval": (lambda: nn.BatchNorm2d(3).eval(), (4, 3, 5, 5)),
    "ReLU": (lambda: nn.ReLU(), (2, 3, 4, 4)),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), (2, 3, 8, 8)),
    "MaxPool2d 3/2 pad 1": (lambda: nn.MaxPool2d(3, 2, 1), (2, 3, 9, 9)),
    "AvgPool2d": (lambda: nn.AvgPool2d(2), (2, 3, 8, 8)),
    "GlobalAvgPool2d": (lambda: nn.GlobalAvgPool2d(), (2, 3, 5, 5)),
    "Dropout seeded": (lambda: nn.Dropout(0.3, seed=3), (4, 3, 5, 5)),
    "Dropout eval": (lambda: nn.Dropout(0.3).eval(), (4, 3, 5, 5)),
    "Flatten": (lambda: nn.Flatten(), (2, 3, 4, 4)),
}


@gpu_test
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gpu_layer_forward_and_backward_match_the_cpu(name):
    make, shape = LAYERS[name]
    minicnn.manual_seed(0)
    layer_cpu = make()
    layer_gpu = copy.deepcopy(layer_cpu).to("gpu")
    assert all(p.device == "gpu" for p in layer_gpu.parameters())
    x = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
    results = {}
    for device, layer in (("cpu", layer_cpu), ("gpu", layer_gpu)):
        xt = Tensor(x if device == "cpu" else to_gpu(x), requires_grad=True)
        out = layer(xt)
        assert out.device == device
        gy = np.random.default_rng(10).standard_normal(out.shape).astype(np.float32)
        out.backward(gy if device == "cpu" else to_gpu(gy))
        results[device] = (out.data, xt.grad, [(n, p.grad) for n, p in layer.named_parameters()],
                           [(n, b.data) for n, b in layer.named_buffers()])
    (oc, gc, pc, bc), (og, gg, pg, bg) = results["cpu"], results["gpu"]
    assert_close(og, oc, RTOL_F32, ATOL_F32, f"{name}: forward")
    assert_close(gg, gc, RTOL_F32, ATOL_F32, f"{name}: input gradient")
    for (n, a), (_, b) in zip(pg, pc):
        assert_close(a, b, RTOL_F32, ATOL_F32, f"{name}: gradient of {n}")
    for (n, a), (_, b) in zip(bg, bc):
        assert_close(a, b, RTOL_F32, ATOL_F32, f"{name}: buffer {n}")


@gpu_test
@pytest.mark.parametrize("kind", ["Adam", "AdamW", "SGD"])
def test_gpu_optimizer_classes_match_the_cpu(kind):
    from minicnn import optim
    minicnn.manual_seed(1)
    model_cpu = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model_gpu = copy.deepcopy(model_cpu).to("gpu")
    make = {"Adam": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-3), "AdamW": lambda ps: optim.AdamW(ps, lr=0.01),
            "SGD": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)}[kind]
    opts = {"cpu": make(model_cpu.parameters()), "gpu": make(model_gpu.parameters())}
    rng = np.random.default_rng(12)
    for _ in range(3):
        x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
        y = rng.integers(0, 3, 5)
        for device, model in (("cpu", model_cpu), ("gpu", model_gpu)):
            loss = F.cross_entropy(model(Tensor(x if device == "cpu" else to_gpu(x))),
                                   y if device == "cpu" else to_gpu(y))
            opts[device].zero_grad()
            loss.backward()
            opts[device].step()
    for (n, a), (_, b) in zip(model_gpu.named_parameters(), model_cpu.named_parameters()):
        assert_close(a.data, b.data, TRAIN_RTOL, 1e-5, f"{kind}: {n} after 3 steps")


@gpu_test
def test_gpu_eip4_training_steps_give_the_cpu_losses():
    """Same weights, same batches, dropout p=0 (so the two devices' generators do not matter), Adam."""
    from minicnn import optim
    from minicnn.models import eip4
    minicnn.manual_seed(0)
    model_cpu = eip4(dropout=0.0)
    model_gpu = copy.deepcopy(model_cpu).to("gpu")
    opts = {"cpu": optim.Adam(model_cpu.parameters(), lr=1e-3, eps=1e-3),
            "gpu": optim.Adam(model_gpu.parameters(), lr=1e-3, eps=1e-3)}
    rng = np.random.default_rng(13)
    losses = {"cpu": [], "gpu": []}
    for _ in range(4):
        x = rng.random((32, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, 32)
        for device, model in (("cpu", model_cpu), ("gpu", model_gpu)):
            out = model(Tensor(x if device == "cpu" else to_gpu(x)))
            loss = F.cross_entropy(out, y if device == "cpu" else to_gpu(y))
            opts[device].zero_grad()
            loss.backward()
            opts[device].step()
            losses[device].append(float(host(loss.data)))
    np.testing.assert_allclose(losses["gpu"][0], losses["cpu"][0], rtol=RTOL_F32, err_msg="first loss")
    np.testing.assert_allclose(losses["gpu"], losses["cpu"], rtol=TRAIN_RTOL, err_msg="losses of 4 steps")
    for (n, a), (_, b) in zip(model_gpu.named_buffers(), model_cpu.named_buffers()):
        assert_close(a.data, b.data, TRAIN_RTOL, TRAIN_BUFFER_ATOL, f"eip4 buffer {n}")


# ---- the GEMM kernel and CUDA graphs -----------------------------------------------------------------------
def _strided_like(a_host, a_gpu):
    """a_gpu laid out like a_host: a transposed view where a_host is one."""
    if a_host.flags.c_contiguous:
        return a_gpu
    return cp.ascontiguousarray(a_gpu.swapaxes(-1, -2)).swapaxes(-1, -2)


@needs_cxx
@HOST_SETTINGS
@given(st.integers(0, 6), st.lists(st.integers(1, 5), min_size=0, max_size=2), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2 ** 31 - 1))
def test_host_emulated_sum_leading_adds_the_first_axis_in_order(host_gpu, B, rest, dtype, seed):
    """gemm_sum_slices as sum_leading: a[0] + a[1] + ... in that order, bit for bit; no sub-array gives zeros."""
    a = np.random.default_rng(seed).standard_normal([B] + rest).astype(dtype)
    got = host_gpu.sum_leading(a)
    want = np.zeros(tuple(rest), dtype)
    if B:
        want = a[0].copy()
        for b in a[1:]:
            want = want + b
    assert got.dtype == dtype and got.shape == tuple(rest)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(cpu.sum_leading(a), want, rtol=1e-5)


@needs_cxx
@HOST_SETTINGS
@given(st.integers(1, 5), st.integers(0, 40), st.sampled_from([3, 4, 8]), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2 ** 31 - 1))
def test_host_emulated_sum_rows_equals_numpy(host_gpu, R, L, threads, dtype, seed):
    """gemm.cu's sum_rows (one block per row, a tree of the threads' double sums) against float64 NumPy; block
    sizes 3, 4 and 8 give the tree odd and even rounds, and an empty row gives 0."""
    x = np.random.default_rng(seed).standard_normal((R, L)).astype(dtype)
    old = host_gpu.THREADS
    host_gpu.THREADS = threads
    try:
        got = host_gpu.sum_rows(x)
    finally:
        host_gpu.THREADS = old
    assert got.dtype == dtype and got.shape == (R,)
    np.testing.assert_allclose(got, x.astype(np.float64).sum(axis=1), rtol=1e-6 if dtype == np.float32 else 1e-13,
                               atol=1e-6 if dtype == np.float32 else 1e-13)


@gpu_test
@GPU_SETTINGS
@given(gemm_cases())
def test_gpu_gemm_kernel_matches_cublas(case):
    a, b = case
    ga, gb = _strided_like(a, to_gpu(a)), _strided_like(b, to_gpu(b))
    got = kgpu().gemm(ga, gb)
    assert_close(got, cp.matmul(ga, gb), *tols(a.dtype), what="gemm.cu vs cupy.matmul")


@gpu_test
@pytest.mark.parametrize("M, K, N, transpose_b", [(16, 144, 86528, False), (144, 86528, 16, True),
                                                 (144, 16, 86528, False), (10, 16, 73728, False)])
def test_gpu_gemm_kernel_on_the_eip4_shapes(M, K, N, transpose_b):
    """The products of eip4's second convolution (forward, weight gradient with split k, column gradient) and
    of the 1x1 convolution, as the engine hands them over (the weight gradient's B is a transposed view)."""
    rng = cp.random.default_rng(3)
    a = rng.standard_normal((1, M, K), dtype=np.float32)
    b = (rng.standard_normal((1, N, K), dtype=np.float32).swapaxes(-1, -2) if transpose_b
         else rng.standard_normal((1, K, N), dtype=np.float32))
    want = cp.matmul(a.astype(np.float64), b.astype(np.float64))
    got = kgpu().gemm(a, b)
    scale = float(cp.abs(want).max())
    assert_close(got.astype(np.float64), want, 1e-4, 1e-5 * scale, what=f"gemm {M}x{K} @ {K}x{N}")


def _sgd_eip4_pair(seed):
    from minicnn import optim
    from minicnn.models import eip4
    minicnn.manual_seed(seed)
    eager = eip4(dropout=0.0).to("gpu")
    graphed = copy.deepcopy(eager)
    return [(m, optim.SGD(m.parameters(), lr=0.01, momentum=0.9)) for m in (eager, graphed)]


def _train_step(model, opt):
    def step(x, y):
        loss = F.cross_entropy(model(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.data
    return step


@gpu_test
def test_gpu_training_step_replayed_from_a_cuda_graph_trains_like_eager_steps():
    """eip4 without dropout, SGD with momentum at a constant rate, the whole step (update included) captured:
    nothing is frozen, so every replay must do what the same step run eagerly does. Both multiply with gemm.cu
    (matmul_route "gemm"), so the two run the same kernels and only the replay mechanics differ. Checked: the
    loss of each replay, and how far each parameter moved during the replays -- within 5% of the eager move (a
    replay that did not update, or used a stale batch or gradient, is off by the whole move). (An earlier
    version compared eager cuBLAS products with the graph's gemm.cu at TRAIN_BUFFER_ATOL and failed once on an
    H200: 2 of 144 first-layer weights 1.3e-3 apart after 7 steps at lr 0.01, losses still equal.)"""
    from minicnn.cuda_graph import CapturedStep
    g = kgpu()
    old = g.matmul_route
    g.matmul_route = "gemm"
    try:
        (eager, opt_e), (graphed, opt_g) = _sgd_eip4_pair(0)
        rng = np.random.default_rng(5)
        batches = [(to_gpu(rng.random((32, 1, 28, 28), dtype=np.float32)), to_gpu(rng.integers(0, 10, 32)))
                   for _ in range(7)]
        eager_step = _train_step(eager, opt_e)
        captured = CapturedStep(_train_step(graphed, opt_g), warmup=2, strict=True)
        for xb, yb in batches[:2]:  # the warm-up calls: eager steps on both sides
            eager_step(xb, yb)
            captured(xb, yb)
        assert captured.graph is None
        start = {n: host(p.data).copy() for n, p in eager.named_parameters()}
        losses = {"eager": [], "graph": []}
        for xb, yb in batches[2:]:  # the first of these is recorded and launched, the others replayed
            losses["eager"].append(float(host(eager_step(xb, yb))))
            losses["graph"].append(float(host(captured(xb, yb))))
        assert captured.graph is not None and captured.frozen == []
    finally:
        g.matmul_route = old
    np.testing.assert_allclose(losses["graph"], losses["eager"], rtol=TRAIN_RTOL, err_msg="losses of 5 graph steps")
    for (n, a), (_, b) in zip(graphed.named_parameters(), eager.named_parameters()):
        moved_eager, moved_graph = host(b.data) - start[n], host(a.data) - start[n]
        assert np.linalg.norm(moved_eager) > 0, f"parameter {n} did not move in 5 eager steps"
        gap = np.linalg.norm(moved_graph - moved_eager) / np.linalg.norm(moved_eager)
        assert gap < 0.05, f"parameter {n}: the replays moved it {gap:.1%} away from where the eager steps did"
    for (n, a), (_, b) in zip(graphed.named_buffers(), eager.named_buffers()):
        assert_close(a.data, b.data, TRAIN_RTOL, TRAIN_BUFFER_ATOL, f"buffer {n}")


@gpu_test
def test_trainer_with_cuda_graph_trains_exactly_like_eager_training():
    """The GPU default of examples/mnist.py: eip4 WITH dropout, Adam under a per-batch one-cycle schedule, random
    affine augmentation; every full batch after the first replayed from a CUDA graph, Adam eager, the smaller
    last batch of each epoch eager. The replays read their dropout keys from device slots written before each
    replay (drawn from the same generator in the same order as eager steps) and run the same kernels, so after
    two epochs the weights, batch-norm statistics, Adam's moments and the epochs' losses and accuracies equal
    eager training's bit for bit. A replay with a frozen key or learning rate would differ."""
    from minicnn import optim
    from minicnn.models import AFFINE, eip4
    from minicnn.training import Trainer
    rng = np.random.default_rng(11)
    x = to_gpu(rng.random((5 * 32 + 8, 1, 28, 28), dtype=np.float32))
    y = to_gpu(rng.integers(0, 10, len(x)))
    runs = []
    for graph in (False, True):
        minicnn.manual_seed(3)
        model = eip4(dropout=0.1).to("gpu")
        opt = optim.Adam(model.parameters(), lr=0.003)
        trainer = Trainer(model, opt, (x, y), (x[:64], y[:64]), batch_size=32, seed=0, augment=AFFINE,
                          batch_schedule=optim.OneCycle(opt, 0.003, 12), cuda_graph=graph)
        records = [trainer.train_epoch(show_progress=False) for _ in range(2)]
        runs.append((trainer, [{k: v for k, v in r.items() if k != "seconds"} for r in records]))
    (eager, eager_records), (graphed, graph_records) = runs
    assert eager._captured is None
    assert graphed._captured.graph is not None and graphed._captured.calls == 10 and graphed._captured.frozen == []
    assert graph_records == eager_records
    for (n, a), (_, b) in zip(list(graphed.model.named_parameters()) + list(graphed.model.named_buffers()),
                              list(eager.model.named_parameters()) + list(eager.model.named_buffers())):
        np.testing.assert_array_equal(host(a.data), host(b.data), err_msg=n)
    for name in ("m", "v"):
        np.testing.assert_array_equal(host(getattr(graphed.optimizer, name)), host(getattr(eager.optimizer, name)))
    assert graphed.optimizer.step_count == eager.optimizer.step_count == 12


@gpu_test
def test_cuda_graph_names_the_values_it_freezes():
    """Adam's step count is passed by value: captured with the update inside, it is listed in `frozen` (the
    dropout keys are not: they come from device slots), and strict=True refuses such a step."""
    from minicnn import optim
    from minicnn.cuda_graph import CapturedStep
    from minicnn.models import eip4
    minicnn.manual_seed(1)
    model = eip4(dropout=0.1).to("gpu")
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x, y = to_gpu(np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)), to_gpu(np.arange(16) % 10)
    captured = CapturedStep(_train_step(model, opt), warmup=1)
    for _ in range(3):
        loss = captured(x, y)
    assert captured.frozen == ["Adam step count"]
    assert np.isfinite(float(host(loss)))
    with pytest.raises(RuntimeError, match="Adam step count"):
        CapturedStep(_train_step(model, opt), warmup=0, strict=True)(x, y)


# ---- devices -------------------------------------------------------------------------------------------
@gpu_test
def test_tensor_to_gpu_and_back_round_trips():
    a = np.random.default_rng(14).standard_normal((3, 4)).astype(np.float32)
    t = Tensor(a, requires_grad=True)
    t.grad = np.ones_like(a)
    g = t.to("gpu")
    assert g.device == "gpu" and isinstance(g.data, cp.ndarray) and g.requires_grad and g.is_leaf
    assert isinstance(g.grad, cp.ndarray)
    assert g.to("gpu") is g and t.to("cpu") is t
    back = g.to("cpu")
    assert back.device == "cpu" and isinstance(back.data, np.ndarray)
    np.testing.assert_array_equal(back.data, a)
    np.testing.assert_array_equal(back.grad, np.ones_like(a))
    np.testing.assert_array_equal(g.numpy(), a)
    assert Tensor([1.0]).to("cuda").device == "gpu"


@gpu_test
def test_module_to_moves_parameters_and_buffers_in_place():
    from minicnn.models import eip4
    model = eip4()
    params = model.parameters()
    state = model.state_dict()
    assert model.to("gpu") is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(isinstance(p.data, cp.ndarray) for p in model.parameters())
    assert all(isinstance(b.data, cp.ndarray) for _, b in model.named_buffers())
    assert model.device == "gpu"
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    model.to("cpu")
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters()) and model.device == "cpu"


@gpu_test
def test_an_op_on_tensors_of_two_devices_raises_naming_both():
    a, b = Tensor(np.ones(3, np.float32)), Tensor(cp.ones(3, np.float32))
    for op in (lambda: a + b, lambda: b * a, lambda: F.conv2d(Tensor(cp.ones((1, 1, 3, 3), np.float32)),
                                                               Tensor(np.ones((1, 1, 2, 2), np.float32)))):
        with pytest.raises(RuntimeError) as info:
            op()
        message = str(info.value)
        assert "cpu" in message and "gpu" in message, message


@gpu_test
def test_gpu_kernel_wrappers_name_bad_inputs():
    g = kgpu()
    with pytest.raises(TypeError, match="CuPy array"):
        g.im2col(np.zeros((1, 1, 3, 3), np.float32), 2, 2)
    with pytest.raises(TypeError, match="float16"):
        g.im2col(cp.zeros((1, 1, 3, 3), np.float16), 2, 2)
    with pytest.raises(ValueError, match="1-D C-contiguous"):
        g.adam_update(cp.zeros((4, 2), np.float32)[:, 0], cp.zeros(4, np.float32), cp.zeros(4, np.float32),
                      cp.zeros(4, np.float32), 0.1, 0.9, 0.999, 1e-8, 1)

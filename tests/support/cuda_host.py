"""The CUDA kernels run on the host: each .cu file compiled as C++ with a small shim, driven through the real GPU wrappers.

`load_gpu_package(host_cupy(HostModule))` executes kernels/gpu/ (runtime.py, ops.py, graph.py) under another
module name with NumPy standing in for CuPy and `HostModule` for cupy.RawModule: the wrappers' checks,
shapes, launch sizes and scalar types all run for real, and each launch runs every (block, thread) of the
grid one after another on the host (blocks of a kernel that uses __syncthreads run their threads as real
host threads, with a barrier). With tiny blocks and grids the grid-stride loops wrap many times. Every
scalar argument must have exactly the C type of its kernel parameter (CuPy passes scalars by value, so a
wrong width would corrupt them on a GPU). Needs a C++ compiler (g++, c++ or clang++).
"""
import ctypes
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
import types

import numpy as np
import pytest

import minicnn  # noqa: F401  (minicnn.kernels importable)
from minicnn.kernels import cpu

KERNELS_DIR = os.path.dirname(cpu.__file__)

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


class HostStream:
    """The current stream of the fake CuPy: `capturing` is what a CUDA graph recording would say (the host has none)."""

    def __init__(self):
        self.ptr, self.capturing = 1, False

    def is_capturing(self):
        return self.capturing


def host_cupy(raw_module):
    """NumPy dressed as the part of CuPy that kernels/gpu/ uses, with `raw_module` in place of cupy.RawModule;
    `.cuda.stream` is the current stream (set its `capturing` to act as if a CUDA graph were being recorded)."""
    stream = HostStream()
    return types.SimpleNamespace(ndarray=np.ndarray, ascontiguousarray=np.ascontiguousarray, empty=np.empty,
                                 empty_like=np.empty_like, asarray=np.asarray, ones=np.ones, zeros=np.zeros,
                                 broadcast_to=np.broadcast_to, RawModule=raw_module,
                                 cuda=types.SimpleNamespace(stream=stream, get_current_stream=lambda: stream))


def load_gpu_package(fake_cupy, name="minicnn.kernels._gpu_on_host"):
    """Execute the package kernels/gpu/ under `name` with `fake_cupy` imported as cupy; returns the package (its
    submodules are its attributes runtime, ops and graph)."""
    folder = os.path.join(KERNELS_DIR, "gpu")
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    package = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("cupy")
    sys.modules["cupy"], sys.modules[name] = fake_cupy, package
    try:
        spec.loader.exec_module(package)
    finally:
        if saved is None:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = saved
    package.fake_cupy = fake_cupy
    return package

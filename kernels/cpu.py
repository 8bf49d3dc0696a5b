"""The CPU backend on Numba: every kernel of minicnn under its contract name (numpy_backend.py and gpu/ have them too).

The lesson's twins (im2col.py beside im2col.cu, pool.py beside pool.cu, ...) provide the operations;
`conv2d_plan` is the one door through which a faster convolution algorithm takes a layer
(conv_matmul.py for shapes that are one matrix product, cpu_fast/plan.py for the rest).

Numba compiles each kernel the first time it is called with new argument types and keeps the machine code
on disk; later processes load it in milliseconds. The first training run on a machine (or after an
upgrade) therefore waits for the compiler; `on_first_compile` lets the engine say so just before it starts.
"""
import os
import sys
import threading
from types import MappingProxyType

import numba
from numba.core import event

from . import conv_matmul
from .affine import affine_warp  # noqa: F401
from .batchnorm import batch_norm_forward, batch_norm_backward  # noqa: F401
from .conv_geometry import ConvGeometry  # noqa: F401
from .cpu_fast import plan as fast
from .cross_entropy import cross_entropy_forward, cross_entropy_backward  # noqa: F401
from .dropout import dropout_apply, dropout_mask  # noqa: F401
from .gemm import matmul, sum_leading, sum_rows  # noqa: F401
from .im2col import im2col, col2im  # noqa: F401
from .optim import adam_update, sgd_update, accumulate_grads  # noqa: F401
from .pool import max_pool2d_forward, max_pool2d_backward, avg_pool2d_forward, avg_pool2d_backward  # noqa: F401
from .relu import relu_forward, relu_backward  # noqa: F401

capabilities = MappingProxyType({
    "name": "numba",
    "conv_algorithms": ("im2col", "pointwise", "whole_image", "depthwise", "direct", "wide"),
    "gemm_routes": (),
    "fused_batch_norm": True,   # batch_norm_forward/backward take relu= and dropout_p= (nn/fuse.py)
})

# About how long the first training run compiles minicnn's kernels, in seconds: eip4 on a 2-core AMD EPYC
# (AVX2, no AVX-512), `python benchmarks/train_bench.py --threads 2 --startup --no-train` (medians of 3, each cold
# run with an empty NUMBA_CACHE_DIR): the first training step 16.0 s cold against 0.9 s warm, and
# `examples/mnist.py --epochs 1 --train-limit 1280 --threads 2 --no-progress` 18.8 s cold, 3.9 s warm.
COLD_COMPILE_SECONDS = 15


def conv2d_plan(g, algorithm="auto"):
    """A faster algorithm for the convolution of geometry g (conv_geometry.ConvGeometry), or None: the lesson path."""
    return conv_matmul.plan(g, algorithm, sys.modules[__name__]) or fast.plan(g, algorithm)


def cache_dir():
    """The folder under which Numba keeps minicnn's compiled kernels: $NUMBA_CACHE_DIR when set; else the kernels'
    own folder (a __pycache__ beside each source file), or Numba's user-wide cache folder where that is not
    writable (an installed, read-only package)."""
    if numba.config.CACHE_DIR:
        return numba.config.CACHE_DIR
    here = os.path.dirname(os.path.abspath(__file__))
    pycache = os.path.join(here, "__pycache__")
    if os.access(pycache if os.path.isdir(pycache) else here, os.W_OK):
        return here
    from numba.misc.appdirs import AppDirs
    return AppDirs(appname="numba", appauthor=False).user_cache_dir


class _FirstCompile(event.Listener):
    """Numba's "numba:compile" events start only on a cache miss: the first one of a minicnn kernel calls the
    callbacks waiting for it, each once."""

    def __init__(self):
        self.waiting = []
        self.lock = threading.Lock()

    def on_start(self, ev):
        if not self.waiting or not ev.data["dispatcher"].py_func.__module__.startswith(__package__ + "."):
            return
        with self.lock:
            callbacks, self.waiting = self.waiting, []
        info = {"cache_dir": cache_dir(), "seconds": COLD_COMPILE_SECONDS}
        for callback in callbacks:
            callback(dict(info))

    def on_end(self, ev):
        pass


_first_compile = None
_first_compile_lock = threading.Lock()


def on_first_compile(callback):
    """Call callback(info) once, just before the next compilation (a cache miss) of a minicnn kernel in this process;
    never if every kernel comes from Numba's disk cache. info: {"cache_dir": cache_dir(), "seconds":
    COLD_COMPILE_SECONDS}. The callback runs on the compiling thread, inside Numba's compiler lock: keep it short
    (print a line)."""
    global _first_compile
    with _first_compile_lock:
        if _first_compile is None:
            _first_compile = _FirstCompile()
            event.register("numba:compile", _first_compile)
    with _first_compile.lock:
        _first_compile.waiting.append(callback)


def set_num_threads(n):
    """Run the kernels on n threads (Numba's pool and the chunk runs; at most the NUMBA_NUM_THREADS it started
    with); returns the number in force. The results do not depend on it (cpu_fast/parallel.py)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    return numba.get_num_threads()

"""The GPU ops: every kernel of minicnn under its contract name, for CuPy arrays (kernels/cpu.py has the same names).

Each wrapper checks its inputs (every message names the offending value), looks up the launch plan of
its shapes (runtime._plan) and launches the kernel of the .cu file of the same name.
"""
import math

import numpy as np

from . import runtime as rt
from .graph import _capturing, _key_args, frozen_scalars
from .runtime import (INDEX_LIMIT, _SUFFIX, _check_index_range, _check_ints, _flat_buffers, _float_array,  # noqa: F401
                      _function, _grid_stride, _ints, _launch, _output_size, _plan, _run, cp)
from ..conv_geometry import out_size
from ..numpy_backend import dropout_threshold as threshold

# ---- im2col.cu -------------------------------------------------------------------------------------
def im2col(x, KH, KW, SH=1, SW=1, PH=0, PW=0, DH=1, DW=1):
    """x (N, C, H, W) -> col (C, KH, KW, N, OH, OW); one thread per column entry (see im2col.cu)."""
    x = _float_array(x, "x", "im2col", 4)
    ints = (KH, KW, SH, SW, PH, PW, DH, DW)
    shape, launch = _plan(("im2col", x.shape, x.dtype, ints, tuple(map(type, ints))), lambda: _im2col_plan(x, *ints))
    col = cp.empty(shape, dtype=x.dtype)
    _run(launch, (x, col))
    return col


def _im2col_plan(x, KH, KW, SH, SW, PH, PW, DH, DW):
    _check_ints("im2col", positive=(("KH", KH), ("KW", KW), ("SH", SH), ("SW", SW), ("DH", DH), ("DW", DW)),
                non_negative=(("PH", PH), ("PW", PW)))
    N, C, H, W = x.shape
    OH, OW = out_size(H, KH, SH, PH, DH), out_size(W, KW, SW, PW, DW)
    _output_size("im2col", H, W, OH, OW, f"KH={KH}, KW={KW}, SH={SH}, SW={SW}, PH={PH}, PW={PW}, DH={DH}, DW={DW}")
    shape = (C, KH, KW, N, OH, OW)
    _check_index_range("im2col", x=x.size, col=math.prod(shape))
    return shape, _grid_stride("im2col", "im2col_" + _SUFFIX[x.dtype], math.prod(shape),
                               _ints(N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW))


def col2im(col, H, W, SH=1, SW=1, PH=0, PW=0, DH=1, DW=1):
    """col (C, KH, KW, N, OH, OW) -> dx (N, C, H, W); one thread per input element gathers its terms (no atomics)."""
    col = _float_array(col, "col", "col2im", 6)
    ints = (H, W, SH, SW, PH, PW, DH, DW)
    shape, launch = _plan(("col2im", col.shape, col.dtype, ints, tuple(map(type, ints))),
                          lambda: _col2im_plan(col, *ints))
    dx = cp.empty(shape, dtype=col.dtype)
    _run(launch, (col, dx))
    return dx


def _col2im_plan(col, H, W, SH, SW, PH, PW, DH, DW):
    _check_ints("col2im", positive=(("H", H), ("W", W), ("SH", SH), ("SW", SW), ("DH", DH), ("DW", DW)),
                non_negative=(("PH", PH), ("PW", PW)))
    C, KH, KW, N, OH, OW = col.shape
    shape = (N, C, H, W)
    _check_index_range("col2im", col=col.size, dx=math.prod(shape))
    return shape, _grid_stride("im2col", "col2im_" + _SUFFIX[col.dtype], math.prod(shape),
                               _ints(N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW))


# ---- pool.cu ---------------------------------------------------------------------------------------
def _pool_checks(op, KH, KW, SH, SW, PH, PW):
    _check_ints(op, positive=(("KH", KH), ("KW", KW), ("SH", SH), ("SW", SW)),
                non_negative=(("PH", PH), ("PW", PW)))


def max_pool2d_forward(x, KH, KW, SH, SW, PH=0, PW=0):
    """x (N, C, H, W) -> (y (N, C, OH, OW), argmax int32 (N, C, OH, OW)); first maximum in row-major window order."""
    x = _float_array(x, "x", "max_pool2d_forward", 4)
    ints = (KH, KW, SH, SW, PH, PW)
    shape, launch = _plan(("max pool forward", x.shape, x.dtype, ints, tuple(map(type, ints))),
                          lambda: _pool_forward_plan("max_pool2d_forward", x, *ints))
    y = cp.empty(shape, dtype=x.dtype)
    argmax = cp.empty(shape, dtype=np.int32)
    _run(launch, (x, y, argmax))
    return y, argmax


def _pool_forward_plan(op, x, KH, KW, SH, SW, PH, PW):
    _pool_checks(op, KH, KW, SH, SW, PH, PW)
    N, C, H, W = x.shape
    OH, OW = out_size(H, KH, SH, PH), out_size(W, KW, SW, PW)
    _output_size(op, H, W, OH, OW, f"KH={KH}, KW={KW}, SH={SH}, SW={SW}, PH={PH}, PW={PW}")
    return (N, C, OH, OW), _grid_stride("pool", op + "_" + _SUFFIX[x.dtype], N * C * OH * OW,
                                        _ints(N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW))


def max_pool2d_backward(gy, argmax, H, W, KH, KW, SH, SW, PH=0, PW=0):
    """gy (N, C, OH, OW) -> gx (N, C, H, W): each pixel gathers gy over the windows that contain it and chose it."""
    gy = _float_array(gy, "gy", "max_pool2d_backward", 4)
    if not isinstance(argmax, cp.ndarray):
        raise TypeError(f"max_pool2d_backward (GPU): argmax must be a CuPy array, got "
                        f"{type(argmax).__module__}.{type(argmax).__name__}")
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"max_pool2d_backward (GPU): argmax must hold integer positions, got dtype {argmax.dtype}")
    if tuple(argmax.shape) != tuple(gy.shape):
        raise ValueError(f"max_pool2d_backward (GPU): argmax has shape {tuple(argmax.shape)} "
                         f"but gy has shape {tuple(gy.shape)}")
    ints = (H, W, KH, KW, SH, SW, PH, PW)
    shape, launch = _plan(("max pool backward", gy.shape, gy.dtype, ints, tuple(map(type, ints))),
                          lambda: _max_pool_backward_plan(gy, *ints))
    plain = cp.ascontiguousarray(argmax.astype(np.int32, copy=False))
    gx = cp.empty(shape, dtype=gy.dtype)
    _run(launch, (gy, plain, gx))
    return gx


def _max_pool_backward_plan(gy, H, W, KH, KW, SH, SW, PH, PW):
    _check_ints("max_pool2d_backward", positive=(("H", H), ("W", W)))
    _pool_checks("max_pool2d_backward", KH, KW, SH, SW, PH, PW)
    N, C, OH, OW = gy.shape
    if (out_size(H, KH, SH, PH), out_size(W, KW, SW, PW)) != (OH, OW):
        raise ValueError(f"max_pool2d_backward (GPU): a {KH}x{KW} window with stride {SH}x{SW} and padding "
                         f"{PH}x{PW} over {H}x{W} gives {out_size(H, KH, SH, PH)}x{out_size(W, KW, SW, PW)} "
                         f"outputs, but gy is {OH}x{OW}")
    return (N, C, H, W), _grid_stride("pool", "max_pool2d_backward_" + _SUFFIX[gy.dtype], N * C * H * W,
                                      _ints(N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW))


def avg_pool2d_forward(x, KH, KW, SH, SW, PH=0, PW=0):
    """x (N, C, H, W) -> y (N, C, OH, OW): window means, padding counted as zeros."""
    x = _float_array(x, "x", "avg_pool2d_forward", 4)
    _pool_checks("avg_pool2d_forward", KH, KW, SH, SW, PH, PW)
    N, C, H, W = x.shape
    OH, OW = out_size(H, KH, SH, PH), out_size(W, KW, SW, PW)
    _output_size("avg_pool2d_forward", H, W, OH, OW, f"KH={KH}, KW={KW}, SH={SH}, SW={SW}, PH={PH}, PW={PW}")
    y = cp.empty((N, C, OH, OW), dtype=x.dtype)
    _launch(_function("pool", "avg_pool2d_forward_" + _SUFFIX[x.dtype]), y.size,
            (x, y) + _ints(N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW))
    return y


def avg_pool2d_backward(gy, H, W, KH, KW, SH, SW, PH=0, PW=0):
    """gy (N, C, OH, OW) -> gx (N, C, H, W): each pixel gathers gy / (KH*KW) from the windows containing it."""
    gy = _float_array(gy, "gy", "avg_pool2d_backward", 4)
    _pool_checks("avg_pool2d_backward", KH, KW, SH, SW, PH, PW)
    _check_ints("avg_pool2d_backward", positive=(("H", H), ("W", W)))
    N, C, OH, OW = gy.shape
    gx = cp.empty((N, C, H, W), dtype=gy.dtype)
    _launch(_function("pool", "avg_pool2d_backward_" + _SUFFIX[gy.dtype]), gx.size,
            (gy, gx) + _ints(N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW))
    return gx


# ---- affine.cu -------------------------------------------------------------------------------------
def affine_warp(x, theta):
    """Warp each image x[n] by the inverse affine map theta[n] (N, 2, 3); float32 only, like affine.py."""
    if not isinstance(x, cp.ndarray) or x.dtype != np.float32 or x.ndim != 4:
        raise TypeError(f"affine_warp (GPU) expects x as a float32 CuPy array (N, C, H, W), got "
                        f"{type(x).__name__} dtype={getattr(x, 'dtype', None)} shape={getattr(x, 'shape', None)}")
    theta = cp.ascontiguousarray(cp.asarray(theta, dtype=np.float32))
    if theta.shape != (x.shape[0], 2, 3):
        raise ValueError(f"theta must have shape (N, 2, 3) = {(x.shape[0], 2, 3)} for x of shape {x.shape}, "
                         f"got {theta.shape}")
    x = cp.ascontiguousarray(x)
    N, C, H, W = x.shape
    out = cp.empty_like(x)
    if x.size:
        _launch(_function("affine", "affine_warp_f32"), N * H * W, (x, theta, out) + _ints(N, C, H, W))
    return out


# ---- dropout.cu ------------------------------------------------------------------------------------
def dropout_apply(x, p, key):
    """x * mask(key), elementwise: the mask hashed from (key, index) on the device, never stored (dropout.cu)."""
    x = cp.ascontiguousarray(x)
    if x.dtype not in _SUFFIX:
        raise TypeError(f"dropout_apply (GPU): dtype {x.dtype} is not supported; use float32 or float64")
    T = threshold(p)
    y = cp.empty_like(x)
    if x.size:
        _launch(_function("dropout", "dropout_apply_" + _SUFFIX[x.dtype]), x.size,
                (x, y) + _key_args(p, key) + (T, x.dtype.type(1.0 / (1.0 - p)), np.int64(x.size)))
    return y


def dropout_mask(shape, p, key, dtype=np.float32):
    """The mask itself (scale where kept, 0 where dropped): dropout_apply on ones."""
    return dropout_apply(cp.ones(shape, dtype=dtype), p, key)


# ---- relu.cu ---------------------------------------------------------------------------------------
def relu_forward(x):
    """max(x, 0) of an array of any shape: one thread per value."""
    x = cp.ascontiguousarray(x)
    if x.dtype not in _SUFFIX:
        raise TypeError(f"relu_forward (GPU): dtype {x.dtype} is not supported; use float32 or float64")
    y = cp.empty_like(x)
    _launch(_function("relu", "relu_forward_" + _SUFFIX[x.dtype]), x.size, (x, y, np.int64(x.size)))
    return y


def relu_backward(gy, y):
    """The gradient of ReLU given its output y: gy where y > 0, else 0 (one thread per value)."""
    gy, y = cp.ascontiguousarray(gy), cp.ascontiguousarray(y)
    if gy.dtype not in _SUFFIX or gy.dtype != y.dtype or gy.shape != y.shape:
        raise ValueError(f"relu_backward (GPU): gy ({gy.dtype}, {tuple(gy.shape)}) and y ({y.dtype}, "
                         f"{tuple(y.shape)}) must be float32 or float64 arrays of one dtype and shape")
    gx = cp.empty_like(gy)
    _launch(_function("relu", "relu_backward_" + _SUFFIX[gy.dtype]), gy.size, (gy, y, gx, np.int64(gy.size)))
    return gx


# ---- batchnorm.cu ----------------------------------------------------------------------------------
BN_MAX_THREADS = 256  # the size of the shared arrays of batchnorm.cu's block sums


def _bn_geometry(x):
    """(N, C, HW, S, threads): S slices per channel, each summed by one block of `threads` threads.

    S is chosen so that a thread adds about 16 values: enough blocks to fill the GPU, few enough partial
    sums (at most 32 per channel) for the elementwise pass to re-add cheaply."""
    N, C, H, W = x.shape
    _check_index_range("batch norm", x=x.size)
    threads = min(rt.THREADS, BN_MAX_THREADS)
    S = max(1, min(32, -(-N * H * W // (threads * 16))))
    return N, C, H * W, S, threads


def _bn_plan(x, kernel, relu, update=None, eps=None, momentum=None):
    """(C, sums, main) of one direction of batch norm: the block-sum launch (kernel, grid, block, scalars,
    partial size) and the elementwise launch (a grid-stride plan). The forward kernel also takes update, eps
    and momentum."""
    N, C, HW, S, threads = _bn_geometry(x)
    suffix = _SUFFIX[x.dtype]
    sums = (_function("batchnorm", kernel + "_sums_" + suffix), (min(C * S, rt.MAX_BLOCKS),), (threads,),
            _ints(N, C, HW, S, relu), C * S * 2)
    scalars = (_ints(N, C, HW, S, relu) if update is None else
               _ints(N, C, HW, S, update, relu) + (np.float64(eps), np.float64(momentum)))
    return C, sums, _grid_stride("batchnorm", kernel + "_" + suffix, x.size, scalars)


def _bn_sums(sums, arrays, drop=()):
    fn, grid, block, scalars, size = sums
    partial = cp.empty(size, dtype=np.float64)
    fn(grid, block, arrays + (partial,) + scalars + drop)
    return partial


def _bn_dropout(p, key):
    """The kernels' last five arguments: (on, key, key_offset, threshold, scale) of a dropout fused behind the
    batch norm."""
    on, T, scale = _plan(("bn dropout", p), lambda: (np.int32(p > 0), threshold(p), np.float64(1.0 / (1.0 - p))))
    return (on,) + _key_args(p, key) + (T, scale)


def batch_norm_forward(x, gamma, beta, eps, running_mean=None, running_var=None, momentum=0.1, relu=False,
                       dropout_p=0.0, dropout_key=0):
    """Training-mode batch norm of x (N, C, H, W), or of relu(x) when `relu`: returns y, and the batch mean,
    variance and 1/std per channel; running_mean and running_var, when given, are updated in place (as in
    batchnorm.py). With dropout_p > 0, y is dropout_apply(y, dropout_p, dropout_key), in the same pass.

    Two launches (batchnorm.cu): the per-channel sums in C*S blocks, then one thread per value (whose
    thread of value 0 of each channel also writes the statistics and updates the running ones)."""
    x = _float_array(x, "x", "batch_norm_forward", 4)
    gamma, beta = _channel_vector(gamma, "gamma", x), _channel_vector(beta, "beta", x)
    update = running_mean is not None
    relu = bool(relu)
    C, sums, main = _plan(("bn forward", x.shape, x.dtype, relu, update, eps, momentum),
                          lambda: _bn_plan(x, "batch_norm_forward", relu, update, eps, momentum))
    if update:
        for name, a in (("running_mean", running_mean), ("running_var", running_var)):
            if not isinstance(a, cp.ndarray) or a.dtype != x.dtype or a.shape != (C,) or not a.flags.c_contiguous:
                raise ValueError(f"batch_norm_forward (GPU): {name} must be a contiguous {x.dtype} CuPy array of "
                                 f"shape ({C},) (it is updated in place), got {type(a).__name__} "
                                 f"{getattr(a, 'dtype', '')} {tuple(getattr(a, 'shape', ()))}")
    partial = _bn_sums(sums, (x,))
    y = cp.empty(x.shape, dtype=x.dtype)
    mean, var, invstd = cp.empty((3, C), dtype=x.dtype)  # one allocation
    _run(main, (x, partial, gamma, beta, y, mean, var, invstd,
                running_mean if update else mean, running_var if update else var), _bn_dropout(dropout_p, dropout_key))
    return y, mean, var, invstd


def batch_norm_backward(gy, x, mean, invstd, gamma, relu=False, dropout_p=0.0, dropout_key=0):
    """Gradients (gx, dgamma, dbeta) of training-mode batch norm, recomputing xhat from x, mean and invstd
    (of relu(x), and gx times the ReLU's gradient, when `relu`; gy through the fused dropout's mask first)."""
    gy = _float_array(gy, "gy", "batch_norm_backward", 4)
    x = _float_array(x, "x", "batch_norm_backward", 4)
    if gy.shape != x.shape or gy.dtype != x.dtype:
        raise ValueError(f"batch_norm_backward (GPU): gy {tuple(gy.shape)} {gy.dtype} does not match "
                         f"x {tuple(x.shape)} {x.dtype}")
    mean, invstd, gamma = (_channel_vector(a, name, x) for a, name in
                           ((mean, "mean"), (invstd, "invstd"), (gamma, "gamma")))
    relu = bool(relu)
    C, sums, main = _plan(("bn backward", x.shape, x.dtype, relu), lambda: _bn_plan(x, "batch_norm_backward", relu))
    drop = _bn_dropout(dropout_p, dropout_key)
    partial = _bn_sums(sums, (gy, x, mean), drop)
    gx = cp.empty(x.shape, dtype=x.dtype)
    dgamma, dbeta = cp.empty((2, C), dtype=x.dtype)  # one allocation
    _run(main, (gy, x, mean, invstd, gamma, partial, gx, dgamma, dbeta), drop)
    return gx, dgamma, dbeta


def _channel_vector(a, name, x):
    """A per-channel vector of x's dtype and C values, contiguous (converted when it is not)."""
    if not isinstance(a, cp.ndarray):
        raise TypeError(f"batch norm (GPU): {name} must be a CuPy array, got {type(a).__module__}.{type(a).__name__}")
    if a.shape != (x.shape[1],):
        raise ValueError(f"batch norm (GPU): {name} must have shape ({x.shape[1]},) for x of shape "
                         f"{tuple(x.shape)}, got {tuple(a.shape)}")
    return cp.ascontiguousarray(a.astype(x.dtype, copy=False))


def _address(a):
    """The device address of a's first element (the host emulation in the tests replaces this)."""
    return a.data.ptr


_grad_table = [None, None]  # accumulate_grads' last table: (its bytes on the host, the device copy)


def accumulate_grads(dsts, srcs):
    """dsts[k] += srcs[k] for every k, in place: one launch for all K pairs of one dtype (a table of addresses
    copied to the device), not K. The table is copied only when it differs from the last one (an eager step
    allocates its gradients in the same order every time, so the memory pool usually hands out the same
    addresses). While a CUDA graph is captured, one add per pair (a copy from host memory cannot be recorded)."""
    groups = {}
    for d, s in zip(dsts, srcs):
        if not isinstance(d, cp.ndarray) or not d.flags.c_contiguous or d.dtype not in _SUFFIX:
            raise ValueError(f"accumulate_grads (GPU): every destination must be a C-contiguous float32/float64 "
                             f"CuPy array (updated in place), got {type(d).__name__} {getattr(d, 'dtype', '')}")
        if s.shape != d.shape:
            raise ValueError(f"accumulate_grads (GPU): a source of shape {tuple(s.shape)} for a destination of "
                             f"shape {tuple(d.shape)}")
        if s.dtype != d.dtype or not s.flags.c_contiguous:
            s = cp.ascontiguousarray(s.astype(d.dtype, copy=False))
        pairs = groups.get(d.dtype)
        if pairs is None:
            pairs = groups[d.dtype] = []
        pairs.append((d, s))
    if _capturing():
        for pairs in groups.values():
            for d, s in pairs:
                d += s
        return
    for dtype, pairs in groups.items():
        rows = np.array([(_address(d), _address(s), d.size) for d, s in pairs], dtype=np.int64)
        key = rows.tobytes()
        if _grad_table[0] != key:
            _grad_table[:] = key, cp.asarray(rows)
        _launch(_function("optim", "accumulate_grads_" + _SUFFIX[dtype]), int(rows[:, 2].max()),
                (_grad_table[1], np.int32(len(pairs))))


# ---- cross_entropy.cu ------------------------------------------------------------------------------
def _labels(t, N, op):
    if not isinstance(t, cp.ndarray) or t.shape != (N,) or t.dtype.kind not in "iu":
        raise ValueError(f"{op} (GPU): t must be a CuPy integer array of shape ({N},), got {type(t).__name__} "
                         f"{getattr(t, 'dtype', '')} {tuple(getattr(t, 'shape', ()))}")
    return cp.ascontiguousarray(t.astype(np.int64, copy=False))


CE_MAX_THREADS = 256  # cross_entropy.cu's shared array


def cross_entropy_forward(x, t, divisor=1):
    """(losses (N,), softmax p (N, K), reduced = sum of the losses / divisor, 0-d) of logits x (N, K) against
    labels t (N,): one launch of one block (a thread per row, the losses added as a tree)."""
    x = _float_array(x, "x", "cross_entropy_forward", 2)
    N, K = x.shape
    t = _labels(t, N, "cross_entropy_forward")
    losses, p = cp.empty(N, dtype=x.dtype), cp.empty_like(x)
    reduced = cp.empty((), dtype=x.dtype)
    _function("cross_entropy", "cross_entropy_forward_" + _SUFFIX[x.dtype])(
        (1,), (min(rt.THREADS, CE_MAX_THREADS),), (x, t, losses, p, reduced) + _ints(N, K) + (np.float64(divisor),))
    return losses, p, reduced


def cross_entropy_backward(p, t, gy, divisor):
    """The logits' gradient (p - onehot(t)) * gy / divisor: gy one value (mean or sum) or N values; one launch."""
    p = _float_array(p, "p", "cross_entropy_backward", 2)
    N, K = p.shape
    t = _labels(t, N, "cross_entropy_backward")
    if not isinstance(gy, cp.ndarray) or gy.dtype != p.dtype:
        gy = cp.asarray(gy, dtype=p.dtype)
    gy = cp.ascontiguousarray(gy).reshape(-1)
    if gy.size not in (1, N):
        raise ValueError(f"cross_entropy_backward (GPU): gy must hold 1 or {N} values, got {gy.size}")
    gx = cp.empty_like(p)
    _launch(_function("cross_entropy", "cross_entropy_backward_" + _SUFFIX[p.dtype]), p.size,
            (p, t, gy, np.int32(1 if gy.size > 1 else 0), p.dtype.type(divisor), gx) + _ints(N, K))
    return gx


# ---- matrix products -------------------------------------------------------------------------------
# Who multiplies (minicnn.config's `gemm`): "gemm" -- gemm.cu, our tiled kernel, everywhere (the default); "cupy"
# -- cupy.matmul, i.e. cuBLAS. An eager eip4 step is host-bound (about 1.3 ms of GPU work in a 6-9 ms step):
# measured on an H200 in interleaved rounds (benchmarks/README.md), the step took 9.11 ms with gemm.cu and
# 10.50 ms with cupy.matmul, though cuBLAS's kernels are faster on the GPU (about 330 against 570 us per step);
# each cuBLAS call costs the host more. gemm.cu is also what a CUDA graph must use (CuPy refuses cuBLAS calls
# during stream capture), so eager steps and replays run the same kernels. "cupy" suits much larger layers.
GEMM_ROUTES = ("gemm", "cupy")


def matmul(a, b, bias=None, route="gemm"):
    """a @ b (leading dimensions broadcast), plus bias[i] on row i when given, by `route`; gemm.cu while a CUDA
    graph is captured."""
    if route == "gemm" or _capturing():
        return gemm(a, b, bias)
    if route != "cupy":
        raise ValueError(f"matmul (GPU): route must be one of {GEMM_ROUTES}, got {route!r}")
    if a.ndim == b.ndim == 3 and a.shape[0] == b.shape[0] == 1:
        c = cp.matmul(a[0], b[0])[None]  # one group: CuPy's 2-D path, a single cuBLAS call
    else:
        c = cp.matmul(a, b)
    if bias is not None:
        c += bias.reshape(-1, 1)
    return c


# ---- gemm.cu ---------------------------------------------------------------------------------------
GEMM_TILE = 16            # gemm.cu's TILE: blocks of GEMM_TILE**2 threads, one output tile each
GEMM_BLOCKS_WANTED = 528  # about 4 blocks per multiprocessor of an H100: fewer output tiles -> split the k sum


def _as_batch(a, batch_shape):
    """a broadcast to batch_shape + its last two dimensions, as (batch, rows, columns) (a view where possible)."""
    a = cp.broadcast_to(a, tuple(batch_shape) + tuple(a.shape[-2:]))
    a = a.reshape((-1,) + tuple(a.shape[-2:]))
    if any(s < 0 for s in a.strides):
        a = cp.ascontiguousarray(a)
    return a


def _stack(m, batch_shape, batch):
    """m as `batch` matrices: (array, its element strides (batch, row, column)); a broadcast batch has stride 0.
    The usual shapes (2-D, or 3-D against a 1-D batch) take no CuPy call; others go through _as_batch."""
    if m.ndim == 2 or (m.ndim == 3 and len(batch_shape) == 1):
        strides = tuple(s // m.itemsize for s in m.strides[-2:])
        lead = 0 if m.ndim == 2 or m.shape[0] == 1 else m.strides[0] // m.itemsize
        if lead >= 0 and min(strides) >= 0:
            return m, (lead,) + strides
    m = _as_batch(m, batch_shape)
    return m, tuple(0 if n == 1 else s // m.itemsize for n, s in zip((batch,) + m.shape[1:], m.strides))


def _gemm_plan(a, b):
    """Everything gemm's launches need that depends only on the shapes, strides and dtypes of a and b (and the
    launch settings): checked and computed once per such combination, then kept by _plan."""
    for name, m in (("a", a), ("b", b)):
        if not isinstance(m, cp.ndarray):
            raise TypeError(f"gemm (GPU): {name} must be a CuPy array, got {type(m).__module__}.{type(m).__name__}")
        if m.dtype not in _SUFFIX or m.ndim < 2:
            raise ValueError(f"gemm (GPU): {name} must be a float32/float64 array of at least 2 dimensions, "
                             f"got dtype {m.dtype} and shape {tuple(m.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(f"gemm (GPU): a is {a.dtype} but b is {b.dtype}")
    (M, K), (K2, N) = a.shape[-2:], b.shape[-2:]
    if K != K2:
        raise ValueError(f"gemm (GPU): inner dimensions differ: {tuple(a.shape)} @ {tuple(b.shape)} ({K} != {K2})")
    lead_a, lead_b = a.shape[:-2], b.shape[:-2]  # the batch shape, without NumPy's broadcasting for the usual cases
    batch_shape = (lead_a if lead_a == lead_b or not lead_b else lead_b if not lead_a
                   else tuple(np.broadcast_shapes(lead_a, lead_b)))
    batch = math.prod(batch_shape)
    a3, sa = _stack(a, batch_shape, batch)
    b3, sb = _stack(b, batch_shape, batch)
    tiles = batch * -(-M // GEMM_TILE) * -(-N // GEMM_TILE)
    S = 1
    if 0 < tiles < GEMM_BLOCKS_WANTED:
        S = max(1, min(-(-GEMM_BLOCKS_WANTED // tiles), -(-K // GEMM_TILE)))
    KS = -(-max(K, 1) // S)
    KS = -(-KS // GEMM_TILE) * GEMM_TILE
    S = max(1, -(-K // KS))
    suffix = _SUFFIX[a.dtype]
    plan = dict(views=a3 is a and b3 is b, batch_shape=batch_shape, out=(batch, S, M, N), zero=K == 0,
                result=batch_shape + (M, N), launch=None, sum=None)
    if batch * M * N and K:
        plan["launch"] = (_function("gemm", "gemm_" + suffix), (min(tiles * S, rt.MAX_BLOCKS),),
                          _ints(batch, M, N, K, S, KS) + tuple(np.int64(s) for s in sa + sb))
    if S > 1:  # the S partial products, added in slice order by one thread per output value
        total = batch * M * N
        plan["sum"] = (_function("gemm", "gemm_sum_slices_" + suffix), (min(-(-total // rt.THREADS), rt.MAX_BLOCKS),),
                       (np.int64(M * N), np.int64(N), np.int32(S), np.int64(total)))
    return plan


_NO, _YES = np.int32(0), np.int32(1)


def gemm(a, b, bias=None):
    """a @ b with the tiled kernel of gemm.cu: any strides, leading dimensions broadcast, k split when the
    output has few tiles (the S partial products are then added in a fixed order). bias (M,): added to row i
    of every product, in the same launches.

    An eager training step calls this about 23 times with the same few shapes, so the checks and the launch
    arguments are worked out once per (shapes, strides, dtypes) and looked up afterwards: a call then costs a
    dictionary lookup, one allocation and one or two launches."""
    plan = _plan(("gemm", getattr(a, "shape", None), getattr(a, "strides", None), getattr(a, "dtype", None),
                  getattr(b, "shape", None), getattr(b, "strides", None), getattr(b, "dtype", None),
                  type(a), type(b), GEMM_BLOCKS_WANTED), lambda: _gemm_plan(a, b))
    if not plan["views"]:  # an unusual broadcast: _stack copies or broadcasts, so redo it for these arrays
        batch = plan["out"][0]
        a, b = _stack(a, plan["batch_shape"], batch)[0], _stack(b, plan["batch_shape"], batch)[0]
    out = cp.empty(plan["out"], dtype=a.dtype)
    with_bias = (out, _NO) if bias is None else (_bias_vector(bias, plan["out"][2], a.dtype), _YES)
    if plan["launch"] is not None:
        fn, grid, scalars = plan["launch"]
        fn(grid, (GEMM_TILE * GEMM_TILE,), (a, b, out) + with_bias + scalars)
    elif plan["zero"] and out.size:
        out.fill(0)
        if bias is not None:  # no k to sum: the product is the bias alone
            out += with_bias[0].reshape(-1, 1)
    if plan["sum"] is None:
        return out.reshape(plan["result"])
    fn, grid, scalars = plan["sum"]
    c = cp.empty(plan["result"], dtype=a.dtype)
    fn(grid, (rt.THREADS,), (out, c) + with_bias + scalars)
    return c


def _bias_vector(bias, M, dtype):
    if not isinstance(bias, cp.ndarray) or bias.shape != (M,) or bias.dtype != dtype:
        raise ValueError(f"gemm (GPU): bias must be a {dtype} CuPy array of shape ({M},), one value per row, got "
                         f"{type(bias).__name__} {getattr(bias, 'dtype', '')} {tuple(getattr(bias, 'shape', ()))}")
    return cp.ascontiguousarray(bias)


def sum_leading(a):
    """The sum over the first axis of a CuPy array (B, ...) -> (...), adding b = 0, 1, ... in order: gemm.cu's
    gemm_sum_slices with the B sub-arrays as its slices (one thread per output value)."""
    a = cp.ascontiguousarray(a)
    if a.dtype not in _SUFFIX or a.ndim < 1:
        raise ValueError(f"sum_leading (GPU): a must be a float32/float64 array of at least 1 dimension, "
                         f"got dtype {a.dtype} and shape {tuple(a.shape)}")
    shape, launch = _plan(("sum leading", a.shape, a.dtype), lambda: _sum_leading_plan(a))
    out = cp.empty(shape, dtype=a.dtype)
    if a.shape[0] == 0:
        out.fill(0)
    else:
        _run(launch, (a, out, a))  # the third pointer is the unused bias
    return out


def _sum_leading_plan(a):
    B, shape = a.shape[0], a.shape[1:]
    MN = math.prod(shape)
    return shape, _grid_stride("gemm", "gemm_sum_slices_" + _SUFFIX[a.dtype], MN if B else 0,
                               (_NO, np.int64(MN), np.int64(1), np.int32(B), np.int64(MN)))


SUM_MAX_THREADS = 256  # gemm.cu's shared array for sum_rows


def sum_rows(a):
    """The sums of the rows of a 2-D CuPy array (R, L) -> (R,): one block per row, a fixed-order tree (gemm.cu)."""
    a = _float_array(a, "a", "sum_rows", 2)
    R, L = a.shape
    out = cp.empty(R, dtype=a.dtype)
    if R:
        if L == 0:
            out.fill(0)
        else:
            _function("gemm", "sum_rows_" + _SUFFIX[a.dtype])((min(R, rt.MAX_BLOCKS),), (min(rt.THREADS, SUM_MAX_THREADS),),
                                                              (a, out, np.int32(R), np.int64(L)))
    return out


# ---- optim.cu --------------------------------------------------------------------------------------
def adam_update(p, g, m, v, lr, beta1, beta2, eps, step, weight_decay=0.0, decoupled=False):
    """One Adam (or AdamW when decoupled) step on flat CuPy arrays p, g, m, v, in place: one launch."""
    suffix, n = _flat_buffers("adam_update", p=p, g=g, m=m, v=v)
    if step < 1:
        raise ValueError(f"adam_update (GPU): step counts from 1, got {step}")
    bc1, bc2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
    if _capturing():
        frozen_scalars.append("Adam step count")
    _launch(_function("optim", "adam_update_" + suffix), n,
            (p, g, m, v, np.int64(n), np.float64(lr), np.float64(beta1), np.float64(beta2), np.float64(eps),
             np.float64(bc1), np.float64(bc2), np.float64(weight_decay), np.int32(bool(decoupled))))


def sgd_update(p, g, buf, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """One SGD step (momentum, Nesterov, L2 weight decay) on flat CuPy arrays p, g, buf, in place: one launch."""
    suffix, n = _flat_buffers("sgd_update", p=p, g=g, buf=buf)
    _launch(_function("optim", "sgd_update_" + suffix), n,
            (p, g, buf, np.int64(n), np.float64(lr), np.float64(momentum), np.float64(weight_decay),
             np.int32(bool(nesterov))))

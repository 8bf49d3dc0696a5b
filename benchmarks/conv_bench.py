"""Forward and backward time of minicnn's conv2d on the MNIST model's layer shapes, against plain NumPy and PyTorch.

    PYTHONPATH=. python benchmarks/conv_bench.py [--threads N] [--repeats R] [--warmup W] [--batch B]

minicnn:  F.conv2d: stride-1 layers without the column matrix where a register tile fits: forward by the direct
          convolution (kernels/conv_direct.py, or kernels/conv_lanes.py with the output channels as the lanes),
          backward on gy laid out as rows (kernels/conv_direct_grad.py); otherwise im2col on the wide grid + BLAS
          GEMMs and col2im; 1x1 stride-1 layers skip im2col. A second table times the column kernels alone.
im2col:   minicnn with the direct convolution switched off (kernels.cpu.direct_conv = False): what it buys.
numpy:    the same GEMMs around kernels/im2col.py's plain NumPy im2col_numpy / col2im_numpy (no Numba, no fast path).
torch:    torch.nn.functional.conv2d on the same thread count (only when PyTorch is installed).
Every number is the median of the timed calls: the implementations run in rounds, each round BLOCK calls of each in
turn, the first untimed (see interleaved_medians); the ratios come from the same run (ratio > 1: minicnn is faster).
Backward computes the gradients of the input, the weight and the bias.
Threads: numba.set_num_threads and torch.set_num_threads get --threads; BLAS is limited with threadpoolctl when it
is installed, otherwise an explicit --threads is passed to BLAS through OPENBLAS/OMP/MKL_NUM_THREADS (unless set).
"""
import argparse
import contextlib
import os
import platform
import statistics
import sys
import time

LAYERS = [  # (name, C, H, W, OC, K): the convolutions of the MNIST example network, batch given by --batch
    ("conv1 1->16 3x3 @28x28", 1, 28, 28, 16, 3),
    ("conv2 16->16 3x3 @26x26", 16, 26, 26, 16, 3),
    ("conv3 16->10 1x1 @24x24", 16, 24, 24, 10, 1),
    ("conv4 10->16 3x3 @12x12", 10, 12, 12, 16, 3),
    ("conv5 16->16 3x3 @10x10", 16, 10, 10, 16, 3),
    ("conv6 16->16 3x3 @8x8", 16, 8, 8, 16, 3),
    ("conv7 16->16 3x3 @6x6", 16, 6, 6, 16, 3),
    ("conv8 16->10 4x4 @4x4", 16, 4, 4, 10, 4),
]


def parse_args():
    default_threads = int(os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count() or 1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=default_threads,
                   help=f"threads for Numba, BLAS and PyTorch (default: NUMBA_NUM_THREADS or cpu count = {default_threads})")
    p.add_argument("--repeats", type=int, default=6, help=f"timed rounds ({BLOCK - 1} timed calls each per "
                   "implementation; median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (JIT compilation, caches)")
    p.add_argument("--batch", type=int, default=128)
    return p.parse_args()


def _early_threads():
    """--threads as parsed before NumPy loads (the BLAS thread count can only be set by environment before that)."""
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return None


try:
    import threadpoolctl  # noqa: F401  (optional: limits BLAS threads after NumPy has loaded)
except ImportError:
    threadpoolctl = None
    # Fallback: give BLAS --threads through the environment, unless the user already set these variables.
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        if _early_threads() is not None:
            os.environ.setdefault(_var, _early_threads())

import numba  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import minicnn  # noqa: E402
import minicnn.functional as F  # noqa: E402
from minicnn import Tensor  # noqa: E402
from minicnn.kernels.im2col import col2im_numpy, im2col_numpy, out_size  # noqa: E402

try:
    import torch
except ImportError:
    torch = None


@contextlib.contextmanager
def columns_only():
    """The CPU backend's direct convolution switched off inside: im2col + GEMM in forward and backward."""
    from minicnn.kernels import cpu
    saved, cpu.direct_conv = cpu.direct_conv, False
    try:
        yield
    finally:
        cpu.direct_conv = saved


def without_direct(timer):
    """(fn, setup) with both run through the columns (columns_only)."""
    fn, setup = timer

    def wrapped_setup():
        with columns_only():
            return setup()

    def wrapped(s):
        with columns_only():
            fn(s)
    return wrapped, wrapped_setup


def bench_minicnn_im2col(x, w, b, gy):
    """minicnn as before the direct convolution: im2col + GEMM in both passes."""
    fwd, bwd, y = bench_minicnn(x, w, b, gy)
    return without_direct(fwd), without_direct(bwd), y


BLOCK = 4  # calls per implementation in a row, in every round


def time_once(fn, setup):
    """Seconds of one fn(state), state = setup() prepared untimed."""
    state = setup()
    t0 = time.perf_counter()
    fn(state)
    return time.perf_counter() - t0


def interleaved_medians(timers, repeats, warmup, block=BLOCK):
    """Median seconds of each (fn, setup) in timers, timed in rounds: per round, `block` calls of each in turn, the
    first of each block untimed. A slower or faster spell of a shared machine falls on every implementation alike,
    and each block starts after the previous one has settled: PyTorch's OpenMP threads keep spinning for a few
    milliseconds after each call, which slows whatever runs next on a 2-core machine."""
    times = [[] for _ in timers]
    for i in range(warmup + repeats):
        for k, (fn, setup) in enumerate(timers):
            for j in range(block):
                t = time_once(fn, setup)
                if i >= warmup and j > 0:
                    times[k].append(t)
    return [statistics.median(ts) for ts in times]


# ---- the implementations: each returns ((fwd, setup), (bwd, setup), output for a sanity check) -------------------

def bench_minicnn(x, w, b, gy):
    def fwd_setup():
        return Tensor(x, requires_grad=True), Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)

    def fwd(s):
        F.conv2d(*s)

    def bwd_setup():
        xt, wt, bt = fwd_setup()
        return F.conv2d(xt, wt, bt), gy

    def bwd(s):
        s[0].backward(s[1])

    y = F.conv2d(*fwd_setup()).data
    return (fwd, fwd_setup), (bwd, bwd_setup), y


def numpy_conv_forward(x, w, b):
    N, C, H, W = x.shape
    OC, _, KH, KW = w.shape
    OH, OW = out_size(H, KH, 1, 0, 1), out_size(W, KW, 1, 0, 1)
    col = im2col_numpy(x, KH, KW)
    y = (w.reshape(OC, -1) @ col.reshape(C * KH * KW, -1)).reshape(OC, N, OH, OW).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(y + b.reshape(1, OC, 1, 1)), col


def numpy_conv_backward(gy, col, w, H, W):
    OC, C, KH, KW = w.shape
    N, _, OH, OW = gy.shape
    gy_mat = np.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(OC, -1)
    gw = (gy_mat @ col.reshape(C * KH * KW, -1).T).reshape(w.shape)
    gx = col2im_numpy((w.reshape(OC, -1).T @ gy_mat).reshape(C, KH, KW, N, OH, OW), H, W)
    return gx, gw, gy.sum(axis=(0, 2, 3))


def bench_numpy(x, w, b, gy):
    H, W = x.shape[2:]
    col = numpy_conv_forward(x, w, b)[1]
    return ((lambda s: numpy_conv_forward(x, w, b), lambda: None),
            (lambda s: numpy_conv_backward(gy, col, w, H, W), lambda: None), numpy_conv_forward(x, w, b)[0])


def bench_torch(x, w, b, gy):
    X, Wt, B, GY = (torch.from_numpy(a) for a in (x, w, b, gy))

    def fwd_setup():
        return X.clone().requires_grad_(), Wt.clone().requires_grad_(), B.clone().requires_grad_()

    def fwd(s):
        torch.nn.functional.conv2d(*s)

    def bwd_setup():
        return torch.nn.functional.conv2d(*fwd_setup())

    def bwd(y):
        y.backward(GY)

    with torch.no_grad():
        y = torch.nn.functional.conv2d(X, Wt, B).numpy()
    return (fwd, fwd_setup), (bwd, bwd_setup), y


def blas_threads():
    """'N (library)' for each BLAS threadpoolctl sees, or a note when threadpoolctl is not installed."""
    if threadpoolctl is None:
        env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "library default"
        return f"BLAS threads: {env} (from the environment; threadpoolctl not installed)"
    info = [f"{d['internal_api']} {d['num_threads']}" for d in threadpoolctl.threadpool_info()
            if d.get("user_api") == "blas"]
    return "BLAS threads: " + (", ".join(info) or "no BLAS found")


def main():
    args = parse_args()
    threads = args.threads
    if threads > numba.config.NUMBA_NUM_THREADS:
        print(f"note: --threads {threads} > NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}; Numba uses "
              f"{numba.config.NUMBA_NUM_THREADS} (set NUMBA_NUM_THREADS before starting to raise it)")
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    limiter = threadpoolctl.threadpool_limits(limits=threads) if threadpoolctl else None
    if torch is not None:
        torch.set_num_threads(threads)

    print(f"machine : {platform.machine()} {platform.processor() or '(processor unknown)'}, "
          f"{os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}")
    print(f"threads : {threads} (Numba {numba.get_num_threads()}, "
          f"{blas_threads()}{', torch ' + str(torch.get_num_threads()) if torch else ''})")
    print("load    : %.2f %.2f %.2f (1, 5, 15 min load average at the start)" % os.getloadavg())
    print(f"versions: python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"minicnn {minicnn.__version__}, torch {torch.__version__ if torch else 'not installed'}")
    print(f"setup   : float32, batch {args.batch}, {args.repeats} rounds after {args.warmup} warm-up round(s); each round "
          f"{BLOCK} calls of every implementation in turn,\n          the first untimed; median of the timed calls in ms; "
          "ratio = other / minicnn (> 1: minicnn faster)\n")

    impls = [("minicnn", bench_minicnn), ("im2col", bench_minicnn_im2col), ("numpy", bench_numpy)] + ([("torch", bench_torch)] if torch else [])
    header = f"{'layer':<25} {'pass':<4}" + "".join(f" {name:>9}" for name, _ in impls)
    header += "".join(f" {name + '/mc':>9}" for name, _ in impls[1:])
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for name, C, H, W, OC, K in LAYERS:
        x = rng.standard_normal((args.batch, C, H, W), dtype=np.float32)
        w = rng.standard_normal((OC, C, K, K), dtype=np.float32) * np.float32(1 / np.sqrt(C * K * K))
        b = rng.standard_normal(OC, dtype=np.float32)
        gy = rng.standard_normal((args.batch, OC, H - K + 1, W - K + 1), dtype=np.float32)
        results = [fn(x, w, b, gy) for _, fn in impls]
        for _, _, y in results[1:]:  # the comparison is only fair if every implementation computes the same thing
            np.testing.assert_allclose(results[0][2], y, rtol=1e-3, atol=1e-3)
        medians = interleaved_medians([res[p] for p in (0, 1) for res in results], args.repeats, args.warmup)
        for p, label in ((0, "fwd"), (1, "bwd")):
            times = medians[p * len(results):(p + 1) * len(results)]
            row = f"{name:<25} {label:<4}" + "".join(f" {1e3 * t:>9.2f}" for t in times)
            row += "".join(f" {t / times[0]:>9.2f}" for t in times[1:])
            print(row, flush=True)
    column_kernels(args)
    if limiter is not None:
        limiter.unregister()


def column_kernels(args):
    """What the wide grid buys: im2col / col2im of each 3x3 layer, classic (Numba and NumPy) against wide, one thread."""
    from minicnn.kernels.im2col import col2im, col2im_numpy, col2im_wide, im2col, im2col_numpy, im2col_wide
    print("\ncolumn kernels, whole batch on one thread (ms; the convolution runs them in cache-sized chunks):")
    header = f"{'layer':<25} {'im2col':>8} {'numpy':>8} {'wide':>8} {'col2im':>8} {'numpy':>8} {'wide':>8}"
    print(header + "\n" + "-" * len(header))
    rng = np.random.default_rng(0)
    for name, C, H, W, OC, K in LAYERS:
        if K == 1:
            continue
        x = rng.standard_normal((args.batch, C, H, W), dtype=np.float32)
        col, wide = im2col(x, K, K), im2col_wide(x, K, K)
        gcol = col.copy()
        gwide = np.zeros_like(wide)
        gwide[..., :col.shape[-1]] = col
        times = interleaved_medians([(fn, lambda: None) for fn in (
            lambda _: im2col(x, K, K), lambda _: im2col_numpy(x, K, K), lambda _: im2col_wide(x, K, K),
            lambda _: col2im(gcol, H, W), lambda _: col2im_numpy(gcol, H, W), lambda _: col2im_wide(gwide, H))],
            args.repeats, args.warmup)
        print(f"{name:<25}" + "".join(f" {1e3 * t:>8.2f}" for t in times), flush=True)


if __name__ == "__main__":
    main()

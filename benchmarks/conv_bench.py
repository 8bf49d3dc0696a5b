"""Forward and backward milliseconds of each eip4 convolution layer: minicnn's default route, its lesson path, PyTorch.

    python benchmarks/conv_bench.py --threads 2                     # every layer, batch 128
    python benchmarks/conv_bench.py --threads 2 --repeats 1 --warmup 1 --impls auto,im2col,torch   # a quick look

Implementations (--impls, comma-separated; all in this one process, timed in interleaved rounds):

    auto     F.conv2d under the default configuration (config conv="auto", Numba kernels): the CPU backend
             picks an algorithm for each layer's shape (kernels/cpu_fast/plan.py); the "auto runs" column
             names it (F.conv2d_algorithm)
    im2col   F.conv2d under config.using(conv="im2col"): the lesson path (im2col, one GEMM, col2im) with the
             Numba kernels
    numpy    F.conv2d under config.using(kernels="numpy"): the plain-NumPy backend (the lesson path, except the
             1x1 and whole-image layers, which are one matrix product)
    torch    torch.nn.functional.conv2d (skipped, saying so, when PyTorch is not installed)

Table "layers" (one fwd and one bwd row per layer):

    fwd      the forward pass, y = conv2d(x, w, b), inputs that require gradients (as in training)
    bwd      the backward pass of a fresh forward: the gradients of the input, the weight and the bias
    auto ... torch      milliseconds, the median of the timed calls (see below)
    NAME/auto           that implementation's time / auto's (> 1: auto is faster)
    auto runs           the algorithm auto chose for the layer

Table "column kernels": milliseconds of im2col (x -> the column matrix) and col2im (its adjoint) of each
layer with a kernel larger than 1x1, whole batch, as the contract functions of each CPU backend run them
(minicnn.backend.kernels_for(x) under config kernels="numba" and "numpy"); both run on one thread.

Timing: the implementations run in rounds (--repeats timed rounds after --warmup untimed ones); each round
makes BLOCK calls of each implementation in turn and times all but the first, so a slow spell of a shared
machine falls on every implementation alike. Every output is checked against auto's before timing.
Threads: numba.set_num_threads and torch.set_num_threads get --threads; BLAS gets --blas-threads (default 1,
as `import minicnn` sets it: minicnn parallelises over the batch itself). The last line of the output is
one JSON object with every number, for scripts.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def _early_option(name):
    """The value of --name as given on the command line, read before NumPy loads (BLAS reads its threads then)."""
    for i, a in enumerate(sys.argv):
        if a == name and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


for _var in BLAS_VARIABLES:
    os.environ[_var] = _early_option("--blas-threads") or "1"

import numba  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import minicnn  # noqa: E402
import minicnn.backend as backend  # noqa: E402
import minicnn.functional as F  # noqa: E402
from minicnn import Tensor, config  # noqa: E402
from train_bench import cpu_model  # noqa: E402

try:
    import threadpoolctl
except ImportError:
    threadpoolctl = None
try:
    import torch
except ImportError:
    torch = None

LAYERS = [  # (name, C, H, W, OC, K): the convolutions of eip4 (minicnn/models/eip4.py), batch given by --batch
    ("conv1 1->16 3x3 @28x28", 1, 28, 28, 16, 3),
    ("conv2 16->16 3x3 @26x26", 16, 26, 26, 16, 3),
    ("conv3 16->10 1x1 @24x24", 16, 24, 24, 10, 1),
    ("conv4 10->16 3x3 @12x12", 10, 12, 12, 16, 3),
    ("conv5 16->16 3x3 @10x10", 16, 10, 10, 16, 3),
    ("conv6 16->16 3x3 @8x8", 16, 8, 8, 16, 3),
    ("conv7 16->16 3x3 @6x6", 16, 6, 6, 16, 3),
    ("conv8 16->10 4x4 @4x4", 16, 4, 4, 10, 4),
]
CONFIGS = {"auto": {}, "im2col": {"conv": "im2col"}, "numpy": {"kernels": "numpy"}}   # minicnn's, for config.using
IMPLEMENTATIONS = (*CONFIGS, "torch")
BLOCK = 4  # calls per implementation in a row, in every round; the first of each block is not timed


def parse_args(argv=None):
    default_threads = int(os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count() or 1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=default_threads,
                   help=f"threads for Numba and PyTorch (default: NUMBA_NUM_THREADS or all cores = {default_threads})")
    p.add_argument("--blas-threads", type=int, default=1, help="BLAS threads (default 1, as `import minicnn` sets it)")
    p.add_argument("--repeats", type=int, default=6,
                   help=f"timed rounds ({BLOCK - 1} timed calls each per implementation; the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (JIT compilation, caches)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--impls", default=",".join(IMPLEMENTATIONS),
                   help=f"comma-separated, auto first (default {','.join(IMPLEMENTATIONS)})")
    p.add_argument("--no-columns", action="store_true", help="skip the column-kernels table")
    args = p.parse_args(argv)
    args.impls = [name.strip() for name in args.impls.split(",") if name.strip()]
    unknown = [name for name in args.impls if name not in IMPLEMENTATIONS]
    if unknown or not args.impls or args.impls[0] != "auto":
        p.error(f"--impls: {','.join(args.impls) or 'empty'}: give auto first, then any of "
                f"{', '.join(IMPLEMENTATIONS[1:])}")
    for name in ("threads", "blas_threads", "repeats", "batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be at least 0, got {args.warmup}")
    return args


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


# ---- the implementations: each returns ((fwd, setup), (bwd, setup), output for the check) ----------------------
def configured(timer, changes):
    """(fn, setup) with both run under config.using(**changes): the algorithm is chosen in the forward pass and
    the backward runs the one chosen there, so the setup (which runs the forward of bwd) needs it too."""
    fn, setup = timer

    def configured_setup():
        with config.using(**changes):
            return setup()

    def configured_fn(state):
        with config.using(**changes):
            fn(state)
    return configured_fn, configured_setup


def bench_minicnn(x, w, b, gy, changes):
    def fwd_setup():
        return Tensor(x, requires_grad=True), Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)

    def fwd(s):
        F.conv2d(*s)

    def bwd_setup():
        return F.conv2d(*fwd_setup()), gy

    def bwd(s):
        s[0].backward(s[1])

    with config.using(**changes):
        y = F.conv2d(*fwd_setup()).data
    return configured((fwd, fwd_setup), changes), configured((bwd, bwd_setup), changes), y


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


def implementation(name, x, w, b, gy):
    return bench_torch(x, w, b, gy) if name == "torch" else bench_minicnn(x, w, b, gy, CONFIGS[name])


# ---- the tables ------------------------------------------------------------------------------------------------
def layer_data(rng, batch, C, H, W, OC, K):
    x = rng.standard_normal((batch, C, H, W), dtype=np.float32)
    w = rng.standard_normal((OC, C, K, K), dtype=np.float32) * np.float32(1 / np.sqrt(C * K * K))
    b = rng.standard_normal(OC, dtype=np.float32)
    gy = rng.standard_normal((batch, OC, H - K + 1, W - K + 1), dtype=np.float32)
    return x, w, b, gy


def layers_table(args, impls):
    header = f"{'layer':<25} {'pass':<4}" + "".join(f" {name:>9}" for name in impls)
    header += "".join(f" {name + '/auto':>11}" for name in impls[1:]) + "  auto runs"
    print(header + "\n" + "-" * len(header))
    rng = np.random.default_rng(0)
    rows = []
    for name, C, H, W, OC, K in LAYERS:
        x, w, b, gy = layer_data(rng, args.batch, C, H, W, OC, K)
        algorithm = F.conv2d_algorithm(x.shape, w.shape)
        results = [implementation(impl, x, w, b, gy) for impl in impls]
        for impl, (_, _, y) in zip(impls[1:], results[1:]):   # a fair race: every one computes the same thing
            np.testing.assert_allclose(y, results[0][2], rtol=1e-3, atol=1e-3, err_msg=f"{name}: {impl} against auto")
        medians = interleaved_medians([res[p] for p in (0, 1) for res in results], args.repeats, args.warmup)
        for p, label in ((0, "fwd"), (1, "bwd")):
            times = medians[p * len(results):(p + 1) * len(results)]
            row = f"{name:<25} {label:<4}" + "".join(f" {1e3 * t:>9.2f}" for t in times)
            row += "".join(f" {t / times[0]:>11.2f}" for t in times[1:])
            print(row + (f"  {algorithm}" if label == "fwd" else ""), flush=True)
            rows.append({"layer": name, "pass": label, "algorithm": algorithm,
                         "ms": {impl: 1e3 * t for impl, t in zip(impls, times)}})
    return rows


def column_kernels_table(args):
    """im2col and col2im of each layer larger than 1x1 on the contract functions of both CPU backends."""
    print("\ncolumn kernels: ms for the whole batch, one thread (the contract's im2col and col2im of each backend)")
    header = f"{'layer':<25} {'im2col numba':>13} {'numpy':>8} {'col2im numba':>13} {'numpy':>8}"
    print(header + "\n" + "-" * len(header))
    rng = np.random.default_rng(0)
    rows = []
    for name, C, H, W, OC, K in LAYERS:
        if K == 1:
            continue
        x = rng.standard_normal((args.batch, C, H, W), dtype=np.float32)
        timers = []
        for op in ("im2col", "col2im"):
            for kernels in ("numba", "numpy"):
                with config.using(kernels=kernels):
                    ops = backend.kernels_for(x)
                col = ops.im2col(x, K, K)
                timers.append((lambda _, f=ops.im2col: f(x, K, K)) if op == "im2col" else
                              (lambda _, f=ops.col2im, c=col: f(c, H, W)))
        times = interleaved_medians([(fn, lambda: None) for fn in timers], args.repeats, args.warmup)
        print(f"{name:<25} {1e3 * times[0]:>13.2f} {1e3 * times[1]:>8.2f} {1e3 * times[2]:>13.2f} "
              f"{1e3 * times[3]:>8.2f}", flush=True)
        rows.append({"layer": name, "ms": dict(zip(("im2col numba", "im2col numpy", "col2im numba", "col2im numpy"),
                                                   (1e3 * t for t in times)))})
    return rows


def blas_threads():
    """'N (library)' for each BLAS threadpoolctl sees, or the environment's setting without threadpoolctl."""
    if threadpoolctl is None:
        return f"BLAS {os.environ.get('OPENBLAS_NUM_THREADS')} (environment)"
    info = [f"{d['internal_api']} {d['num_threads']}" for d in threadpoolctl.threadpool_info()
            if d.get("user_api") == "blas"]
    return "BLAS " + (", ".join(info) or "none found")


def main(argv=None):
    args = parse_args(argv)
    impls = list(args.impls)
    if "torch" in impls and torch is None:
        impls.remove("torch")
        print("torch: not installed, the PyTorch column is skipped")
    if args.threads > numba.config.NUMBA_NUM_THREADS:
        print(f"note: --threads {args.threads} > NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}; Numba uses "
              f"{numba.config.NUMBA_NUM_THREADS} (set NUMBA_NUM_THREADS before starting to raise it)")
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    limiter = threadpoolctl.threadpool_limits(limits=args.blas_threads, user_api="blas") if threadpoolctl else None
    if torch is not None:
        torch.set_num_threads(args.threads)
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
               "numpy": np.__version__, "numba": numba.__version__, "torch": torch.__version__ if torch else None,
               "minicnn": minicnn.__version__, "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
               "load": list(os.getloadavg())}
    print(f"machine: {machine['cpu']}, {machine['cores']} cores; Python {machine['python']}, NumPy {machine['numpy']}, "
          f"Numba {machine['numba']}, PyTorch {machine['torch'] or 'not installed'}; {machine['date']}; "
          f"load {machine['load'][0]:.2f}")
    print(f"threads: Numba {numba.get_num_threads()}, {blas_threads()}"
          f"{', PyTorch ' + str(torch.get_num_threads()) if torch else ''}")
    print(f"setup: float32, batch {args.batch}, {args.repeats} timed round(s) after {args.warmup} untimed; each "
          f"round {BLOCK} calls of every implementation in turn, the first untimed; median of the timed calls in ms\n")
    report = {"machine": machine, "batch": args.batch, "repeats": args.repeats, "layers": layers_table(args, impls)}
    if not args.no_columns:
        report["column_kernels"] = column_kernels_table(args)
    if limiter is not None:
        limiter.unregister()
    print("\n" + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

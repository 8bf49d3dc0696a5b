"""Seconds per MNIST training epoch on the GPU: minicnn's eip4 (CuPy + our CUDA kernels) beside PyTorch eager.

    PYTHONPATH=. python benchmarks/gpu_bench.py                 # all contenders, defaults below
    PYTHONPATH=. python benchmarks/gpu_bench.py --steps 50 --repeats 3 --no-torch

What is timed: training steps (forward, cross-entropy, backward, Adam) of the eip4 network (Conv-ReLU-BN-
Dropout(0.1) blocks, see minicnn/models/eip4.py) on batches of 128 images that are ALREADY ON THE GPU.
The data is SYNTHETIC (uniform random 28x28 images, random labels): speed does not depend on the pixel
values, and this keeps the benchmark free of downloads. An epoch is 60,000 images = 469 steps.

For every contender two numbers are printed:
  first epoch   one full epoch (469 steps, the last of 96 images) from a cold start: NVRTC compiles our
                kernels, CuPy compiles its elementwise/reduction kernels, cuBLAS/cuDNN initialise;
  epoch         the steady state: median over --repeats runs of --steps steps, scaled to 469 steps.

Contenders:
  minicnn eager       the library as the examples use it (one Python call per op, CuPy launches);
  minicnn CUDA graph  one whole training step captured once (minicnn/cuda_graph.py: CuPy stream capture,
                      GEMMs by kernels/gemm.cu since CuPy cannot capture cuBLAS) and replayed with
                      graph.launch(); the batch is copied into static input buffers before each replay.
                      Reported only when the capture works (the reason is printed otherwise). Caveat:
                      host scalars stay frozen (the dropout keys, Adam's step count) -- the same
                      arithmetic, so the timing is representative, but it is not a training recipe;
  torch eager         the same network in PyTorch (default settings), when torch with CUDA is installed.

Needs CuPy and a CUDA device; prints the device, the versions, and the reason for anything skipped.
"""
import argparse
import os
import platform
import statistics
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import minicnn  # noqa: E402
import minicnn.backend as backend  # noqa: E402
import minicnn.functional as F  # noqa: E402
from minicnn import Tensor, optim  # noqa: E402
from minicnn.models import eip4  # noqa: E402

IMAGES, BATCH = 60_000, 128
STEPS_PER_EPOCH = -(-IMAGES // BATCH)  # 469
LR, EPS = 0.003, 1e-7                  # the eip4 recipe's Adam


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="steps per timed repeat (default 100)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported (default 3)")
    p.add_argument("--first-epoch-steps", type=int, default=STEPS_PER_EPOCH,
                   help=f"steps of the cold-start pass (default {STEPS_PER_EPOCH}, one epoch)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph capture")
    p.add_argument("--breakdown", action="store_true", help="host time per op of one eager minicnn step")
    p.add_argument("--variants", action="store_true",
                   help="also time the eager step with every product through cupy.matmul (cuBLAS) instead of "
                        "gemm.cu (kernels/gpu.py matmul_route), and with ReLU, batch norm and dropout unfused")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def versions(cp):
    import numba
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]

    def cuda_version(v):
        return f"{v // 1000}.{(v % 1000) // 10}"
    lines = [f"device  {name} (compute capability {props['major']}.{props['minor']}, "
             f"{props['totalGlobalMem'] / 2 ** 30:.0f} GiB), driver CUDA {cuda_version(cp.cuda.runtime.driverGetVersion())}, "
             f"runtime CUDA {cuda_version(cp.cuda.runtime.runtimeGetVersion())}",
             f"python  {platform.python_version()}  numpy {np.__version__}  cupy {cp.__version__}  "
             f"numba {numba.__version__}  minicnn {minicnn.__version__}"]
    return lines


def synchronize():
    backend.cupy_module().cuda.get_current_stream().synchronize()


def make_data(cp, seed):
    rng = cp.random.default_rng(seed)
    x = rng.random((IMAGES, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, IMAGES).astype(np.int64)
    return x, y


def batch(x, y, i):
    s = (i % STEPS_PER_EPOCH) * BATCH
    return x[s:s + BATCH], y[s:s + BATCH]


def full_batch(x, y, i):
    s = (i % (IMAGES // BATCH)) * BATCH  # 468 full batches: the timed repeats use only full ones
    return x[s:s + BATCH], y[s:s + BATCH]


def timed(run_steps, steps, repeats, sync):
    """Median seconds per step over `repeats` runs of `steps` steps (synchronised before and after)."""
    per_step = []
    offset = 0
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        run_steps(offset, steps)
        sync()
        per_step.append((time.perf_counter() - t0) / steps)
        offset += steps
    return statistics.median(per_step)


# ---- minicnn -------------------------------------------------------------------------------------------
def minicnn_model(seed):
    minicnn.manual_seed(seed)
    model = eip4(dropout=0.1).to("gpu")
    return model, optim.Adam(model.parameters(), lr=LR, eps=EPS)


def minicnn_step(model, opt, xb, yb):
    out = model(Tensor(xb))
    loss = F.cross_entropy(out, yb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.data


def bench_minicnn(x, y, args, fuse=True):
    model, opt = minicnn_model(args.seed)
    model.fuse = fuse  # False: ReLU, BatchNorm2d and Dropout run as separate operations (nn.Sequential.fuse)
    synchronize()
    t0 = time.perf_counter()
    for i in range(args.first_epoch_steps):
        minicnn_step(model, opt, *batch(x, y, i))
    synchronize()
    first = (time.perf_counter() - t0) * STEPS_PER_EPOCH / args.first_epoch_steps

    def run(offset, n):
        for i in range(offset, offset + n):
            minicnn_step(model, opt, *full_batch(x, y, i))
    step = timed(run, args.steps, args.repeats, synchronize)
    return first, step


def bench_with_route(route, x, y, args):
    """The eager step with every product taken by `route` (kernels/gpu.py matmul_route; "cupy": cupy.matmul,
    i.e. cuBLAS, instead of the default gemm.cu): weighs each one's cost to the host-bound step."""
    from minicnn.kernels import gpu as kernels_gpu
    old, kernels_gpu.matmul_route = kernels_gpu.matmul_route, route
    try:
        return bench_minicnn(x, y, args)
    finally:
        kernels_gpu.matmul_route = old


def bench_minicnn_graph(cp, x, y, args):
    """Capture one whole training step into a CUDA graph (minicnn/cuda_graph.py), replay it for every batch."""
    from minicnn.cuda_graph import CapturedStep
    model, opt = minicnn_model(args.seed)
    t0 = time.perf_counter()
    step = CapturedStep(lambda xb, yb: minicnn_step(model, opt, xb, yb), *full_batch(x, y, 0), warmup=3)
    step(*full_batch(x, y, 0))
    step.synchronize()
    capture_seconds = time.perf_counter() - t0

    def replay(offset, n):
        for i in range(offset, offset + n):
            step(*full_batch(x, y, i))

    first_t0 = time.perf_counter()
    replay(0, args.first_epoch_steps)
    synchronize()
    first = capture_seconds + (time.perf_counter() - first_t0) * STEPS_PER_EPOCH / args.first_epoch_steps
    per_step = timed(replay, args.steps, args.repeats, synchronize)
    loss = float(step.outputs.get())
    if not np.isfinite(loss):
        raise RuntimeError(f"the replayed step gives a non-finite loss {loss}")
    return first, per_step, (f"warm-up + capture + first replay {capture_seconds:.2f}s, loss after the replays "
                             f"{loss:.3f}; frozen at their captured values: {', '.join(step.frozen) or 'nothing'} "
                             "(timing representative, training not: see minicnn/cuda_graph.py)")


def breakdown(x, y, args):
    """Host milliseconds per Function in one eager step (no synchronisation inside: launch-bound work shows as
    host time), and the step's wall time with a synchronisation at its end."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from train_bench import op_breakdown
    model, opt = minicnn_model(args.seed)
    for i in range(5):
        minicnn_step(model, opt, *full_batch(x, y, i))
    synchronize()

    def step(i):
        minicnn_step(model, opt, *full_batch(x, y, i))
        synchronize()
    result = op_breakdown(step, 20)
    rows = "  ".join(f"{name} {ms:.2f}" for name, ms in result["rows"][:14])
    return f"one eager step {result['step_ms']:.2f} ms (synchronised); host ms per op: {rows}"


# ---- PyTorch -------------------------------------------------------------------------------------------
def torch_eip4(tnn, p=0.1):
    def block(c_in, c_out):
        return [tnn.Conv2d(c_in, c_out, 3), tnn.ReLU(), tnn.BatchNorm2d(c_out, momentum=0.01, eps=1e-3), tnn.Dropout(p)]
    return tnn.Sequential(
        *block(1, 16), *block(16, 16), tnn.Conv2d(16, 10, 1), tnn.ReLU(), tnn.MaxPool2d(2),
        *block(10, 16), *block(16, 16), *block(16, 16), *block(16, 16),
        tnn.Conv2d(16, 10, 4), tnn.BatchNorm2d(10, momentum=0.01, eps=1e-3), tnn.Dropout(p), tnn.Flatten())


def bench_torch(args):
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA device")
    torch.manual_seed(args.seed)
    dev = torch.device("cuda")
    x = torch.rand((IMAGES, 1, 28, 28), device=dev)
    y = torch.randint(0, 10, (IMAGES,), device=dev)
    model = torch_eip4(torch.nn).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=LR, eps=EPS)
    loss_fn = torch.nn.functional.cross_entropy

    def step(i, full):
        s = (i % ((IMAGES // BATCH) if full else STEPS_PER_EPOCH)) * BATCH
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[s:s + BATCH]), y[s:s + BATCH])
        loss.backward()
        opt.step()

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(args.first_epoch_steps):
        step(i, False)
    torch.cuda.synchronize()
    first = (time.perf_counter() - t0) * STEPS_PER_EPOCH / args.first_epoch_steps

    def run(offset, n):
        for i in range(offset, offset + n):
            step(i, True)
    per_step = timed(run, args.steps, args.repeats, torch.cuda.synchronize)
    note = f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"
    return first, per_step, note


# ---- main ----------------------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)
    reason = backend.gpu_unavailable_reason()
    if reason is not None:
        print(f"gpu_bench: no GPU: {reason}")
        return 2
    cp = backend.cupy_module()
    print("\n".join(versions(cp)))
    print(f"data    SYNTHETIC uniform images and random labels, {IMAGES} x 1x28x28 float32, already on the GPU; "
          f"batch {BATCH}, {STEPS_PER_EPOCH} steps per epoch; Adam lr {LR}; eip4 with Dropout(0.1)")
    print(f"timing  first epoch = one cold full epoch; epoch = median of {args.repeats} x {args.steps} steps, "
          f"scaled to {STEPS_PER_EPOCH} steps")

    from minicnn.kernels import gpu as kernels_gpu
    t0 = time.perf_counter()
    kernels_gpu.compile_all()
    synchronize()
    print(f"kernels NVRTC compile of kernels/*.cu (CuPy's disk cache may already hold them): "
          f"{time.perf_counter() - t0:.2f}s")
    x, y = make_data(cp, args.seed)
    synchronize()

    rows, notes = [], []

    def attempt(name, fn):
        try:
            result = fn()
        except Exception as exc:  # report, do not crash: the other contenders still run
            notes.append(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            tb = traceback.format_exc().strip().splitlines()
            notes.append("    " + " | ".join(line.strip() for line in tb[-4:]))
            return None
        first, per_step, *extra = result
        rows.append((name, first, per_step * STEPS_PER_EPOCH, per_step * 1e3))
        if extra:
            notes.append(f"{name}: {extra[0]}")
        return per_step

    mini = attempt("minicnn eager (CuPy, gemm.cu)", lambda: bench_minicnn(x, y, args))
    if args.variants:
        attempt("minicnn eager, cupy.matmul", lambda: bench_with_route("cupy", x, y, args))
        attempt("minicnn eager, layers unfused", lambda: bench_minicnn(x, y, args, fuse=False))
    graph = None
    if args.no_graph:
        notes.append("minicnn CUDA graph: skipped (--no-graph)")
    else:
        graph = attempt("minicnn CUDA graph", lambda: bench_minicnn_graph(cp, x, y, args))
    torch_step = None
    if args.no_torch:
        notes.append("torch eager: skipped (--no-torch)")
    else:
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            notes.append(f"torch eager: skipped, PyTorch is not installed ({exc})")
        else:
            torch_step = attempt("torch eager", lambda: bench_torch(args))

    print()
    print(f"{'contender':<24}{'first epoch (s)':>17}{'epoch (s)':>12}{'ms/step':>10}{'vs torch':>10}")
    for name, first, epoch, ms in rows:
        ratio = f"{ms / 1e3 / torch_step:.2f}x" if torch_step else "-"
        print(f"{name:<24}{first:>17.2f}{epoch:>12.2f}{ms:>10.2f}{ratio:>10}")
    if mini and torch_step:
        print(f"\nratio minicnn eager / torch eager: {mini / torch_step:.2f} (epoch time; >1 means minicnn is slower)")
    if graph and mini:
        print(f"CUDA graph speed-up over minicnn eager: {mini / graph:.2f}x")
    for note in notes:
        print(note)
    if args.breakdown:
        try:
            print(breakdown(x, y, args))
        except Exception as exc:
            print(f"breakdown: FAILED: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

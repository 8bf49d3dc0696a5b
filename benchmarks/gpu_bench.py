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
  epoch         the steady state: median over --repeats runs of --steps steps, scaled to 469 steps. The
                runs are INTERLEAVED: each round times every contender once, in turn, so a slow spell of
                the machine (on a shared host the first contender of a run can take 1.5x as long as the
                same code timed later) falls on all of them alike.

Contenders:
  minicnn eager       the library as the examples use it (one Python call per op, CuPy launches), trained
                      through nn.fuse(model) as minicnn.training.Trainer trains: ReLU -> BatchNorm2d ->
                      Dropout as one operation; the default configuration (config gemm="gemm": products by
                      kernels/gemm.cu; fuse=True);
  --variants          two more eager contenders: "cupy.matmul" under config.using(gemm="cupy") (every product
                      through cupy.matmul, i.e. cuBLAS) and "layers unfused" under config.using(fuse=False)
                      (ReLU, BatchNorm2d and Dropout as separate operations);
  minicnn CUDA graph  training as `examples/mnist.py --device gpu` does by default (--cuda-graph): forward and
                      backward of the fused model captured once (minicnn/cuda_graph.py: CuPy stream capture,
                      GEMMs by kernels/gemm.cu since CuPy cannot capture cuBLAS), replayed with graph.launch();
                      the batch is copied into static input buffers and the step's dropout keys into
                      device slots before each replay; Adam's update runs eagerly after it. The same
                      arithmetic as eager steps. Reported only when the capture works (else the reason);
  torch eager         the same network in PyTorch (default settings), when torch with CUDA is installed.

Columns: "first epoch (s)" and "epoch (s)" as above; "ms/step" the steady step; "vs torch" ms/step over
torch eager's. Needs CuPy and a CUDA device (without one it says why and exits with status 2); prints the
device, the versions, and the reason for anything skipped.
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
from minicnn import Tensor, config, nn, optim  # noqa: E402
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
                   help="also time the eager step under config gemm=\"cupy\" (every product through cupy.matmul, "
                        "i.e. cuBLAS, instead of gemm.cu) and under config fuse=False (ReLU, batch norm and "
                        "dropout as separate operations)")
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


def time_steps(run_steps, offset, steps, sync):
    """Seconds per step of `steps` steps from batch `offset` on (synchronised before and after)."""
    sync()
    t0 = time.perf_counter()
    run_steps(offset, steps)
    sync()
    return (time.perf_counter() - t0) / steps


def first_epoch(run_steps, args, sync, extra_seconds=0.0):
    """The cold first epoch: args.first_epoch_steps steps scaled to a whole epoch (plus a one-off cost)."""
    return extra_seconds + time_steps(run_steps, 0, args.first_epoch_steps, sync) * STEPS_PER_EPOCH


# ---- minicnn -------------------------------------------------------------------------------------------
def minicnn_model(seed):
    """(run, opt): eip4 on the GPU as the Trainer trains it, through nn.fuse(model) (the same layers and
    parameters, ReLU -> BatchNorm2d -> Dropout as one operation while config fuse is on), and its Adam."""
    minicnn.manual_seed(seed)
    model = eip4(dropout=0.1).to("gpu")
    return nn.fuse(model), optim.Adam(model.parameters(), lr=LR, eps=EPS)


def minicnn_forward_backward(model, opt, xb, yb):
    """Forward, loss, backward: the part of a step the CUDA-graph contender records (as minicnn.training does)."""
    out = model(Tensor(xb))
    loss = F.cross_entropy(out, yb)
    opt.zero_grad()
    loss.backward()
    return loss.data


def minicnn_step(model, opt, xb, yb):
    loss = minicnn_forward_backward(model, opt, xb, yb)
    opt.step()
    return loss


def bench_minicnn(x, y, args, **changes):
    """(first epoch seconds, run(offset, n), sync, note) of eager minicnn steps, every step under
    config.using(**changes): e.g. gemm="cupy" (products through cupy.matmul, i.e. cuBLAS, instead of gemm.cu)
    or fuse=False (ReLU, BatchNorm2d and Dropout as separate operations)."""
    model, opt = minicnn_model(args.seed)

    def run(offset, n, batches=full_batch):
        with config.using(**changes):
            for i in range(offset, offset + n):
                minicnn_step(model, opt, *batches(x, y, i))
    first = first_epoch(lambda o, n: run(o, n, batch), args, synchronize)
    return first, run, synchronize, None


def bench_minicnn_graph(cp, x, y, args):
    """Training with --cuda-graph (minicnn.training.Trainer's mode): forward and backward replayed from a CUDA graph
    recorded at the second step (minicnn/cuda_graph.py), Adam's update eager after each replay."""
    from minicnn.cuda_graph import CapturedStep
    model, opt = minicnn_model(args.seed)
    captured = CapturedStep(lambda xb, yb: minicnn_forward_backward(model, opt, xb, yb), warmup=1, strict=True)

    def run(offset, n):
        for i in range(offset, offset + n):
            captured(*full_batch(x, y, i))
            opt.step()

    first = first_epoch(run, args, synchronize)  # the first step eager, the second recorded, then replays
    loss = float(captured.outputs.get())
    if not np.isfinite(loss):
        raise RuntimeError(f"the replayed step gives a non-finite loss {loss}")
    return first, run, synchronize, (
        f"first epoch includes the recording; loss after it {loss:.3f}; the same arithmetic and dropout masks "
        "as eager steps (dropout keys written into device slots before each replay, Adam eager)")


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

    def run(offset, n, full=True):
        for i in range(offset, offset + n):
            step(i, full)
    first = first_epoch(lambda o, n: run(o, n, False), args, torch.cuda.synchronize)
    note = f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"
    return first, run, torch.cuda.synchronize, note


# ---- main ----------------------------------------------------------------------------------------------
EAGER, GRAPH, TORCH = "minicnn eager (CuPy)", "minicnn CUDA graph", "torch eager"


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
          f"scaled to {STEPS_PER_EPOCH} steps; the {args.repeats} rounds interleave the contenders")

    t0 = time.perf_counter()
    backend.kernels_for_device("gpu").compile_all()
    synchronize()
    print(f"kernels NVRTC compile of kernels/*.cu (CuPy's disk cache may already hold them): "
          f"{time.perf_counter() - t0:.2f}s")
    x, y = make_data(cp, args.seed)
    synchronize()

    notes = []
    prepared = []  # (name, run, sync, first epoch seconds): every contender is built and warmed up first

    def attempt(name, fn):
        try:
            first, run, sync, note = fn()
        except Exception as exc:  # report, do not crash: the other contenders still run
            notes.append(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            tb = traceback.format_exc().strip().splitlines()
            notes.append("    " + " | ".join(line.strip() for line in tb[-4:]))
            return
        prepared.append((name, run, sync, first))
        if note:
            notes.append(f"{name}: {note}")

    attempt(EAGER, lambda: bench_minicnn(x, y, args))
    if args.variants:
        attempt("minicnn eager, cupy.matmul", lambda: bench_minicnn(x, y, args, gemm="cupy"))
        attempt("minicnn eager, layers unfused", lambda: bench_minicnn(x, y, args, fuse=False))
    if args.no_graph:
        notes.append("minicnn CUDA graph: skipped (--no-graph)")
    else:
        attempt(GRAPH, lambda: bench_minicnn_graph(cp, x, y, args))
    if args.no_torch:
        notes.append("torch eager: skipped (--no-torch)")
    else:
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            notes.append(f"torch eager: skipped, PyTorch is not installed ({exc})")
        else:
            attempt(TORCH, lambda: bench_torch(args))

    per_step = {name: [] for name, *_ in prepared}
    for r in range(args.repeats):  # interleaved: each round times every contender once, in turn
        for name, run, sync, _ in prepared:
            per_step[name].append(time_steps(run, STEPS_PER_EPOCH + r * args.steps, args.steps, sync))
    step = {name: statistics.median(times) for name, times in per_step.items()}
    rows = [(name, first, step[name] * STEPS_PER_EPOCH, step[name] * 1e3) for name, _, _, first in prepared]
    mini, graph, torch_step = step.get(EAGER), step.get(GRAPH), step.get(TORCH)
    notes.append("ms per step in each round (contenders in table order): " + "; ".join(
        f"{name}: " + " ".join(f"{t * 1e3:.2f}" for t in times) for name, times in per_step.items()))

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

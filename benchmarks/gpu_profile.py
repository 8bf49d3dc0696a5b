"""Where one eip4 training step spends its time on the GPU: kernel by kernel (GPU time), and Python by function.

    python benchmarks/gpu_profile.py [--steps 5] [--batch 128] [--top 30]
    python benchmarks/gpu_profile.py --gemm cupy --no-fuse     # products by cuBLAS, layers unfused

The model trains as gpu_bench.py's "minicnn eager" contender does: eip4 through nn.fuse(model), Adam, under
the default configuration or the one --gemm and --fuse/--no-fuse choose (config.using(gemm=..., fuse=...)).

1. GPU time per kernel: PyTorch's profiler (CUPTI traces every kernel of the process, CuPy's included)
   over `--steps` eager steps, then over as many replays of the captured step (Adam eager after each).
   Columns: "us/step" the kernel's GPU microseconds per step, "calls" its launches per step, "kernel" its
   name; the TOTAL row sums them. Needs torch with CUDA (skipped, saying so, without it).
2. Host time: cProfile over the eager steps, the functions with the most time of their own (pstats columns:
   ncalls, tottime = own seconds, percall, cumtime = seconds including callees, percall).
Synthetic data (uniform images, random labels), like gpu_bench.py. Needs CuPy and a CUDA device (without one
it says why and exits with status 2).
"""
import argparse
import cProfile
import io
import os
import pstats
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import minicnn.backend as backend  # noqa: E402
from minicnn import config  # noqa: E402
from gpu_bench import minicnn_forward_backward, minicnn_model, minicnn_step, synchronize  # noqa: E402


def kernel_table(prof, steps, top):
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t and e.count and not e.key.startswith("ProfilerStep"):
            rows.append((t / steps, e.count / steps, e.key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    lines = [f"  {'us/step':>9} {'calls':>6}  kernel"]
    lines += [f"  {t:9.1f} {c:6.1f}  {k[:90]}" for t, c, k in rows[:top]]
    lines.append(f"  {total:9.1f} {sum(r[1] for r in rows):6.1f}  TOTAL over {len(rows)} kernel names")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--gemm", default="gemm", choices=config.GEMM_ROUTES,
                   help="GPU matrix products: gemm (gemm.cu, the default) or cupy (cupy.matmul, i.e. cuBLAS)")
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True,
                   help="ReLU -> BatchNorm2d -> Dropout as one operation (default on)")
    args = p.parse_args()
    with config.using(gemm=args.gemm, fuse=args.fuse):
        return profile_steps(args)


def profile_steps(args):
    reason = backend.gpu_unavailable_reason()
    if reason:
        print(f"gpu_profile: no GPU: {reason}")
        return 2
    cp = backend.cupy_module()
    print(f"configuration: gemm={config.current().gemm}, fuse={config.current().fuse}")
    rng = cp.random.default_rng(0)
    x = rng.random((args.batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, args.batch).astype(np.int64)
    model, opt = minicnn_model(0)
    for _ in range(5):
        minicnn_step(model, opt, x, y)
    synchronize()

    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
        if not torch.cuda.is_available():
            raise ImportError("torch sees no CUDA device")
    except ImportError as exc:
        print(f"GPU kernel times: skipped, needs PyTorch with CUDA ({exc})")
    else:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.steps):
                minicnn_step(model, opt, x, y)
            synchronize()
        print(f"GPU time per kernel, eager step (batch {args.batch}, mean of {args.steps} steps):")
        print(kernel_table(prof, args.steps, args.top))
        from minicnn.cuda_graph import CapturedStep
        gmodel, gopt = minicnn_model(0)
        step = CapturedStep(lambda a, b: minicnn_forward_backward(gmodel, gopt, a, b), warmup=1)
        for _ in range(3):
            step(x, y)
            gopt.step()
        synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.steps):
                step(x, y)
                gopt.step()
            synchronize()
        print(f"\nGPU time per kernel, CUDA-graph replay + eager Adam (mean of {args.steps} steps):")
        print(kernel_table(prof, args.steps, args.top))

    pr = cProfile.Profile()
    pr.enable()
    for _ in range(args.steps):
        minicnn_step(model, opt, x, y)
    synchronize()
    pr.disable()
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(args.top)
    print(f"\nhost: cProfile of {args.steps} eager steps, by own time")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())

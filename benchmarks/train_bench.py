"""Seconds per eip4 training epoch on the CPU: minicnn (Numba kernels), minicnn on plain-NumPy im2col, and PyTorch.

    python benchmarks/train_bench.py                   # all engines, threads = NUMBA_NUM_THREADS or all cores
    python benchmarks/train_bench.py --threads 2 --steps 40 --breakdown --startup

Each engine runs in its own process (so thread settings and peak memory are its own) on the same
synthetic batches (random images in [0, 1], random labels: the speed does not depend on the values).
Seconds per epoch = median step time x 469 (60,000 images at batch 128). Peak memory is the
process's maximum resident set size. --breakdown prints where one minicnn training step spends its
time, op by op; --startup times `import minicnn` and the first finished training step with a cold
and with a warm Numba cache.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS_PER_EPOCH = 469


def thread_env(threads, extra=None, blas_threads=None):
    """The environment of a child: Numba and BLAS thread counts are fixed before NumPy loads."""
    env = dict(os.environ)
    env["NUMBA_NUM_THREADS"] = str(threads)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(blas_threads or threads)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run_child(engine, args, extra_env=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", engine, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    if args.breakdown and engine == "minicnn":
        cmd.append("--breakdown")
    blas = args.blas_threads if engine.startswith("minicnn") else None  # torch: its own threads, set above
    out = subprocess.run(cmd, env=thread_env(args.threads, extra_env, blas), capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- children ---------------------------------------------------------------------------------
def batches(batch_size, count, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    return [(rng.random((batch_size, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch_size))
            for _ in range(count)]


def peak_rss_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def median_step(step, args):
    """Median seconds of args.steps calls of step(i), after args.warmup untimed ones."""
    import numpy as np
    for i in range(args.warmup):
        step(i)
    times = []
    for i in range(args.steps):
        t = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def child_minicnn(args):
    import minicnn
    from minicnn import functional as F, optim
    from minicnn.models import eip4
    minicnn.manual_seed(0)
    model = eip4()
    opt = optim.Adam(model.parameters(), lr=0.003)
    data = batches(args.batch_size, 4)

    def step(i):
        x, y = data[i % len(data)]
        loss = F.cross_entropy(model(minicnn.Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    result = {"step": median_step(step, args), "rss": peak_rss_mb()}
    if args.breakdown:
        result["breakdown"] = op_breakdown(step, 5)
    return result


def op_breakdown(step, repeats):
    """Milliseconds per training step spent in each Function's forward and backward."""
    from minicnn.autograd import Function
    totals = {}

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    def timed(cls, name, fn):
        def wrapper(self, *a):
            t = time.perf_counter()
            try:
                return fn(self, *a)
            finally:
                key = (cls.__name__, name)
                totals[key] = totals.get(key, 0.0) + time.perf_counter() - t
        return wrapper
    patched = []
    for cls in set(subclasses(Function)):
        for name in ("forward", "backward"):
            if name in vars(cls):
                patched.append((cls, name, vars(cls)[name]))
                setattr(cls, name, timed(cls, name, vars(cls)[name]))
    t = time.perf_counter()
    for i in range(repeats):
        step(i)
    whole = (time.perf_counter() - t) / repeats
    for cls, name, fn in patched:
        setattr(cls, name, fn)
    rows = sorted(((f"{c}.{n}", v / repeats * 1000) for (c, n), v in totals.items()), key=lambda r: -r[1])
    return {"step_ms": whole * 1000, "rows": rows}


def child_torch(args):
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nn = torch.nn

    def block(i, o):
        return [nn.Conv2d(i, o, 3), nn.ReLU(), nn.BatchNorm2d(o, momentum=0.01, eps=1e-3), nn.Dropout(0.1)]
    model = nn.Sequential(*block(1, 16), *block(16, 16), nn.Conv2d(16, 10, 1), nn.ReLU(), nn.MaxPool2d(2),
                          *block(10, 16), *block(16, 16), *block(16, 16), *block(16, 16),
                          nn.Conv2d(16, 10, 4), nn.BatchNorm2d(10, momentum=0.01, eps=1e-3), nn.Dropout(0.1),
                          nn.Flatten())
    opt = torch.optim.Adam(model.parameters(), lr=0.003)
    data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches(args.batch_size, 4)]

    def step(i):
        x, y = data[i % len(data)]
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return {"step": median_step(step, args), "rss": peak_rss_mb(), "version": torch.__version__}


FIRST_STEP = """
import time; t0 = time.perf_counter()
import numpy as np, minicnn
from minicnn import functional as F, optim
from minicnn.models import eip4
m = eip4(); opt = optim.Adam(m.parameters(), lr=0.003)
x = np.random.rand(128, 1, 28, 28).astype(np.float32); y = np.random.randint(0, 10, 128)
loss = F.cross_entropy(m(minicnn.Tensor(x)), y); opt.zero_grad(); loss.backward(); opt.step()
print(time.perf_counter() - t0)
"""


def startup(args):
    """(import seconds, first step cold, first step warm), each measured from the process start."""
    def wall(code, env):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
        return time.perf_counter() - t
    with tempfile.TemporaryDirectory() as cache:
        env = thread_env(args.threads, {"NUMBA_CACHE_DIR": cache}, args.blas_threads)
        imp = min(wall("import minicnn", env) for _ in range(3))
        cold = wall(FIRST_STEP, env)
        warm = min(wall(FIRST_STEP, env) for _ in range(2))
    return imp, cold, warm


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count())))
    p.add_argument("--blas-threads", type=int, default=1,
                   help="BLAS threads for minicnn (default 1: minicnn parallelises over the batch itself)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--engines", default="minicnn,minicnn-numpy,torch")
    p.add_argument("--breakdown", action="store_true", help="per-op times of one minicnn step")
    p.add_argument("--startup", action="store_true", help="import time and first-step time, cold and warm cache")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        fn = child_torch if args.child == "torch" else child_minicnn
        print(json.dumps(fn(args)))
        return

    import numpy
    import numba
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
          f"{platform.python_implementation()} {platform.python_version()}, numpy {numpy.__version__}, "
          f"numba {numba.__version__}; threads {args.threads} (minicnn BLAS {args.blas_threads or args.threads}); "
          f"batch {args.batch_size}; "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    results = {}
    for engine in args.engines.split(","):
        extra = {"MINICNN_KERNELS": "numpy"} if engine == "minicnn-numpy" else None
        if engine == "torch":
            try:
                import importlib.util
                if importlib.util.find_spec("torch") is None:
                    print("torch: not installed, PyTorch column skipped")
                    continue
            except Exception:
                continue
        results[engine] = run_child(engine, args, extra)
    base = results.get("torch", {}).get("step")
    print(f"\n{'engine':<16}{'s/step':>9}{'s/epoch':>9}{'img/s':>9}{'peak MB':>9}{'vs torch':>10}")
    for engine, r in results.items():
        if "error" in r:
            print(f"{engine:<16} failed: {r['error']}")
            continue
        ratio = f"{r['step'] / base:.2f}x" if base else "-"
        print(f"{engine:<16}{r['step']:>9.4f}{r['step'] * STEPS_PER_EPOCH:>9.1f}"
              f"{args.batch_size / r['step']:>9.0f}{r['rss']:>9.0f}{ratio:>10}")
    if "torch" in results and "minicnn" in results and "error" not in results["minicnn"] and base:
        print(f"peak memory ratio minicnn/torch: {results['minicnn']['rss'] / results['torch']['rss']:.2f}")
    bd = results.get("minicnn", {}).get("breakdown")
    if bd:
        print(f"\nwhere one minicnn step goes ({bd['step_ms']:.1f} ms, timed with wrappers):")
        for name, ms in bd["rows"]:
            print(f"  {name:<28}{ms:8.2f} ms")
    if args.startup:
        imp, cold, warm = startup(args)
        print(f"\nstart-up: import minicnn {imp:.2f} s; first training step finished {cold:.2f} s after start "
              f"with a cold Numba cache (compilation about {cold - warm:.1f} s), {warm:.2f} s with a warm cache")


if __name__ == "__main__":
    main()

"""Seconds per eip4 training step and epoch on the CPU: minicnn's default route, lesson path, NumPy backend, PyTorch.

    python benchmarks/train_bench.py --threads 2                    # the four engines, one table
    python benchmarks/train_bench.py --threads 2 --steps 40 --breakdown --startup
    python benchmarks/train_bench.py --engines auto,torch --steps 5 --warmup 1      # a quick look

Engines (--engines, comma-separated; each runs in its own process, one after the other):

    auto      minicnn as it trains by default: config conv="auto" (the CPU backend picks the fastest
              algorithm it has for each layer: kernels/cpu_fast/plan.py), Numba kernels
    im2col    the lesson path everywhere: config conv="im2col" (im2col, one GEMM per group, col2im), Numba kernels
              (what `python examples/mnist.py --conv im2col` runs)
    numpy     the plain-NumPy backend: config kernels="numpy" (MINICNN_KERNELS=numpy), no Numba; it runs the
              lesson path except on the 1x1 layer and the 4x4 head, which are one matrix product each
              (pointwise, whole_image)
    torch     the same network in PyTorch (skipped, saying so, when torch is not installed)

Any other name in config.CONV_ALGORITHMS ("direct", "wide", ...) is an engine too (that algorithm with the
Numba kernels), and "numpy-NAME" is the NumPy backend under conv=NAME.

What a training step is: forward through `nn.fuse(model)` (ReLU -> BatchNorm2d -> Dropout as one
operation, as minicnn.training.Trainer trains), cross-entropy, backward, Adam -- on synthetic batches of
random images in [0, 1] with random labels (the speed does not depend on the values), the same four
batches in every engine. Threads: NUMBA_NUM_THREADS and torch.set_num_threads get --threads; BLAS gets
--blas-threads in the minicnn processes (default 1, as `import minicnn` sets it: minicnn parallelises over
the batch itself; the NumPy backend therefore runs on one thread) and --threads in the torch process.

Table "training" (one row per engine):

    conv, kernels   the configuration the engine runs under
    s/step          the median of --steps timed steps after --warmup untimed ones (with --rounds R: the
                    median of the R processes' medians)
    iqr %           the spread of the timed steps: (75th - 25th percentile) / median, in percent
    s/epoch         s/step x 469 (60,000 images at batch 128)
    img/s           batch size / s/step
    peak MB         the process's maximum resident set size (its largest round)
    vs torch        s/step / torch's s/step (> 1: slower than PyTorch)

Table "breakdown" (--breakdown): milliseconds per training step spent in each autograd Function's
forward and backward (timed by wrapping them; mean of 5 steps), one column per minicnn engine; the
"whole step" row is the wrapped step's wall time, "not in a Function" what lies between the ops.

Table "start-up" (--startup), for the default engine (auto):

    import minicnn            seconds from the process's start to its exit after `import minicnn`
    first training step       seconds from the process's start to its exit right after its first training
                              step (eip4, batch --batch-size) has finished
    examples/mnist.py ...     the whole command `python examples/mnist.py --epochs 1 --train-limit 1280
                              --threads T --no-progress --save <temp dir> --data-dir <MNIST folder>`
                              (one epoch of 10 batches, then the test-set evaluation)
    cold s                    the median of --startup-runs runs, each with its own fresh, empty
                              NUMBA_CACHE_DIR (a temporary folder): every kernel is compiled in the run
    warm s                    the median of --startup-runs runs sharing one NUMBA_CACHE_DIR, each right after
                              an untimed run of the same command: every kernel comes from the cache
    compile s                 cold s - warm s
    A warm run that still writes to the cache (a kernel source changed during the measurement) is flagged
    in a note under the table.

--no-train leaves the training table out (with --breakdown the engines still run, for the breakdown).
Every table starts with the machine line (CPU model, cores, Python, NumPy, Numba and PyTorch versions,
date). The last line of the output is one JSON object with every number above, for scripts.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS_PER_EPOCH = 469
DEFAULT_ENGINES = "auto,im2col,numpy,torch"
BREAKDOWN_STEPS = 5
MNIST_COMMAND = ["examples/mnist.py", "--epochs", "1", "--train-limit", "1280", "--no-progress"]


# ---- engines and child processes --------------------------------------------------------------------------
def engine_config(engine):
    """{"conv": ..., "kernels": ...} for a minicnn engine name, None for torch; ValueError for an unknown name."""
    from minicnn import config
    if engine == "torch":
        return None
    kernels, conv = ("numpy", engine[len("numpy-"):]) if engine.startswith("numpy-") else \
        ("numpy", "auto") if engine == "numpy" else ("numba", engine)
    if conv not in config.CONV_ALGORITHMS:
        raise ValueError(f"--engines: unknown engine {engine!r}; use torch, numpy, numpy-NAME or one of "
                         f"{', '.join(config.CONV_ALGORITHMS)}")
    return {"conv": conv, "kernels": kernels}


def thread_env(threads, blas_threads, extra=None, omp=False):
    """A child's environment: Numba and BLAS thread counts are fixed there before NumPy loads (omp: OMP_NUM_THREADS
    too, for PyTorch; minicnn's processes leave it as `import minicnn` does)."""
    env = dict(os.environ)
    env["NUMBA_NUM_THREADS"] = str(threads)
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") + (("OMP_NUM_THREADS",) if omp else ()):
        env[var] = str(blas_threads)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def last_line(text):
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def run_child(engine, args, breakdown=False):
    """The result dict one child process prints for `engine` ({"error": ...} when it fails)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", engine, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    if breakdown:
        cmd.append("--breakdown")
    torch = engine == "torch"
    env = thread_env(args.threads, args.threads if torch else args.blas_threads, omp=torch)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        return {"error": last_line(out.stderr) or f"exit status {out.returncode}"}
    return json.loads(last_line(out.stdout))


def batches(batch_size, count, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    return [(rng.random((batch_size, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch_size))
            for _ in range(count)]


def peak_rss_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def step_times(step, steps, warmup):
    """Seconds of each of `steps` calls of step(i), after `warmup` untimed ones."""
    for i in range(warmup):
        step(i)
    times = []
    for i in range(warmup, warmup + steps):
        t = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t)
    return times


def summarise(times):
    """{"step": median, "q1", "q3", "min"} of a list of step seconds."""
    if len(times) < 2:
        return {"step": times[0], "q1": times[0], "q3": times[0], "min": times[0]}
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return {"step": statistics.median(times), "q1": q1, "q3": q3, "min": min(times)}


def minicnn_step_fn(batch_size, count=4):
    """step(i): one eip4 training step through nn.fuse(model) on synthetic batch i % count."""
    import minicnn
    from minicnn import functional as F, nn, optim
    from minicnn.models import eip4
    minicnn.manual_seed(0)
    model = eip4()
    run = nn.fuse(model)   # the Trainer's fused model: the same layers and parameters
    opt = optim.Adam(model.parameters(), lr=0.003)
    data = batches(batch_size, count)

    def step(i):
        x, y = data[i % len(data)]
        loss = F.cross_entropy(run(minicnn.Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def child_minicnn(args):
    from minicnn import config
    with config.using(**engine_config(args.child)):
        step = minicnn_step_fn(args.batch_size)
        result = summarise(step_times(step, args.steps, args.warmup))
        if args.breakdown:
            result["breakdown"] = op_breakdown(step, BREAKDOWN_STEPS)
    result.update(rss=peak_rss_mb(), numba_loaded="numba" in sys.modules)
    return result


def op_breakdown(step, repeats):
    """Milliseconds per call of step(i) spent in each Function's forward and backward: {"step_ms", "rows"}, the rows
    as (name, ms) sorted by time. The Functions are wrapped for the measurement and restored afterwards."""
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
                key = f"{cls.__name__}.{name}"
                totals[key] = totals.get(key, 0.0) + time.perf_counter() - t
        return wrapper
    patched = [(cls, name, vars(cls)[name]) for cls in set(subclasses(Function))
               for name in ("forward", "backward") if name in vars(cls)]
    for cls, name, fn in patched:
        setattr(cls, name, timed(cls, name, fn))
    try:
        t = time.perf_counter()
        for i in range(repeats):
            step(i)
        whole = (time.perf_counter() - t) / repeats
    finally:
        for cls, name, fn in patched:
            setattr(cls, name, fn)
    rows = sorted(((key, seconds / repeats * 1000) for key, seconds in totals.items()), key=lambda r: -r[1])
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

    result = summarise(step_times(step, args.steps, args.warmup))
    result.update(rss=peak_rss_mb(), version=torch.__version__)
    return result


def child_first_step(args):
    """One training step of the default engine, then exit: the parent times the whole process."""
    minicnn_step_fn(args.batch_size, count=1)(0)
    return {"done": True}


# ---- the machine -----------------------------------------------------------------------------------------
def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_version():
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return None
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                         capture_output=True, text=True)
    return out.stdout.strip() or None


def machine_info(args):
    import numba
    import numpy
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": numpy.__version__, "numba": numba.__version__, "torch": torch_version(),
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "load": list(os.getloadavg()),
            "threads": args.threads, "blas_threads": args.blas_threads}


def machine_line(m):
    return (f"machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, NumPy {m['numpy']}, "
            f"Numba {m['numba']}, PyTorch {m['torch'] or 'not installed'}; {m['date']}; "
            f"load {m['load'][0]:.2f}; threads {m['threads']} (minicnn BLAS {m['blas_threads']})")


# ---- section 1: training steps ---------------------------------------------------------------------------
def measure_engines(args, engines, machine):
    """{engine: result} of --rounds child processes per engine (the first minicnn one also times the breakdown)."""
    results = {}
    for engine in engines:
        if engine == "torch" and machine["torch"] is None:
            results[engine] = {"skipped": "PyTorch is not installed"}
            continue
        rounds = [run_child(engine, args, breakdown=args.breakdown and engine != "torch" and i == 0)
                  for i in range(args.rounds)]
        errors = [r["error"] for r in rounds if "error" in r]
        if errors:
            results[engine] = {"error": errors[0]}
            continue
        r = dict(rounds[0])
        if args.rounds > 1:
            r.update(step=statistics.median(x["step"] for x in rounds), rounds=[x["step"] for x in rounds],
                     q1=statistics.median(x["q1"] for x in rounds), q3=statistics.median(x["q3"] for x in rounds),
                     min=min(x["min"] for x in rounds), rss=max(x["rss"] for x in rounds))
        r["epoch"] = r["step"] * STEPS_PER_EPOCH
        results[engine] = r
    return results


def train_table(args, results, machine):
    print(f"\ntraining: eip4, batch {args.batch_size}, median of {args.steps} steps after {args.warmup} untimed"
          + (f", median of {args.rounds} processes per engine" if args.rounds > 1 else ""))
    print(machine_line(machine))
    base = results.get("torch", {}).get("step")
    header = (f"{'engine':<14}{'conv':<12}{'kernels':<9}{'s/step':>9}{'iqr %':>7}{'s/epoch':>9}{'img/s':>8}"
              f"{'peak MB':>9}{'vs torch':>10}")
    print(header + "\n" + "-" * len(header))
    for engine, r in results.items():
        cfg = engine_config(engine) or {"conv": "-", "kernels": "torch"}
        label = f"{engine:<14}{cfg['conv']:<12}{cfg['kernels']:<9}"
        if "step" not in r:
            print(label + (f"failed: {r['error']}" if "error" in r else f"skipped: {r['skipped']}"))
            continue
        ratio = f"{r['step'] / base:.2f}x" if base else "-"
        print(f"{label}{r['step']:>9.4f}{100 * (r['q3'] - r['q1']) / r['step']:>7.0f}{r['epoch']:>9.1f}"
              f"{args.batch_size / r['step']:>8.0f}{r['rss']:>9.0f}{ratio:>10}")


# ---- section 2: where a step goes ------------------------------------------------------------------------
def breakdown_table(args, results, machine):
    found = {e: r["breakdown"] for e, r in results.items() if "breakdown" in r}
    print(f"\nbreakdown: ms per training step in each Function's forward and backward (wrapped; mean of "
          f"{BREAKDOWN_STEPS} steps, batch {args.batch_size})")
    print(machine_line(machine))
    if not found:
        print("no minicnn engine finished (see the training table)")
        return
    names = []
    for b in found.values():
        names += [name for name, _ in b["rows"] if name not in names]
    header = f"{'Function':<32}" + "".join(f"{e:>12}" for e in found)
    print(header + "\n" + "-" * len(header))
    for name in names:
        cells = [dict(b["rows"]).get(name) for b in found.values()]
        print(f"{name:<32}" + "".join(f"{c:>12.2f}" if c is not None else f"{'-':>12}" for c in cells))
    print(f"{'not in a Function':<32}" + "".join(
        f"{b['step_ms'] - sum(ms for _, ms in b['rows']):>12.2f}" for b in found.values()))
    print(f"{'whole step':<32}" + "".join(f"{b['step_ms']:>12.2f}" for b in found.values()))


# ---- section 3: start-up ---------------------------------------------------------------------------------
def wall_seconds(cmd, env, cwd):
    """Seconds from the start of `cmd` to its exit, or the error line when it fails."""
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:3])}...: {last_line(out.stderr) or 'exit status ' + str(out.returncode)}")
    return seconds


def startup_section(args, machine):
    """Cold and warm start of the default engine: import, first finished step, one short examples/mnist.py run."""
    work = tempfile.mkdtemp(prefix="minicnn-startup-")
    warm_cache = os.path.join(work, "warm-cache")

    def env(cache):
        return thread_env(args.threads, args.blas_threads, {"NUMBA_CACHE_DIR": cache, "MINICNN_NO_PROGRESS": "1"})

    def mnist_run():   # each run saves into its own folder, so no run resumes from or locks another's checkpoint
        save = tempfile.mkdtemp(prefix="save-", dir=work)
        return [sys.executable] + MNIST_COMMAND + ["--threads", str(args.threads), "--data-dir", args.data_dir,
                                                   "--save", os.path.join(save, "run.ckpt")]

    first_step = [sys.executable, os.path.abspath(__file__), "--child", "first-step",
                  "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    mnist_name = " ".join(MNIST_COMMAND + ["--threads", str(args.threads)])
    commands = {"import minicnn": (("warm",), lambda: [sys.executable, "-c", "import minicnn"]),
                "first training step": (("cold", "warm"), lambda: first_step)}
    if mnist_files_present(args.data_dir):
        commands[mnist_name] = (("cold", "warm"), mnist_run)
    results = {name: {} for name in commands}
    try:
        for _ in range(args.startup_runs):   # cold and warm runs alternate: a slow spell falls on both
            for name, (kinds, command) in commands.items():
                for kind in kinds:
                    if "error" in results[name]:
                        break
                    cache = tempfile.mkdtemp(prefix="cold-cache-", dir=work) if kind == "cold" else warm_cache
                    try:
                        if kind == "warm":   # untimed: recompiles what a changed source file invalidated
                            wall_seconds(command(), env(cache), ROOT)
                        before = cache_files(cache)
                        results[name].setdefault(kind, []).append(wall_seconds(command(), env(cache), ROOT))
                        if kind == "warm" and cache_files(cache) != before:
                            results[name]["warm_compiled"] = results[name].get("warm_compiled", 0) + 1
                    except RuntimeError as exc:
                        results[name]["error"] = str(exc)
                    if kind == "cold":
                        shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nstart-up: engine auto, batch {args.batch_size}; median of {args.startup_runs} run(s); cold: each run "
          "a fresh empty NUMBA_CACHE_DIR; warm: one cache, each timed run right after an untimed one")
    print(machine_line(machine))
    width = max(len(name) for name in [*results, "seconds from process start to exit"]) + 2
    header = f"{'seconds from process start to exit':<{width}}{'cold s':>9}{'warm s':>9}{'compile s':>11}"
    print(header + "\n" + "-" * len(header))
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<{width}}failed: {r['error']}")
            continue
        cold, warm = (statistics.median(r[k]) if k in r else None for k in ("cold", "warm"))
        r.update(cold_median=cold, warm_median=warm)
        print(f"{name:<{width}}" + (f"{cold:>9.2f}" if cold is not None else f"{'-':>9}") + f"{warm:>9.2f}"
              + (f"{cold - warm:>11.2f}" if cold is not None else f"{'-':>11}"))
    for name, r in results.items():
        if r.get("warm_compiled"):
            print(f"note: {r['warm_compiled']} warm run(s) of '{name}' wrote to the Numba cache (a kernel source "
                  "changed while this ran?): that warm time includes compilation")
    if mnist_name not in results:
        print(f"{mnist_name}: skipped, no MNIST files in {args.data_dir} (--data-dir)")
    return results


def cache_files(folder):
    """{path: (size, mtime)} of every file under folder: a warm run that compiles nothing leaves it unchanged."""
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            found[path] = (st.st_size, st.st_mtime_ns)
    return found


def mnist_files_present(folder):
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return all(any(os.path.isfile(os.path.join(folder, n + s)) for s in ("", ".gz")) for n in names)


# ---- main ------------------------------------------------------------------------------------------------
def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=positive, default=int(os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count()),
                   help="Numba and PyTorch threads (default: NUMBA_NUM_THREADS, else all cores)")
    p.add_argument("--blas-threads", type=positive, default=1,
                   help="BLAS threads in the minicnn processes (default 1, as `import minicnn` sets it)")
    p.add_argument("--steps", type=positive, default=30, help="timed steps per engine (default 30)")
    p.add_argument("--warmup", type=non_negative, default=3, help="untimed steps first (default 3)")
    p.add_argument("--rounds", type=positive, default=1, help="processes per engine; the median is reported")
    p.add_argument("--batch-size", type=positive, default=128)
    p.add_argument("--engines", default=DEFAULT_ENGINES, help=f"comma-separated (default {DEFAULT_ENGINES})")
    p.add_argument("--no-train", action="store_true", help="skip the training table (e.g. with --startup)")
    p.add_argument("--breakdown", action="store_true", help="ms per Function in one step of each minicnn engine")
    p.add_argument("--startup", action="store_true",
                   help="cold and warm start: first finished training step and a short examples/mnist.py run")
    p.add_argument("--startup-runs", type=positive, default=3, help="runs per start-up cell; the median (default 3)")
    p.add_argument("--data-dir", help="MNIST folder for the examples/mnist.py start-up row "
                                      "(default: $MINICNN_DATA or the user cache folder)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        fn = {"torch": child_torch, "first-step": child_first_step}.get(args.child, child_minicnn)
        print(json.dumps(fn(args)))
        return 0
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    try:
        for engine in engines:
            engine_config(engine)
    except ValueError as exc:
        print(f"train_bench.py: error: {exc}", file=sys.stderr)
        return 2
    if args.data_dir is None:
        from minicnn.data import default_data_dir
        args.data_dir = default_data_dir()
    machine = machine_info(args)
    report = {"machine": machine, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup}
    if not args.no_train or args.breakdown:
        report["train"] = measure_engines(args, engines, machine)
        if not args.no_train:
            train_table(args, report["train"], machine)
        if args.breakdown:
            breakdown_table(args, report["train"], machine)
    if args.startup:
        report["startup"] = startup_section(args, machine)
    print("\n" + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

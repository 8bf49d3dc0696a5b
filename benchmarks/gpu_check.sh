#!/usr/bin/env bash
# The prepared GPU check: under 6 minutes on one H100, from the repo root, with nothing installed.
#
#   bash benchmarks/gpu_check.sh
#
# Prints, in order:
#   1. the machine: GPU, driver, Python / NumPy / CuPy / Numba / PyTorch versions;
#   2. the GPU tests:      python -m pytest -q -m gpu tests/kernels/gpu tests/test_cuda_graph.py tests/test_devices.py
#   3. the GPU benchmark:  python benchmarks/gpu_bench.py --breakdown --variants  (seconds per epoch, minicnn vs PyTorch,
#      CUDA graph; host time per op of one eager step)
#   4. the profile:        python benchmarks/gpu_profile.py --steps 5  (GPU time per kernel of an eager step and
#      of a replay; the host's cProfile of eager steps)
#   5. a full MNIST run:   python examples/mnist.py --device gpu --data-dir .mnist --epochs 20
#      (training replays each step from a CUDA graph, the GPU default; per-epoch seconds and the final test
#      accuracy; MNIST is expected in the git-ignored .mnist/).
# Each part runs under `timeout` and its failure does not stop the others; the whole stays under
# TOTAL_BUDGET seconds (default 345): parts 2 to 4 have caps, part 5 gets the time that is left.
# Full logs go to $LOG_DIR (default: $OUT when the device runner sets it, else a temporary folder).
set -u
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python}"
TOTAL_BUDGET="${TOTAL_BUDGET:-345}"
TESTS_CAP="${TESTS_CAP:-130}"
BENCH_CAP="${BENCH_CAP:-90}"
PROFILE_CAP="${PROFILE_CAP:-45}"
LOG_DIR="${LOG_DIR:-${OUT:-$(mktemp -d)}}"
mkdir -p "$LOG_DIR"
START=$SECONDS
RESULTS=()

left() { echo $(( TOTAL_BUDGET - (SECONDS - START) )); }
section() { echo; echo "=== $1  [t=$(( SECONDS - START ))s, budget left $(left)s]"; }

# run NAME CAP COMMAND...: run under timeout (the cap, or what is left of the budget), log to LOG_DIR/NAME.log
run() {
    local name="$1" cap="$2"; shift 2
    local limit; limit=$(left)
    [ "$cap" -lt "$limit" ] && limit="$cap"
    if [ "$limit" -lt 15 ]; then
        echo "$name: SKIPPED, only ${limit}s of the budget left"
        RESULTS+=("$name: skipped (no time left)")
        return
    fi
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" >"$LOG_DIR/$name.log" 2>&1
    local rc=$?
    local verdict="exit $rc"
    [ $rc -eq 0 ] && verdict="ok"
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && verdict="TIMED OUT after ${limit}s"
    RESULTS+=("$name: $verdict in $(( SECONDS - t0 ))s (log $LOG_DIR/$name.log)")
}

section "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | head -n 4
"$PY" - <<'EOF' 2>&1
import platform
out = [f"python {platform.python_version()}"]
for name in ("numpy", "cupy", "numba", "torch", "hypothesis", "pytest"):
    try:
        module = __import__(name)
        out.append(f"{name} {module.__version__}")
    except Exception as exc:
        out.append(f"{name} missing ({type(exc).__name__})")
print("  ".join(out))
import minicnn.backend as b
print("minicnn GPU:", b.gpu_unavailable_reason() or "available")
EOF

GPU_TESTS="tests/kernels/gpu tests/test_cuda_graph.py tests/test_devices.py"
section "GPU tests: python -m pytest -q -m gpu $GPU_TESTS"
# shellcheck disable=SC2086  # GPU_TESTS is a list of paths
run tests "$TESTS_CAP" "$PY" -m pytest -q -m gpu $GPU_TESTS -p no:cacheprovider -rs --tb=short --durations=5
grep -E "passed|failed|error|skipped|deselected" "$LOG_DIR/tests.log" | tail -n 3
SUMMARY_LINE="$(grep -E "^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error)" "$LOG_DIR/tests.log" | tail -n 1)"
if ! echo "$SUMMARY_LINE" | grep -q "passed" || echo "$SUMMARY_LINE" | grep -qE "failed|error"; then
    echo "--- failures / tail of the test log:"
    grep -E "^(FAILED|ERROR)" "$LOG_DIR/tests.log" | head -n 30
    tail -n 40 "$LOG_DIR/tests.log"
fi

section "GPU benchmark: python benchmarks/gpu_bench.py --breakdown --variants"
run bench "$BENCH_CAP" "$PY" benchmarks/gpu_bench.py --steps 100 --repeats 5 --breakdown --variants
cat "$LOG_DIR/bench.log"

section "profile: python benchmarks/gpu_profile.py --steps 5"
run profile "$PROFILE_CAP" "$PY" benchmarks/gpu_profile.py --steps 5
grep -v "UserWarning\|_warn_once" "$LOG_DIR/profile.log" | head -n 60

section "MNIST: python examples/mnist.py --device gpu --data-dir .mnist --epochs 20"
if [ ! -f examples/mnist.py ]; then
    echo "examples/mnist.py not found"
    RESULTS+=("mnist: skipped (no examples/mnist.py)")
elif [ ! -d .mnist ]; then
    echo ".mnist/ not found: carry the MNIST files in the git-ignored folder .mnist/ of the working tree"
    RESULTS+=("mnist: skipped (no .mnist/)")
else
    SAVE_DIR="$(mktemp -d)"
    run mnist 100000 "$PY" examples/mnist.py --device gpu --data-dir .mnist --epochs 20 --no-progress \
        --save "$SAVE_DIR/eip4-gpu-check.ckpt"
    grep -vE "^\s*$" "$LOG_DIR/mnist.log" | grep -E "Epoch|final|recipe|Error|error|Traceback" | tail -n 30
    if ! grep -q "final test accuracy" "$LOG_DIR/mnist.log"; then
        echo "--- tail of the MNIST log:"
        tail -n 25 "$LOG_DIR/mnist.log"
    fi
fi

section "summary"
for line in "${RESULTS[@]}"; do echo "$line"; done
echo "total $(( SECONDS - START ))s of ${TOTAL_BUDGET}s"

#!/usr/bin/env bash
# Compile every CUDA source kernels/*.cu exactly as CuPy compiles it at run time -- no GPU needed.
#
# kernels/gpu/runtime.py hands each .cu file to cupy.RawModule verbatim (nothing prepended) with the
# options in runtime.NVRTC_OPTIONS, so this script compiles the same files with the same options:
#   1. nvcc --cubin for the newest target we tune for (sm_90, H100) and the oldest CUDA 13 still
#      accepts (sm_75, Turing); warnings are errors;
#   2. checks that every entry point runtime.KERNELS names (NAME_f32 / NAME_f64) is in the cubin, so a
#      renamed kernel fails here rather than at run time on a GPU machine;
#   3. compiles with NVRTC itself (the compiler CuPy uses) when libnvrtc can be found: MINICNN_NVRTC,
#      the pip wheel nvidia-cuda-nvrtc, or the CUDA toolkit; otherwise says it skipped that step.
# Prints what it compiled; exits non-zero on any error.
#
# Environment: MINICNN_CUDA_ARCHS (default "sm_75 sm_90"), PYTHON (default python3), MINICNN_NVRTC.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
ARCHS="${MINICNN_CUDA_ARCHS:-sm_75 sm_90}"

if ! command -v nvcc >/dev/null 2>&1; then
    echo "compile_cuda.sh: nvcc not found on PATH" >&2
    exit 1
fi
echo "compile_cuda.sh: $(nvcc --version | tail -n 2 | head -n 1)"

# The options and entry-point names, read from kernels/gpu/runtime.py without importing it (that needs CuPy).
read_runtime_py() {
    "$PY" - "$1" <<'EOF'
import ast, json, sys
tree = ast.parse(open("kernels/gpu/runtime.py", encoding="utf-8").read())
values = {}
for node in tree.body:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        name = node.targets[0].id
        if name in ("NVRTC_OPTIONS", "KERNELS", "FLOAT32_ONLY"):
            values[name] = ast.literal_eval(node.value)
missing = {"NVRTC_OPTIONS", "KERNELS", "FLOAT32_ONLY"} - set(values)
if missing:
    sys.exit(f"kernels/gpu/runtime.py does not define {sorted(missing)} as literals")
what = sys.argv[1]
print(" ".join(values["NVRTC_OPTIONS"]) if what == "options" else json.dumps(values))
EOF
}
OPTIONS="$(read_runtime_py options)"
SPEC="$(read_runtime_py all)"
echo "compile_cuda.sh: options from kernels/gpu/runtime.py NVRTC_OPTIONS: ${OPTIONS:-<none>}"

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

shopt -s nullglob
SOURCES=(kernels/*.cu)
if [ "${#SOURCES[@]}" -eq 0 ]; then
    echo "compile_cuda.sh: no kernels/*.cu found" >&2
    exit 1
fi

for cu in "${SOURCES[@]}"; do
    name="$(basename "$cu" .cu)"
    for arch in $ARCHS; do
        # shellcheck disable=SC2086  # OPTIONS is a list of separate flags
        nvcc --cubin -arch="$arch" $OPTIONS -Werror all-warnings -Wno-deprecated-gpu-targets \
            -o "$OUT/$name.$arch.cubin" "$cu"
        echo "nvcc:  $cu -> $name.$arch.cubin ($(wc -c <"$OUT/$name.$arch.cubin") bytes)"
    done
done

# Every entry point that the GPU runtime looks up must be in every cubin of its .cu file.
"$PY" - "$OUT" "$SPEC" "$ARCHS" <<'EOF'
import json, os, sys
out, spec, archs = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3].split()
bad = []
for module, kernels in spec["KERNELS"].items():
    if not os.path.exists(f"kernels/{module}.cu"):
        bad.append(f"kernels/{module}.cu (named in runtime.KERNELS) does not exist")
        continue
    for arch in archs:
        blob = open(os.path.join(out, f"{module}.{arch}.cubin"), "rb").read()
        for base in kernels:
            for suffix in (["f32"] if base in spec["FLOAT32_ONLY"] else ["f32", "f64"]):
                if (f"{base}_{suffix}".encode() + b"\0") not in blob:
                    bad.append(f"{module}.{arch}.cubin lacks the entry point {base}_{suffix}")
if bad:
    sys.exit("compile_cuda.sh: " + "\n".join(bad))
count = sum(len(k) for k in spec["KERNELS"].values())
print(f"entry points: all {count} kernels named in runtime.KERNELS found in every cubin ({', '.join(archs)})")
EOF

# NVRTC, the run-time compiler CuPy uses, when its library is on this machine.
"$PY" - "$SPEC" "$ARCHS" <<'EOF'
import ctypes, ctypes.util, glob, importlib.util, json, os, sys

spec, archs = json.loads(sys.argv[1]), sys.argv[2].split()

def candidates():
    if os.environ.get("MINICNN_NVRTC"):
        yield os.environ["MINICNN_NVRTC"]
    found = importlib.util.find_spec("nvidia")  # the pip wheels nvidia-cuda-nvrtc(-cuXX)
    for root in (list(found.submodule_search_locations) if found and found.submodule_search_locations else []):
        yield from sorted(glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so*")))
    name = ctypes.util.find_library("nvrtc")
    if name:
        yield name
    for d in ("/usr/local/cuda/lib64", "/usr/local/cuda/lib", "/usr/lib/x86_64-linux-gnu"):
        yield from sorted(glob.glob(os.path.join(d, "libnvrtc.so*")))

lib = None
for path in candidates():
    if "builtins" in os.path.basename(path) or ".alt." in os.path.basename(path):
        continue
    try:
        # libnvrtc dlopens libnvrtc-builtins by name: load the one beside it first (pip wheels have no rpath to it)
        for builtins in sorted(glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so*"))):
            if ".alt." not in builtins:
                ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
        lib = ctypes.CDLL(path)
        break
    except OSError:
        continue
if lib is None:
    print("nvrtc: libnvrtc not found (pip install nvidia-cuda-nvrtc, or set MINICNN_NVRTC=/path/libnvrtc.so.13): "
          "NVRTC compile check skipped, nvcc check done")
    sys.exit(0)

major, minor = ctypes.c_int(), ctypes.c_int()
lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
lib.nvrtcGetErrorString.restype = ctypes.c_char_p
tree_options = spec["NVRTC_OPTIONS"]

def check(status, what):
    if status != 0:
        raise RuntimeError(f"{what}: {lib.nvrtcGetErrorString(status).decode()}")

failures = []
for path in sorted(glob.glob("kernels/*.cu")):
    module = os.path.basename(path)[:-3]
    kernels = spec["KERNELS"].get(module, [])
    source = open(path, "rb").read()
    for arch in archs:
        prog = ctypes.c_void_p()
        check(lib.nvrtcCreateProgram(ctypes.byref(prog), source, f"{module}.cu".encode(), 0, None, None),
              "nvrtcCreateProgram")
        opts = [f"--gpu-architecture={arch}".encode()] + [o.encode() for o in tree_options]
        status = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        text = log.value.decode(errors="replace").strip()
        if status != 0:
            failures.append(f"nvrtc: kernels/{module}.cu for {arch} failed:\n{text}")
        else:
            cubin_size = ctypes.c_size_t()
            check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(cubin_size)), "nvrtcGetCUBINSize")
            blob = ctypes.create_string_buffer(cubin_size.value)
            check(lib.nvrtcGetCUBIN(prog, blob), "nvrtcGetCUBIN")
            data = blob.raw
            for base in kernels:
                for suffix in (["f32"] if base in spec["FLOAT32_ONLY"] else ["f32", "f64"]):
                    if (f"{base}_{suffix}".encode() + b"\0") not in data:
                        failures.append(f"nvrtc: {module}.cu for {arch} lacks the entry point {base}_{suffix}")
            note = f" (log: {text})" if text else ""
            print(f"nvrtc: kernels/{module}.cu -> {arch} cubin ({cubin_size.value} bytes){note}")
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
if failures:
    sys.exit("\n".join(failures))
print(f"nvrtc: NVRTC {major.value}.{minor.value} compiled every kernels/*.cu with options {tuple(tree_options)}")
EOF
echo "compile_cuda.sh: OK"

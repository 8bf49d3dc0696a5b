"""One contract, several backends, and imports that flow one way: kernels/ is the ground floor, the engine reaches it
only through minicnn/backend.py, and no module changes another module's settings by assigning to its attributes."""
import ast
import importlib
import inspect
import os
import types

import pytest

import minicnn
from minicnn.kernels import contract, cpu, numpy_backend
from cuda_host import HostModule, host_cupy, load_gpu_package

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KERNELS = os.path.join(ROOT, "kernels")


def python_files(folder):
    for parent, _, names in os.walk(folder):
        yield from (os.path.join(parent, n) for n in sorted(names) if n.endswith(".py"))


def imported_modules(path, package):
    """Absolute names of the modules a file imports (relative imports resolved against `package`)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def package_of(path, root, name):
    """The package a file under `root` (installed as `name`) belongs to, e.g. kernels/gpu/ops.py -> minicnn.kernels.gpu."""
    folder = os.path.relpath(os.path.dirname(path), root)
    return name if folder == "." else name + "." + folder.replace(os.sep, ".")


def test_every_backend_defines_the_whole_contract_with_the_cpus_parameters(tmp_path):
    HostModule.build_root = str(tmp_path)
    gpu = load_gpu_package(host_cupy(HostModule))   # kernels/gpu/ with NumPy standing in for CuPy
    for name in contract.FUNCTIONS:
        reference = inspect.signature(getattr(cpu, name))
        for backend in (numpy_backend, gpu):
            assert callable(getattr(backend, name, None)), f"{backend.__name__} lacks {name}"
            params = dict(inspect.signature(getattr(backend, name)).parameters)
            if name == "matmul" and backend is gpu:
                assert params.pop("route").default == "gemm"   # the GPU's extra choice, bound by the engine
            assert list(params.values()) == list(reference.parameters.values()), (backend.__name__, name)
    for backend in (cpu, numpy_backend, gpu):
        for name in contract.ATTRIBUTES:
            assert hasattr(backend, name), f"{backend.__name__} lacks {name}"
        assert isinstance(backend.capabilities, types.MappingProxyType)
        with pytest.raises(TypeError):
            backend.capabilities["conv_algorithms"] = ()   # read-only


def test_the_gpu_backend_bound_to_cublas_keeps_the_contract(tmp_path):
    HostModule.build_root = str(tmp_path)
    gpu = load_gpu_package(host_cupy(HostModule))
    routed = gpu.with_gemm("cupy")
    assert all(callable(getattr(routed, name)) for name in contract.FUNCTIONS)
    assert routed.matmul.keywords == {"route": "cupy"} and gpu.with_gemm("gemm") is gpu
    with pytest.raises(ValueError, match="route must be one of"):
        gpu.with_gemm("blas")


def test_kernels_import_nothing_from_the_engine():
    for path in python_files(KERNELS):
        package = package_of(path, KERNELS, "minicnn.kernels")
        for module in imported_modules(path, package):
            if module == "minicnn" or module.startswith("minicnn."):
                assert module.startswith("minicnn.kernels"), f"{os.path.relpath(path, ROOT)} imports {module}"


@pytest.mark.parametrize("folder", ["minicnn", "examples", "benchmarks"])
def test_the_engine_and_examples_reach_kernels_only_through_the_backend(folder):
    allowed = {os.path.join(ROOT, "minicnn", "backend.py"), os.path.join(ROOT, "minicnn", "_kernels_loader.py")}
    for path in python_files(os.path.join(ROOT, folder)):
        if path in allowed:
            continue
        package = package_of(path, os.path.join(ROOT, "minicnn"), "minicnn") if folder == "minicnn" else "__main__"
        for module in imported_modules(path, package):
            assert not module.startswith("minicnn.kernels"), f"{os.path.relpath(path, ROOT)} imports {module}"


@pytest.mark.parametrize("folder", ["minicnn", "kernels", "examples", "benchmarks"])
def test_no_code_assigns_to_another_modules_attributes(folder):
    """`module.setting = value` (or setattr on a module) outside the module itself: choices go through
    minicnn.config, capabilities are read-only."""
    for path in python_files(os.path.join(ROOT, folder)):
        tree = ast.parse(open(path, encoding="utf-8").read())
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    name = alias.asname or alias.name.split(".")[0]
                    target = alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
                    try:
                        if isinstance(node, ast.Import) or inspect.ismodule(importlib.import_module(target)):
                            modules.add(name)
                    except Exception:   # an imported class or function, not a module
                        pass
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                for leaf in (t.elts if isinstance(t, ast.Tuple) else [t]):   # module.name = ..., not module.d[k] = ...
                    if isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name):
                        assert leaf.value.id not in modules, \
                            f"{os.path.relpath(path, ROOT)}:{leaf.lineno} assigns {leaf.value.id}.{leaf.attr}"
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr" and node.args:
                first = node.args[0]
                assert not (isinstance(first, ast.Name) and first.id in modules), \
                    f"{os.path.relpath(path, ROOT)}:{node.lineno} setattr on module {first.id}"


def test_importing_minicnn_loads_no_backend_until_an_array_needs_one():
    import subprocess
    import sys
    code = ("import sys, minicnn, minicnn.nn, minicnn.training, minicnn.data;"
            "print(sorted(m for m in ('numba', 'cupy', 'minicnn.kernels.cpu', 'minicnn.kernels.gpu') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout

"""The choices a user can make, in one object: which convolution algorithm, which GPU matrix product, fusion, CPU kernels.

    >>> from minicnn import config
    >>> config.current().conv
    'auto'
    >>> with config.using(conv="im2col"):     # every convolution in this block runs the lesson path
    ...     config.current().conv
    'im2col'

Fields (a frozen dataclass: change it with `using`, never by assignment):

    conv     "auto": the backend picks the fastest algorithm it has for each layer's shape;
             "im2col": the lesson path everywhere (im2col, one GEMM per group, col2im: functional/conv.py);
             a fast algorithm by name ("pointwise", "whole_image", "depthwise", "direct", "wide"): that one
             where it serves the layer, the lesson path elsewhere. Each backend says which it has in its
             read-only `capabilities` (kernels/cpu.py, numpy_backend.py, gpu/).
    gemm     GPU matrix products: "gemm" (gemm.cu, our tiled kernel) or "cupy" (cupy.matmul, i.e. cuBLAS).
    fuse     True: in training, a ReLU -> BatchNorm2d -> Dropout run is one operation (minicnn/nn/fuse.py).
    kernels  the CPU kernels: "numba" (compiled loops) or "numpy" (plain NumPy, runs without Numba installed).
             Default: $MINICNN_KERNELS, else "numba" when Numba can be imported, else "numpy".

The configuration is per thread (a context variable): `using` changes it for the code inside the block
only, so tests and benchmarks that switch algorithms cannot leak their choice into each other.
"""
import contextlib
import contextvars
import dataclasses
import importlib.util
import os

CONV_ALGORITHMS = ("auto", "im2col", "pointwise", "whole_image", "depthwise", "direct", "wide")
GEMM_ROUTES = ("gemm", "cupy")
CPU_KERNELS = ("numba", "numpy")


def default_cpu_kernels():
    """$MINICNN_KERNELS when set, else "numba" if Numba is installed, else "numpy"."""
    chosen = os.environ.get("MINICNN_KERNELS", "").strip().lower()
    if chosen:
        if chosen not in CPU_KERNELS:
            raise ValueError(f"MINICNN_KERNELS={chosen!r}: choose one of {', '.join(CPU_KERNELS)}")
        return chosen
    return "numba" if _numba_installed() else "numpy"


def _numba_installed():
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):   # sys.modules["numba"] is None: marked as not importable
        return False


@dataclasses.dataclass(frozen=True)
class Config:
    conv: str = "auto"
    gemm: str = "gemm"
    fuse: bool = True
    kernels: str = dataclasses.field(default_factory=default_cpu_kernels)

    def __post_init__(self):
        for name, allowed in (("conv", CONV_ALGORITHMS), ("gemm", GEMM_ROUTES), ("kernels", CPU_KERNELS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"config: {name}={value!r} is not one of {', '.join(allowed)}")
        if not isinstance(self.fuse, bool):
            raise TypeError(f"config: fuse must be True or False, got {self.fuse!r}")


_current = contextvars.ContextVar("minicnn_config", default=None)
_default = None


def current():
    """The configuration in force here: the innermost `using` block's, else the defaults."""
    config = _current.get()
    if config is None:
        global _default
        if _default is None:
            _default = Config()
        config = _default
    return config


@contextlib.contextmanager
def using(**changes):
    """Run the block with some fields changed, e.g. `with config.using(conv="im2col", fuse=False):`."""
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(Config)})
    if unknown:
        raise TypeError(f"config.using: unknown field(s) {', '.join(unknown)}; "
                        f"the fields are {', '.join(f.name for f in dataclasses.fields(Config))}")
    token = _current.set(dataclasses.replace(current(), **changes))
    try:
        yield current()
    finally:
        _current.reset(token)

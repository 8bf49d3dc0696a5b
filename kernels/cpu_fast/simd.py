"""Compiling the register tiles: the CPU's vector registers, LLVM's vector width and vectorizers, and calls by address.

Vector registers. A register tile keeps its running sums in vector registers, so its best shape depends on
how many registers the CPU has and how wide they are: 32 registers of 16 floats with AVX-512, 16 of 8
floats with AVX2. `has_512_bit_registers()` tells which (from the CPU Numba compiles for); the tiles'
modules pick their shapes from it (direct.py, direct_grad.py, lanes.py).

Vector width. On CPUs with AVX-512, LLVM's cost model prefers 256-bit vectors (ymm registers, 8 floats): on
the first AVX-512 chips, 512-bit instructions lowered the clock of the whole core. Numba compiles every
kernel with that preference, so even a loop written for 16-float vectors runs 8 floats at a time. LLVM lets
one function override it with two string attributes:
    "prefer-vector-width"="512"       the vectorizers may build 512-bit vectors (zmm, 16 floats)
    "min-legal-vector-width"="512"    and the code generator keeps them whole instead of splitting them in two
`use_512_bit_vectors()`, called once at the top of a kernel, adds both to the kernel being compiled and
emits no instruction. Other kernels keep the default. Where the CPU has no 512-bit registers (AVX2 only,
or not x86) the attributes change nothing: the widest legal vector is used. (llvmlite's FunctionAttributes
accepts only a fixed list of attribute names, none of them strings with a value; the attribute is added to
the underlying set directly, and llvmlite writes it into the function's IR text as it is.)

Vectorizers. Numba leaves LLVM's SLP vectorizer off and its loop vectorizer on, as global settings read when
a function is compiled. The tiles want their own (`compile_once`): the forward tile SLP on and the loop
vectorizer off, the weight-gradient tile the other way round.

Calls by address. A kernel that calls another links the callee's code into its own, and LLVM optimizes and
compiles the whole again: a chunk kernel (parallel.py) that calls a tile of a few hundred statements pays
the tile's compilation a second time, and once more in every other kernel that calls it. `compile_once`
returns the compiled tile as a `KernelAddress`, which a kernel takes as an argument and calls through its
address (Numba's first-class function type): the kernel is compiled without the tile's code, one kernel
serves every tile of the same signature, and the tile is compiled once, with its own vectorizer settings.
"""
import threading

import llvmlite.binding as llvm
import numba
from numba.core import types
from numba.extending import intrinsic

WIDE_VECTORS = ('"prefer-vector-width"="512"', '"min-legal-vector-width"="512"')


def has_512_bit_registers():
    """True when the CPU Numba compiles for has AVX-512 (32 vector registers of 16 floats), False for AVX2 and others.

    NUMBA_CPU_FEATURES, when set, is what Numba compiles for; else the host CPU's features."""
    features = numba.config.CPU_FEATURES
    if features:
        return "+avx512f" in features.split(",")
    return bool(llvm.get_host_cpu_features().get("avx512f", False))


@intrinsic
def use_512_bit_vectors(typingctx):
    """No-op call that marks the calling kernel for 512-bit vectors (see the module docstring)."""
    def codegen(context, builder, signature, args):
        for attribute in WIDE_VECTORS:
            set.add(builder.function.attributes, attribute)   # past llvmlite's list of known names, on purpose
        return context.get_dummy_value()
    return types.void(), codegen


class KernelAddress(types.WrapperAddressProtocol):
    """One compiled signature of a Numba kernel, passed to other kernels as a function they call by address.

    Numba types it as FunctionType(signature) (its wrapper address protocol): a kernel that takes it as an argument
    is compiled once for that type, whichever kernel of that signature it is given."""

    def __init__(self, dispatcher, signature):
        self.dispatcher, self.sig = dispatcher, signature
        compiled = dispatcher.get_compile_result(signature)
        self.address = compiled.library.get_pointer_to_function(compiled.fndesc.llvm_cfunc_wrapper_name)

    def __wrapper_address__(self):
        return self.address

    def signature(self):
        return self.sig

    def __call__(self, *args):
        return self.dispatcher(*args)


_flags_lock = threading.RLock()   # compile_once holds it around compile_vectorized
_ready = {}   # (function, dtype) -> KernelAddress, filled by compile_once


def compile_vectorized(functions, signature, slp, loop):
    """Compile each Numba function for `signature` with the SLP and loop vectorizers on or off as given.

    The two switches are Numba's global settings, read when a function is compiled (or loaded from
    Numba's on-disk cache): set them, compile, put them back, one thread at a time; two threads
    interleaving here could leave them flipped for every later kernel of the process.
    """
    with _flags_lock:
        saved = numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE
        numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE = int(slp), int(loop)
        try:
            for f in functions:
                f.compile(signature)
        finally:
            numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE = saved


def compile_once(function, dtype, signature_of, slp, loop):
    """`function` compiled by compile_vectorized for signature_of(Numba's type of dtype), as a KernelAddress: compiled
    (or loaded from Numba's disk cache) the first time it is asked for with this dtype; later calls only look it up.
    The engine's first call comes from several threads at once: the check is repeated under the lock, so each
    pair is compiled once."""
    key = (function, dtype)
    if key not in _ready:
        with _flags_lock:
            if key not in _ready:
                args = signature_of(numba.from_dtype(dtype))
                compile_vectorized([function], args, slp, loop)
                _ready[key] = KernelAddress(function, types.none(*args))
    return _ready[key]

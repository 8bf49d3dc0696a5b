"""Vector width: asking LLVM for 512-bit vectors in one kernel, through a Numba intrinsic that sets a function attribute.

On CPUs with AVX-512, LLVM's cost model prefers 256-bit vectors (ymm registers, 8 floats): on the first
AVX-512 chips, 512-bit instructions lowered the clock of the whole core. Numba compiles every kernel with
that preference, so even a loop written for 16-float vectors runs 8 floats at a time.

LLVM lets one function override it with two string attributes:
    "prefer-vector-width"="512"       the vectorizers may build 512-bit vectors (zmm, 16 floats)
    "min-legal-vector-width"="512"    and the code generator keeps them whole instead of splitting them in two
`use_512_bit_vectors()`, called once at the top of a kernel, adds both to the kernel being compiled and
emits no instruction. Other kernels keep the default. Where the CPU has no 512-bit registers (AVX2 only,
or not x86) the attributes change nothing: the widest legal vector is used, as before.

Measured on this project's reference machine (benchmarks/README.md, session 8), single thread, eip4's second
layer: the register tiles of conv_direct.py and conv_weight_grad.py run 2.3x faster with it (125 against
53 GFLOP/s for the forward tile), which is what their tiles are shaped for (16 vector registers of 16 floats).

llvmlite's FunctionAttributes accepts only a fixed list of attribute names, none of them strings with a
value; the attribute is added to the underlying set directly, and llvmlite writes it into the function's
IR text as it is (`define ... "prefer-vector-width"="512"`).
"""
import threading

import numba
from numba.core import types
from numba.extending import intrinsic

WIDE_VECTORS = ('"prefer-vector-width"="512"', '"min-legal-vector-width"="512"')


@intrinsic
def use_512_bit_vectors(typingctx):
    """No-op call that marks the calling kernel for 512-bit vectors (see the module docstring)."""
    def codegen(context, builder, signature, args):
        for attribute in WIDE_VECTORS:
            set.add(builder.function.attributes, attribute)   # past llvmlite's list of known names, on purpose
        return context.get_dummy_value()
    return types.void(), codegen


_flags_lock = threading.RLock()   # compile_once holds it around compile_vectorized
_ready = set()   # (function, dtype) pairs compile_once has compiled


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
    """`function`, compiled by compile_vectorized for signature_of(Numba's type of dtype) the first time it is asked
    for with this dtype; later calls only look it up. The engine's first call comes from several threads at
    once: the check is repeated under the lock, so each pair is compiled once."""
    key = (function, dtype)
    if key not in _ready:
        with _flags_lock:
            if key not in _ready:
                compile_vectorized([function], signature_of(numba.from_dtype(dtype)), slp, loop)
                _ready.add(key)
    return function

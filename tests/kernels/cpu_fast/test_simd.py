"""kernels/cpu_fast/simd.py: the 512-bit vector attribute reaches the compiled kernel (and only it), compiling with
chosen vectorizer settings puts Numba's global settings back, kernels call kernels by address, and the CPU's registers
are read from what Numba compiles for."""
import numba
import numpy as np
import pytest
from numba import njit

from minicnn.kernels.cpu_fast.simd import (WIDE_VECTORS, KernelAddress, compile_once, compile_vectorized,
                                          has_512_bit_registers, use_512_bit_vectors)


@njit
def scaled_sum(a, s):
    use_512_bit_vectors()
    total = 0.0
    for v in a:
        total += s * v
    return total


@njit
def plain_sum(a, s):
    total = 0.0
    for v in a:
        total += s * v
    return total


def test_the_attributes_are_in_the_kernels_llvm_ir_and_not_in_others():
    a = np.arange(100.0)
    assert scaled_sum(a, 2.0) == plain_sum(a, 2.0) == 2.0 * a.sum()
    ir = scaled_sum.inspect_llvm(scaled_sum.signatures[0])
    for attribute in WIDE_VECTORS:
        assert attribute in ir
    other = plain_sum.inspect_llvm(plain_sum.signatures[0])
    assert not any(attribute in other for attribute in WIDE_VECTORS)


@pytest.mark.parametrize("slp, loop", [(True, False), (False, True)])
def test_compile_vectorized_restores_numbas_settings_even_when_compiling_fails(slp, loop):
    before = numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE

    @njit
    def needs_an_array(a):
        return a[0] + 1

    compile_vectorized([needs_an_array], (numba.float64[::1],), slp, loop)
    assert (numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE) == before
    with pytest.raises(Exception):
        compile_vectorized([needs_an_array], (numba.types.unicode_type,), slp, loop)
    assert (numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE) == before


# ---- calls by address ------------------------------------------------------------------------------------------
@njit
def doubled(a):
    for i in range(a.shape[0]):
        a[i] *= 2.0


@njit
def tripled(a):
    for i in range(a.shape[0]):
        a[i] *= 3.0


@njit
def apply(f, a):
    f(a)


def test_a_kernel_calls_another_by_address_and_is_compiled_once_for_all_of_one_signature():
    """apply(KernelAddress(doubled), a), then apply(KernelAddress(tripled), a): both run, apply is compiled once, and
    its code holds neither callee (they are called through the address, not linked in)."""
    signature = numba.types.none(numba.float64[::1])
    a = np.ones(4)
    apply(KernelAddress(doubled, signature), a)
    apply(KernelAddress(tripled, signature), a)
    np.testing.assert_array_equal(a, np.full(4, 6.0))
    assert len(apply.signatures) == 1
    ir = apply.inspect_llvm(apply.signatures[0])
    assert "doubled" not in ir and "tripled" not in ir


def test_compile_once_compiles_a_kernel_once_per_dtype_and_gives_its_address(rng):
    first = compile_once(doubled, np.dtype(np.float64), lambda nb: (nb[::1],), slp=False, loop=True)
    assert compile_once(doubled, np.dtype(np.float64), lambda nb: (nb[::1],), slp=True, loop=False) is first
    assert isinstance(first, KernelAddress) and first.signature() == numba.types.none(numba.float64[::1])


@pytest.mark.parametrize("features, expected", [("+avx2,+fma,+avx512f,+avx512bw", True), ("+avx2,+fma,-avx512f", False),
                                                ("+neon", False)])
def test_512_bit_registers_are_those_of_the_cpu_numba_compiles_for(features, expected, monkeypatch):
    """NUMBA_CPU_FEATURES, when set, is what Numba compiles for; else the host CPU's features decide."""
    monkeypatch.setattr(numba.config, "CPU_FEATURES", features)
    assert has_512_bit_registers() is expected
    monkeypatch.setattr(numba.config, "CPU_FEATURES", None)
    import llvmlite.binding as llvm
    assert has_512_bit_registers() is bool(llvm.get_host_cpu_features().get("avx512f", False))

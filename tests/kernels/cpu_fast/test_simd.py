"""kernels/simd.py: the 512-bit vector attribute reaches the compiled kernel (and only it), and compiling with chosen
vectorizer settings puts Numba's global settings back."""
import numba
import numpy as np
import pytest
from numba import njit

from minicnn.kernels.cpu_fast.simd import WIDE_VECTORS, compile_vectorized, use_512_bit_vectors


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

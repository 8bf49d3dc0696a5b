"""The ReLU kernels (kernels/relu.py) against their NumPy one-liners: the same values, NaN and infinities included."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from minicnn.kernels import cpu
from minicnn.kernels.numpy_backend import relu_backward as relu_backward_numpy, relu_forward as relu_forward_numpy


def arrays(dtype):
    return hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=4, max_side=6),
                      elements=st.floats(allow_nan=True, allow_infinity=True, width=np.dtype(dtype).itemsize * 8))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([np.float32, np.float64]).flatmap(lambda d: st.tuples(arrays(d), arrays(d))))
def test_relu_kernels_equal_numpy(pair):
    x, g = pair
    g = np.resize(g, x.shape)
    y = cpu.relu_forward(x)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, relu_forward_numpy(x))            # NaN where numpy gives NaN
    with np.errstate(invalid="ignore"):   # inf * 0 in the NumPy product: NaN, as in the kernel
        np.testing.assert_array_equal(cpu.relu_backward(g, y), relu_backward_numpy(g, y))


def test_relu_backward_passes_the_gradient_only_where_the_output_is_positive():
    y = np.array([[0.0, 2.0], [0.5, 0.0]], np.float32)
    g = np.array([[1.0, -3.0], [4.0, 5.0]], np.float32)
    np.testing.assert_array_equal(cpu.relu_backward(g, y), [[0.0, -3.0], [4.0, 0.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_kernels_accept_non_contiguous_views(dtype):
    x = np.random.default_rng(0).standard_normal((4, 6, 5)).astype(dtype).transpose(2, 0, 1)
    assert not x.flags.c_contiguous
    np.testing.assert_array_equal(cpu.relu_forward(x), np.maximum(x, 0))
    np.testing.assert_array_equal(cpu.relu_backward(x, x), x * (x > 0))

"""Max and average pooling: forward against the definition and PyTorch, the documented tie rule, accumulation.

Tie rule (kernels/pool.py): the FIRST maximum in row-major window order (kh, then kw) wins and alone receives
the gradient; a pixel that wins several overlapping windows receives the sum of their gradients.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import minicnn.functional as F
from minicnn import Tensor
from minicnn.kernels import cpu
from helpers import distinct_values, requires_torch, torch_module

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def pool_cases(draw):
    """(shape, kernel, stride, padding, seed) with padding <= kernel // 2 and the window fitting the padded input."""
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    SH, SW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    PH, PW = draw(st.integers(0, KH // 2)), draw(st.integers(0, KW // 2))
    assume(KH <= H + 2 * PH and KW <= W + 2 * PW)
    return (N, C, H, W), (KH, KW), (SH, SW), (PH, PW), draw(st.integers(0, 2 ** 31 - 1))


def avg_pool_by_definition(x, kernel, stride, padding):
    """Window sums over the zero-padded input divided by KH*KW (padding counted, like count_include_pad=True)."""
    (KH, KW), (SH, SW), (PH, PW) = kernel, stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    N, C, H, W = x.shape
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    y = np.empty((N, C, OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            y[:, :, oh, ow] = xp[:, :, oh * SH:oh * SH + KH, ow * SW:ow * SW + KW].sum(axis=(2, 3)) / (KH * KW)
    return y


def max_pool_grad_by_definition(x, gy, kernel, stride, padding):
    """Each window's gradient to its first maximum in row-major order (ties included), summed over windows."""
    (KH, KW), (SH, SW), (PH, PW) = kernel, stride, padding
    N, C, H, W = x.shape
    gx = np.zeros(x.shape)
    for n in range(N):
        for c in range(C):
            for oh in range(gy.shape[2]):
                for ow in range(gy.shape[3]):
                    best, where = -np.inf, None
                    for kh in range(KH):
                        for kw in range(KW):
                            ih, iw = oh * SH - PH + kh, ow * SW - PW + kw
                            if 0 <= ih < H and 0 <= iw < W and (where is None or x[n, c, ih, iw] > best):
                                best, where = x[n, c, ih, iw], (ih, iw)
                    gx[n, c, where[0], where[1]] += gy[n, c, oh, ow]
    return gx


@SETTINGS
@given(pool_cases(), st.booleans())
def test_max_pool2d_matches_the_definition(case, with_ties):
    shape, kernel, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    # with_ties: few distinct (all negative) values, so windows hold ties and padding (-inf) must never win over them
    x = -rng.integers(1, 3, shape).astype(np.float64) if with_ties else rng.standard_normal(shape)
    xt = Tensor(x, requires_grad=True)
    y = F.max_pool2d(xt, kernel, stride, padding)
    np.testing.assert_array_equal(y.data, F.max_pool2d_reference(x, kernel, stride, padding))
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    np.testing.assert_allclose(xt.grad, max_pool_grad_by_definition(x, gy, kernel, stride, padding), rtol=1e-12)


@SETTINGS
@given(pool_cases())
def test_avg_pool2d_matches_the_definition(case):
    shape, kernel, stride, padding, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    y = F.avg_pool2d(Tensor(x), kernel, stride, padding)
    np.testing.assert_allclose(y.data, avg_pool_by_definition(x, kernel, stride, padding), rtol=1e-12, atol=1e-14)


def test_max_pool_tie_in_an_all_equal_window_gives_the_whole_gradient_to_the_first_pixel():
    x = Tensor(np.full((1, 1, 2, 3), 7.0), requires_grad=True)
    y = F.max_pool2d(x, (2, 3))
    assert y.shape == (1, 1, 1, 1) and y.item() == 7.0
    y.backward(np.full((1, 1, 1, 1), 5.0))
    expected = np.zeros((2, 3))
    expected[0, 0] = 5.0
    np.testing.assert_array_equal(x.grad[0, 0], expected)


def test_max_pool_tie_picks_the_first_maximum_in_row_major_order():
    # maxima at (0, 2) and (1, 0) of the 2x3 window: row-major order reaches (0, 2) first
    x = Tensor(np.array([[[[1.0, 0.0, 9.0], [9.0, 2.0, 9.0]]]]), requires_grad=True)
    F.sum(F.max_pool2d(x, (2, 3))).backward()
    np.testing.assert_array_equal(x.grad[0, 0], [[0, 0, 1], [0, 0, 0]])


def test_max_pool_tie_with_padding_goes_to_the_first_real_pixel():
    # all values negative: padding is -inf, not 0, so the first real pixel of each window wins
    x = Tensor(np.full((1, 1, 2, 2), -3.0), requires_grad=True)
    y = F.max_pool2d(x, 3, stride=1, padding=1)
    np.testing.assert_array_equal(y.data, np.full((1, 1, 2, 2), -3.0))
    F.sum(y).backward()
    np.testing.assert_array_equal(x.grad[0, 0], [[4, 0], [0, 0]])


def test_overlapping_windows_accumulate_the_gradient_of_a_pixel_that_wins_several():
    # kernel 3 stride 1 on 4x4: the 2x2 output windows all contain (1, 1), the global maximum
    x_np = np.arange(16.0).reshape(1, 1, 4, 4) * -1.0
    x_np[0, 0, 1, 1] = 100.0
    x = Tensor(x_np, requires_grad=True)
    y = F.max_pool2d(x, 3, stride=1)
    gy = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    y.backward(gy)
    expected = np.zeros((4, 4))
    expected[1, 1] = 10.0
    np.testing.assert_array_equal(x.grad[0, 0], expected)


def test_overlapping_kernel3_stride2_shares_the_border_pixel():
    # windows [0..2] and [2..4] along a row share column 2; make it the maximum of both
    x_np = np.zeros((1, 1, 3, 5)) - 1.0
    x_np[0, 0, 1, 2] = 5.0
    x = Tensor(x_np, requires_grad=True)
    y = F.max_pool2d(x, 3, stride=2)
    assert y.shape == (1, 1, 1, 2)
    y.backward(np.array([[[[0.25, 0.5]]]]))
    assert x.grad[0, 0, 1, 2] == 0.75 and np.count_nonzero(x.grad) == 1


def test_max_pool_argmax_kernel_stores_flat_indices_of_winners():
    x = np.array([[[[0.0, 5.0], [3.0, 1.0]]]])
    y, argmax = cpu.max_pool2d_forward(x, 2, 2, 2, 2, 0, 0)
    assert argmax.item() == 1 and y.item() == 5.0


def test_avg_pool_backward_spreads_evenly_and_accumulates_overlaps():
    x = Tensor(np.zeros((1, 1, 3, 3)), requires_grad=True)
    F.sum(F.avg_pool2d(x, 2, stride=1)).backward()
    np.testing.assert_allclose(x.grad[0, 0], np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4)


def test_avg_pool_counts_padding_as_zeros():
    x = Tensor(np.ones((1, 1, 2, 2)))
    y = F.avg_pool2d(x, 2, stride=2, padding=1)
    np.testing.assert_allclose(y.data, np.full((1, 1, 2, 2), 0.25))


def test_stride_defaults_to_the_kernel_size():
    x = Tensor(distinct_values(np.random.default_rng(0), (1, 1, 6, 6)))
    assert F.max_pool2d(x, 2).shape == (1, 1, 3, 3)
    assert F.avg_pool2d(x, 3).shape == (1, 1, 2, 2)


def test_global_avg_pool2d_is_the_mean_of_each_plane():
    x_np = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    x = Tensor(x_np, requires_grad=True)
    y = F.global_avg_pool2d(x)
    np.testing.assert_allclose(y.data, x_np.mean(axis=(2, 3)))
    F.sum(y).backward()
    np.testing.assert_allclose(x.grad, np.full(x_np.shape, 1 / 20))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_keeps_the_dtype(dtype):
    x = Tensor(np.ones((1, 1, 4, 4), dtype), requires_grad=True)
    for op in (F.max_pool2d, F.avg_pool2d):
        y = op(x, 2)
        assert y.dtype == dtype
        F.sum(y).backward()
        assert x.grad.dtype == dtype


# ---- against PyTorch -----------------------------------------------------------------------------------------

@requires_torch
@SETTINGS
@given(pool_cases())
def test_max_and_avg_pool2d_match_torch(case):
    torch = torch_module()
    shape, kernel, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x = distinct_values(rng, shape)  # no ties: PyTorch does not document which tied element wins
    for ours, theirs in ((F.max_pool2d, torch.nn.functional.max_pool2d),
                         (F.avg_pool2d, torch.nn.functional.avg_pool2d)):
        xt = Tensor(x, requires_grad=True)
        y = ours(xt, kernel, stride, padding)
        xr = torch.tensor(x, requires_grad=True)
        yr = theirs(xr, kernel, stride, padding)
        assert tuple(yr.shape) == y.shape
        gy = rng.standard_normal(y.shape)
        y.backward(gy)
        yr.backward(torch.tensor(gy))
        np.testing.assert_allclose(y.data, yr.detach().numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(xt.grad, xr.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("H, W", [(2, 2), (24, 24), (7, 9)])
def test_max_pool_2x2_fast_path_is_the_generic_kernel_bit_for_bit(H, W, rng):
    """The 2x2 stride-2 kernel (no bounds tests) against the generic window loop: values, winners, ties (equal
    neighbours) and NaNs (first in a window, and later in one) alike; odd sizes drop the last row/column."""
    from minicnn.kernels import pool
    x = rng.integers(0, 3, size=(3, 2, H, W)).astype(np.float32)   # few distinct values: many ties
    x[0, 0, 0, 0] = np.nan
    x[1, 1, H - 1, W - 1] = np.nan
    OH, OW = H // 2, W // 2
    y1, a1 = np.empty((3, 2, OH, OW), np.float32), np.empty((3, 2, OH, OW), np.int32)
    y2, a2 = y1.copy(), a1.copy()
    pool._max_forward(x, 2, 2, 2, 2, 0, 0, y1, a1)
    pool._max_forward_2x2(x, y2, a2)
    np.testing.assert_array_equal(y2, y1)
    np.testing.assert_array_equal(a2, a1)

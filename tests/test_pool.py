"""Max and average pooling: forward against the definition and PyTorch, the documented tie and NaN rules, accumulation.

Winner rule (kernels/pool.py, PyTorch's): a NaN anywhere in the window wins -- the LAST NaN in row-major window
order (kh, then kw) when there are several, y is that NaN -- else the FIRST maximum; padding never wins. The
winner alone receives the window's gradient; a pixel that wins several overlapping windows receives the sum.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import minicnn.functional as F
from minicnn import Tensor
from minicnn.kernels import cpu, pool
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


@st.composite
def pool_cases_with_2x2(draw):
    """pool_cases, or (half the time) the 2x2 stride-2 window without padding: the kernels' 2x2 path."""
    case = draw(pool_cases())
    if not draw(st.booleans()):
        return case
    (N, C, _, _), seed = case[0], case[-1]
    return (N, C, draw(st.integers(2, 7)), draw(st.integers(2, 7))), (2, 2), (2, 2), (0, 0), seed


def with_nans(rng, x, share=0.3):
    """x with about `share` of its values NaN (three different NaNs: payloads and signs), and one +inf and one
    -inf in each plane."""
    x = x.copy()
    bits = x.view(np.uint32 if x.dtype == np.float32 else np.uint64)
    nan = ([0x7FC00000, 0xFFC00000, 0x7FC00123] if x.dtype == np.float32 else
           [0x7FF8000000000000, 0xFFF8000000000000, 0x7FF8000000000123])
    where = rng.random(x.shape) < share
    bits[where] = rng.choice(np.array(nan, bits.dtype), size=int(where.sum()))
    N, C, H, W = x.shape
    planes = x.reshape(N * C, H * W)
    for plane in planes:
        plane[rng.choice(H * W, size=min(2, H * W), replace=False)] = [np.inf, -np.inf][:min(2, H * W)]
    return planes.reshape(x.shape)


def same_bits(a, b):
    """Equal bit for bit: a NaN must be the same NaN (sign and payload)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


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


def max_pool_by_rule(x, kernel, stride, padding):
    """(y float64, argmax) from the winner rule as stated, window by window: the real pixels in row-major order;
    the last NaN among them if any, else the first maximum (np.argmax returns the first)."""
    (KH, KW), (SH, SW), (PH, PW) = kernel, stride, padding
    N, C, H, W = x.shape
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    y, argmax = np.empty((N, C, OH, OW)), np.empty((N, C, OH, OW), np.int64)
    for n, c, oh, ow in np.ndindex(N, C, OH, OW):
        cells = [ih * W + iw for ih in range(oh * SH - PH, oh * SH - PH + KH)
                 for iw in range(ow * SW - PW, ow * SW - PW + KW) if 0 <= ih < H and 0 <= iw < W]
        values = x[n, c].reshape(-1)[cells].astype(np.float64)
        nans = np.flatnonzero(np.isnan(values))
        k = nans[-1] if len(nans) else int(np.argmax(values))
        y[n, c, oh, ow], argmax[n, c, oh, ow] = values[k], cells[k]
    return y, argmax


def max_pool_grad_by_definition(x, gy, kernel, stride, padding):
    """Each window's gradient to its winner (max_pool_by_rule), summed over windows in (oh, ow) order in gy's dtype
    (the kernels' order: float32 sums are then exact matches too)."""
    _, argmax = max_pool_by_rule(x, kernel, stride, padding)
    N, C, H, W = x.shape
    gx = np.zeros((N, C, H * W), gy.dtype)
    for n, c, oh, ow in np.ndindex(gy.shape):
        gx[n, c, argmax[n, c, oh, ow]] += gy[n, c, oh, ow]
    return gx.reshape(x.shape)


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


# ---- NaN: the winner rule's other half --------------------------------------------------------------------------

PATHS = ["2x2 path", "generic loop"]   # for the 2x2 stride-2 window: max_pool2d_forward's 2x2 kernel, the window loop


def max_forward(x, window, path="2x2 path"):
    """(y, argmax) from the Numba kernels: max_pool2d_forward (its 2x2 kernel for the 2x2 stride-2 window), or the
    generic window loop called directly."""
    if path == "2x2 path":
        return pool.max_pool2d_forward(x, *window)
    KH, KW, SH, SW, PH, PW = window
    N, C, H, W = x.shape
    y = np.empty((N, C, (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1), x.dtype)
    argmax = np.empty(y.shape, np.int32)
    pool._max_forward(x, KH, KW, SH, SW, PH, PW, y, argmax)
    return y, argmax


def assert_follows_the_rule(x, window, y, argmax):
    """argmax as max_pool_by_rule's, and y the winner itself, bit for bit (NaN payload and sign included)."""
    KH, KW, SH, SW, PH, PW = window
    _, expected = max_pool_by_rule(x, (KH, KW), (SH, SW), (PH, PW))
    np.testing.assert_array_equal(argmax, expected)
    N, C = x.shape[:2]
    winners = np.take_along_axis(x.reshape(N, C, -1), argmax.reshape(N, C, -1).astype(np.int64), axis=2)
    assert same_bits(y, winners.reshape(y.shape)), (y, winners)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("position", range(4))
def test_max_pool_a_nan_anywhere_in_the_window_wins_and_takes_the_gradient(position, path, dtype):
    x = np.array([[[[1.0, 4.0], [3.0, 2.0]]]], dtype)
    x.reshape(-1)[position] = np.nan
    y, argmax = max_forward(x, (2, 2, 2, 2, 0, 0), path)
    assert np.isnan(y.item()) and argmax.item() == position
    gx = pool.max_pool2d_backward(np.full((1, 1, 1, 1), 5.0, dtype), argmax, 2, 2, 2, 2, 2, 2)
    np.testing.assert_array_equal(gx.reshape(-1), np.eye(4)[position] * 5.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("position", range(4))
def test_max_pool2d_op_sends_the_gradient_to_the_nan(position, dtype):
    x_np = np.array([[[[1.0, 4.0], [3.0, 2.0]]]], dtype)
    x_np.reshape(-1)[position] = np.nan
    x = Tensor(x_np, requires_grad=True)
    y = F.max_pool2d(x, 2)
    assert np.isnan(y.item())
    y.backward(np.full((1, 1, 1, 1), 5.0, dtype))
    np.testing.assert_array_equal(x.grad.reshape(-1), np.eye(4)[position] * 5.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K, nan_positions, winner, path", [
    *[(2, (0, 2), 2, path) for path in PATHS],          # the later of two NaNs
    *[(2, (1, 2, 3), 3, path) for path in PATHS],       # the last of three
    *[(2, (0, 1, 2, 3), 3, path) for path in PATHS],    # a window of NaNs: its last pixel
    (3, (0, 2, 4), 4, "generic loop"),                  # 3x3: the last in row-major order, not the last column
    (3, (2, 6), 6, "generic loop"),
], ids=lambda v: str(v).replace(" ", ""))
def test_max_pool_the_last_of_several_nans_wins(K, nan_positions, winner, path, dtype):
    x = np.arange(K * K, dtype=dtype).reshape(1, 1, K, K)
    x.reshape(-1)[list(nan_positions)] = np.nan
    y, argmax = max_forward(x, (K, K, K, K, 0, 0), path)
    assert np.isnan(y.item()) and argmax.item() == winner


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("window, winner", [
    ([np.nan, np.inf, 1, 2], 0),              # NaN before +inf
    ([np.inf, np.nan, 1, 2], 1),              # NaN after +inf
    ([np.inf, 1, 2, np.nan], 3),
    ([-np.inf, np.nan, -np.inf, -np.inf], 1),
    ([np.inf, 1, np.inf, 2], 0),              # no NaN: the first +inf (the tie rule)
    ([-np.inf, -np.inf, -np.inf, -np.inf], 0),
], ids=["nan,inf", "inf,nan", "inf..nan", "-inf,nan", "inf tie", "all -inf"])
def test_max_pool_nan_beats_infinity_wherever_it_stands(window, winner, path, dtype):
    x = np.array(window, dtype).reshape(1, 1, 2, 2)
    y, argmax = max_forward(x, (2, 2, 2, 2, 0, 0), path)
    assert argmax.item() == winner and same_bits(y.reshape(-1)[0], x.reshape(-1)[winner])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_nan_in_padded_windows(dtype):
    # 3x3 stride 1 padding 1 over a 3x3 plane with NaNs in two corners: every window holding a NaN gives NaN, at
    # its last NaN; the windows of the top-right and bottom-left corners hold none (the numbers PyTorch gives)
    x = np.array([[[[np.nan, 2, 3], [4, 5, 6], [7, 8, np.nan]]]], dtype)
    y, argmax = pool.max_pool2d_forward(x, 3, 3, 1, 1, 1, 1)
    np.testing.assert_array_equal(argmax[0, 0], [[0, 0, 5], [0, 8, 8], [7, 8, 8]])
    np.testing.assert_array_equal(y[0, 0], [[np.nan, np.nan, 6], [np.nan, np.nan, np.nan], [8, np.nan, np.nan]])
    gx = pool.max_pool2d_backward(np.ones((1, 1, 3, 3), dtype), argmax, 3, 3, 3, 3, 1, 1, 1, 1)
    np.testing.assert_array_equal(gx[0, 0], [[3, 0, 0], [0, 0, 1], [0, 1, 4]])
    # 3x3 stride 2 padding 1: all four windows hold the centre NaN
    x = np.arange(9, dtype=dtype).reshape(1, 1, 3, 3)
    x[0, 0, 1, 1] = np.nan
    y, argmax = pool.max_pool2d_forward(x, 3, 3, 2, 2, 1, 1)
    assert np.isnan(y).all() and (argmax == 4).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window", [(2, 2, 2, 2, 0, 0), (3, 3, 1, 1, 1, 1), (3, 3, 2, 2, 1, 1), (2, 3, 1, 2, 1, 1),
                                    (1, 1, 1, 1, 0, 0)], ids=lambda w: "KH,KW,SH,SW,PH,PW=" + ",".join(map(str, w)))
def test_max_pool_a_nan_at_every_position_of_a_plane_follows_the_rule(window, dtype):
    """One NaN per plane, at each position in turn (so at every position of every window that covers it), over
    distinct values with a +inf and a -inf: forward and backward against max_pool_by_rule."""
    H, W = 5, 6
    rng = np.random.default_rng(7)
    x = np.repeat(with_nans(rng, distinct_values(rng, (1, 1, H, W)).astype(dtype), share=0.0), H * W, axis=0)
    x.reshape(H * W, H * W)[np.arange(H * W), np.arange(H * W)] = np.nan
    paths = PATHS if window == (2, 2, 2, 2, 0, 0) else ["generic loop"]
    for path in paths:
        y, argmax = max_forward(x, window, path)
        assert_follows_the_rule(x, window, y, argmax)
    KH, KW, SH, SW, PH, PW = window
    gy = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_array_equal(pool.max_pool2d_backward(gy, argmax, H, W, *window),
                                  max_pool_grad_by_definition(x, gy, (KH, KW), (SH, SW), (PH, PW)))


@SETTINGS
@given(pool_cases_with_2x2(), st.sampled_from([np.float32, np.float64]), st.booleans())
def test_max_pool_with_nans_follows_the_rule(case, dtype, ties):
    """NaN-heavy inputs (several NaNs to a window, NaN payloads, +inf, -inf), with ties or without: forward (both
    paths for the 2x2 window) and backward against max_pool_by_rule."""
    shape, kernel, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2, 3, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    x = with_nans(rng, x)
    window = (*kernel, *stride, *padding)
    for path in (PATHS if window == (2, 2, 2, 2, 0, 0) else ["generic loop"]):
        y, argmax = max_forward(x, window, path)
        assert_follows_the_rule(x, window, y, argmax)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = pool.max_pool2d_backward(gy, argmax, *shape[2:], *window)
    np.testing.assert_array_equal(gx, max_pool_grad_by_definition(x, gy, kernel, stride, padding))


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


@requires_torch
@SETTINGS
@given(pool_cases_with_2x2(), st.sampled_from([np.float32, np.float64]))
def test_max_pool2d_with_nans_matches_torch(case, dtype):
    """NaNs (several to a window, payloads and signs), +inf and -inf among distinct values: the same y bit for bit,
    the same indices (PyTorch's return_indices) and the same input gradient."""
    torch = torch_module()
    shape, kernel, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x = with_nans(rng, distinct_values(rng, shape).astype(dtype))
    y, argmax = pool.max_pool2d_forward(x, *kernel, *stride, *padding)
    xr = torch.tensor(x, requires_grad=True)
    yr, indices = torch.nn.functional.max_pool2d(xr, kernel, stride, padding, return_indices=True)
    assert same_bits(y, yr.detach().numpy())
    np.testing.assert_array_equal(argmax, indices.numpy())
    gy = rng.standard_normal(y.shape).astype(dtype)
    xt = Tensor(x, requires_grad=True)
    F.max_pool2d(xt, kernel, stride, padding).backward(gy)
    yr.backward(torch.tensor(gy))
    np.testing.assert_allclose(xt.grad, xr.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H, W", [(2, 2), (24, 24), (7, 9)])
def test_max_pool_2x2_fast_path_is_the_generic_kernel_bit_for_bit(H, W, dtype, rng):
    """The 2x2 stride-2 kernel (no bounds tests, a branch-free form of the rule) against the generic window loop:
    values, winners, ties (equal neighbours), NaNs (one or several to a window, payloads and signs) beside +inf and
    -inf alike; odd sizes drop the last row/column."""
    x = rng.integers(0, 3, size=(3, 2, H, W)).astype(dtype)   # few distinct values: many ties
    x[0] = with_nans(rng, x[:1])[0]
    x[1, 1, H - 1, W - 1] = np.nan
    x[2, 0, 0, 1] = np.inf
    y1, a1 = max_forward(x, (2, 2, 2, 2, 0, 0), "generic loop")
    y2, a2 = max_forward(x, (2, 2, 2, 2, 0, 0), "2x2 path")
    assert same_bits(y2, y1)
    np.testing.assert_array_equal(a2, a1)

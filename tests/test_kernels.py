"""The im2col / col2im kernels: the index formula entry by entry, Numba == NumPy references, and the adjoint identity.

    col[c, kh, kw, n, oh, ow] = x[n, c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW]   (0 outside the image)
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn.kernels import cpu
from minicnn.kernels.im2col import col2im_numpy, col2im_wide_numpy, im2col_numpy, im2col_wide_numpy, out_size
from helpers import unfold_cases

SETTINGS = settings(max_examples=40, deadline=None)


def im2col_by_definition(x, KH, KW, SH, SW, PH, PW, DH, DW):
    N, C, H, W = x.shape
    OH, OW = out_size(H, KH, SH, PH, DH), out_size(W, KW, SW, PW, DW)
    col = np.full((C, KH, KW, N, OH, OW), np.nan)  # NaN: an entry the loop forgets to write would show up
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                for n in range(N):
                    for oh in range(OH):
                        for ow in range(OW):
                            ih, iw = oh * SH - PH + kh * DH, ow * SW - PW + kw * DW
                            col[c, kh, kw, n, oh, ow] = x[n, c, ih, iw] if 0 <= ih < H and 0 <= iw < W else 0.0
    return col


@SETTINGS
@given(unfold_cases())
def test_im2col_matches_its_definition_entry_by_entry(case):
    N, C, H, W, *params, seed = case
    x = np.random.default_rng(seed).standard_normal((N, C, H, W))
    expected = im2col_by_definition(x, *params)
    col = cpu.im2col(x, *params)
    assert col.shape == expected.shape and col.dtype == x.dtype
    np.testing.assert_array_equal(col, expected)   # pure copies: exact
    np.testing.assert_array_equal(im2col_numpy(x, *params), expected)


@SETTINGS
@given(unfold_cases(), st.sampled_from([np.float32, np.float64]))
def test_numba_kernels_equal_the_numpy_references(case, dtype):
    N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    col = cpu.im2col(x, KH, KW, SH, SW, PH, PW, DH, DW)
    np.testing.assert_array_equal(col, im2col_numpy(x, KH, KW, SH, SW, PH, PW, DH, DW))
    y = rng.standard_normal(col.shape).astype(dtype)
    dx = cpu.col2im(y, H, W, SH, SW, PH, PW, DH, DW)
    assert dx.shape == x.shape and dx.dtype == dtype
    # each pixel receives at most one term per (kh, kw), added in (kh, kw) order by both: the same rounding
    np.testing.assert_array_equal(dx, col2im_numpy(y, H, W, SH, SW, PH, PW, DH, DW))


@SETTINGS
@given(unfold_cases())
def test_col2im_is_the_adjoint_of_im2col(case):
    N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    y = rng.standard_normal((C, KH, KW, N, out_size(H, KH, SH, PH, DH), out_size(W, KW, SW, PW, DW)))
    lhs = np.vdot(cpu.im2col(x, KH, KW, SH, SW, PH, PW, DH, DW), y)
    rhs = np.vdot(x, cpu.col2im(y, H, W, SH, SW, PH, PW, DH, DW))
    scale = np.abs(cpu.im2col(np.abs(x), KH, KW, SH, SW, PH, PW, DH, DW) * np.abs(y)).sum()
    assert abs(lhs - rhs) <= 1e-12 * max(scale, 1.0)


def test_col2im_adds_overlapping_contributions():
    # 3x3 windows with stride 1 over a 4x4 image: the centre pixels are covered by 4 windows each, corners by 1.
    ones = np.ones((1, 3, 3, 1, 2, 2))
    dx = cpu.col2im(ones, 4, 4, 1, 1, 0, 0, 1, 1)
    expected = np.array([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]], float)
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_col2im_drops_the_padding():
    # every output position of a 3x3 padded conv over a 2x2 image: each real pixel is covered by 4 windows
    ones = np.ones((1, 3, 3, 1, 2, 2))
    np.testing.assert_array_equal(cpu.col2im(ones, 2, 2, 1, 1, 1, 1, 1, 1), np.full((1, 1, 2, 2), 4.0))


def test_im2col_accepts_a_non_contiguous_input():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 2, 4)).transpose(2, 3, 1, 0)  # (2, 4, 5, 3) view
    assert not x.flags.c_contiguous
    np.testing.assert_array_equal(cpu.im2col(x, 2, 2, 1, 2, 1, 0, 1, 1), im2col_by_definition(x, 2, 2, 1, 2, 1, 0, 1, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_keeps_the_dtype(dtype):
    x = np.ones((1, 1, 3, 3), dtype)
    assert cpu.im2col(x, 2, 2).dtype == dtype
    assert cpu.col2im(cpu.im2col(x, 2, 2), 3, 3).dtype == dtype


# ---- the wide grid (stride 1): col_wide[c, kh, kw, n, oh, ow] for ow < W, the valid part is im2col's ----------

def wide_cases():
    """(N, C, H, W, KH, KW, DH, DW, seed) with the dilated kernel fitting the (unpadded) input."""
    return unfold_cases(max_padding=0).map(lambda c: (*c[:6], *c[10:]))


@SETTINGS
@given(wide_cases(), st.sampled_from([np.float32, np.float64]))
def test_im2col_wide_holds_im2col_in_its_valid_columns(case, dtype):
    N, C, H, W, KH, KW, DH, DW, seed = case
    x = np.random.default_rng(seed).standard_normal((N, C, H, W)).astype(dtype)
    OW = out_size(W, KW, 1, 0, DW)
    col = cpu.im2col_wide(x, KH, KW, DH, DW)
    assert col.shape == (C, KH, KW, N, out_size(H, KH, 1, 0, DH), W) and col.dtype == dtype
    np.testing.assert_array_equal(col[..., :OW], im2col_by_definition(x, KH, KW, 1, 1, 0, 0, DH, DW))
    np.testing.assert_array_equal(col, im2col_wide_numpy(x, KH, KW, DH, DW))   # garbage columns included


@SETTINGS
@given(wide_cases())
def test_col2im_wide_is_the_adjoint_of_im2col_wide_and_equals_col2im_on_valid_columns(case):
    N, C, H, W, KH, KW, DH, DW, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    g = rng.standard_normal((C, KH, KW, N, out_size(H, KH, 1, 0, DH), W))
    lhs, rhs = np.vdot(cpu.im2col_wide(x, KH, KW, DH, DW), g), np.vdot(x, cpu.col2im_wide(g, H, DH, DW))
    assert abs(lhs - rhs) <= 1e-12 * max(np.abs(g).sum() * np.abs(x).max(), 1.0)
    # the same additions in the same order per pixel (offsets kh, kw in turn): the same rounding
    np.testing.assert_array_equal(cpu.col2im_wide(g, H, DH, DW), col2im_wide_numpy(g, H, DH, DW))
    OW = out_size(W, KW, 1, 0, DW)
    g[..., OW:] = 0.0   # what the convolution's backward gives the garbage columns
    np.testing.assert_array_equal(cpu.col2im_wide(g, H, DH, DW),
                                  cpu.col2im(np.ascontiguousarray(g[..., :OW]), H, W, 1, 1, 0, 0, DH, DW))

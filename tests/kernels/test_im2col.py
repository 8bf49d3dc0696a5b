"""The im2col / col2im kernels: the index formula entry by entry, Numba == NumPy references, and the adjoint identity.

    col[c, kh, kw, n, oh, ow] = x[n, c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW]   (0 outside the image)
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minicnn.kernels import cpu
from minicnn.kernels import numpy_backend
from minicnn.kernels.conv_geometry import out_size
from helpers import im2col_by_definition, unfold_cases

SETTINGS = settings(max_examples=40, deadline=None)


@SETTINGS
@given(unfold_cases())
def test_im2col_matches_its_definition_entry_by_entry(case):
    N, C, H, W, *params, seed = case
    x = np.random.default_rng(seed).standard_normal((N, C, H, W))
    expected = im2col_by_definition(x, *params)
    col = cpu.im2col(x, *params)
    assert col.shape == expected.shape and col.dtype == x.dtype
    np.testing.assert_array_equal(col, expected)   # pure copies: exact
    np.testing.assert_array_equal(numpy_backend.im2col(x, *params), expected)


@SETTINGS
@given(unfold_cases(), st.sampled_from([np.float32, np.float64]))
def test_numba_kernels_equal_the_numpy_references(case, dtype):
    N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    col = cpu.im2col(x, KH, KW, SH, SW, PH, PW, DH, DW)
    np.testing.assert_array_equal(col, numpy_backend.im2col(x, KH, KW, SH, SW, PH, PW, DH, DW))
    y = rng.standard_normal(col.shape).astype(dtype)
    dx = cpu.col2im(y, H, W, SH, SW, PH, PW, DH, DW)
    assert dx.shape == x.shape and dx.dtype == dtype
    # each pixel receives at most one term per (kh, kw), added in (kh, kw) order by both: the same rounding
    np.testing.assert_array_equal(dx, numpy_backend.col2im(y, H, W, SH, SW, PH, PW, DH, DW))


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

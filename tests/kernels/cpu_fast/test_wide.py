"""The wide grid (kernels/cpu_fast/wide.py): its valid columns are im2col's, col2im_wide is its adjoint, NumPy twins agree."""
import numpy as np
from hypothesis import given, settings, strategies as st

from minicnn.kernels import cpu
from minicnn.kernels.conv_geometry import out_size
from minicnn.kernels.cpu_fast.wide import col2im_wide, col2im_wide_numpy, im2col_wide, im2col_wide_numpy
from helpers import im2col_by_definition, unfold_cases

SETTINGS = settings(max_examples=40, deadline=None)


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
    col = im2col_wide(x, KH, KW, DH, DW)
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
    lhs, rhs = np.vdot(im2col_wide(x, KH, KW, DH, DW), g), np.vdot(x, col2im_wide(g, H, DH, DW))
    assert abs(lhs - rhs) <= 1e-12 * max(np.abs(g).sum() * np.abs(x).max(), 1.0)
    # the same additions in the same order per pixel (offsets kh, kw in turn): the same rounding
    np.testing.assert_array_equal(col2im_wide(g, H, DH, DW), col2im_wide_numpy(g, H, DH, DW))
    OW = out_size(W, KW, 1, 0, DW)
    g[..., OW:] = 0.0   # what the convolution's backward gives the garbage columns
    np.testing.assert_array_equal(col2im_wide(g, H, DH, DW),
                                  cpu.col2im(np.ascontiguousarray(g[..., :OW]), H, W, 1, 1, 0, 0, DH, DW))

"""conv2d (im2col + GEMM, and the 1x1 fast path) against its definition, conv2d_reference, and against PyTorch.

Random shapes come from hypothesis: N, C, H, W, OC, KH, KW, stride, padding, dilation and groups, kept tiny because
conv2d_reference is nested Python loops. Combinations whose dilated kernel does not fit the padded input are
assumed away (they are errors, tested in test_errors.py).
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import minicnn.functional as F
from minicnn import Tensor
from minicnn.functional.checks import pair
from helpers import numerical_grad, requires_torch, torch_module

# float64: the GEMM only reorders the same sums, so results agree to a few ulps of the largest partial sum.
RTOL_F64, ATOL_F64 = 1e-10, 1e-12
# float32: inputs ~N(0,1), at most 2*3*3=18 terms per output here, float32 eps = 1.2e-7; summation in a different
# order (BLAS blocking) gives errors ~ sqrt(18) * 1.2e-7 * |terms| -- 1e-4 relative / 1e-5 absolute leaves room.
RTOL_F32, ATOL_F32 = 1e-4, 1e-5

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def conv_cases(draw, max_groups=3):
    """A valid conv2d configuration: sizes, stride, padding, dilation, groups and a seed for the values."""
    groups = draw(st.integers(1, max_groups))
    case = dict(
        N=draw(st.integers(1, 2)), groups=groups,
        C=groups * draw(st.integers(1, 2)), OC=groups * draw(st.integers(1, 2)),
        H=draw(st.integers(1, 7)), W=draw(st.integers(1, 7)),
        KH=draw(st.integers(1, 3)), KW=draw(st.integers(1, 3)),
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=(draw(st.integers(0, 2)), draw(st.integers(0, 2))),
        dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        bias=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 31 - 1)))
    assume(case["dilation"][0] * (case["KH"] - 1) + 1 <= case["H"] + 2 * case["padding"][0])
    assume(case["dilation"][1] * (case["KW"] - 1) + 1 <= case["W"] + 2 * case["padding"][1])
    return case


def make_arrays(case, dtype=np.float64):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["N"], case["C"], case["H"], case["W"])).astype(dtype)
    w = rng.standard_normal((case["OC"], case["C"] // case["groups"], case["KH"], case["KW"])).astype(dtype)
    b = rng.standard_normal(case["OC"]).astype(dtype) if case["bias"] else None
    return x, w, b


def hyper(case):
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"])


def reference_grads(x, w, gy, stride, padding, dilation, groups):
    """d sum(y * gy) / d x, d w, d b straight from the definition y = sum_{c,kh,kw} w * x[...] + b (float64 loops)."""
    (SH, SW), (PH, PW), (DH, DW) = stride, padding, dilation
    N, C, H, W = x.shape
    OC, Cg, KH, KW = w.shape
    OH, OW = gy.shape[2:]
    gx, gw = np.zeros(x.shape), np.zeros(w.shape)
    for n in range(N):
        for oc in range(OC):
            g = oc // (OC // groups)
            for oh in range(OH):
                for ow in range(OW):
                    for c in range(Cg):
                        for kh in range(KH):
                            for kw in range(KW):
                                ih, iw = oh * SH - PH + kh * DH, ow * SW - PW + kw * DW
                                if 0 <= ih < H and 0 <= iw < W:
                                    gx[n, g * Cg + c, ih, iw] += w[oc, c, kh, kw] * gy[n, oc, oh, ow]
                                    gw[oc, c, kh, kw] += x[n, g * Cg + c, ih, iw] * gy[n, oc, oh, ow]
    return gx, gw, gy.sum(axis=(0, 2, 3))


def run_conv(x, w, b, kw):
    """minicnn conv2d with every input requiring grad, backpropagated along gy; returns (y, gy, gx, gw, gb)."""
    xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    bt = None if b is None else Tensor(b, requires_grad=True)
    y = F.conv2d(xt, wt, bt, **kw)
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(x.dtype)
    y.backward(gy)
    return y.data, gy, xt.grad, wt.grad, None if bt is None else bt.grad


def assert_matches_the_definition(x, w, b, y, gy, gx, gw, gb, conv_kw, rtol=RTOL_F64, atol=ATOL_F64):
    """y and the gradients along gy against conv2d_reference and reference_grads (weight and bias: 10x atol)."""
    np.testing.assert_allclose(y, F.conv2d_reference(x, w, b, **conv_kw), rtol=rtol, atol=atol)
    rgx, rgw, rgb = reference_grads(x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64), **conv_kw)
    np.testing.assert_allclose(gx, rgx, rtol=rtol, atol=atol)
    np.testing.assert_allclose(gw, rgw, rtol=rtol, atol=10 * atol)
    if b is not None:
        np.testing.assert_allclose(gb, rgb, rtol=rtol, atol=10 * atol)


@SETTINGS
@given(conv_cases())
def test_conv2d_forward_matches_reference_float64(case):
    x, w, b = make_arrays(case)
    y = F.conv2d(Tensor(x), Tensor(w), None if b is None else Tensor(b), **hyper(case))
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.data, F.conv2d_reference(x, w, b, **hyper(case)), rtol=RTOL_F64, atol=ATOL_F64)


@SETTINGS
@given(conv_cases())
def test_conv2d_forward_matches_reference_float32(case):
    x, w, b = make_arrays(case, np.float32)
    y = F.conv2d(Tensor(x), Tensor(w), None if b is None else Tensor(b), **hyper(case))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, F.conv2d_reference(x, w, b, **hyper(case)), rtol=RTOL_F32, atol=ATOL_F32)


@SETTINGS
@given(conv_cases())
def test_conv2d_gradients_match_the_definition(case):
    x, w, b = make_arrays(case)
    y, gy, gx, gw, gb = run_conv(x, w, b, hyper(case))
    rgx, rgw, rgb = reference_grads(x, w, gy, **hyper(case))
    np.testing.assert_allclose(gx, rgx, rtol=RTOL_F64, atol=ATOL_F64)
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F64, atol=ATOL_F64)
    if b is not None:
        np.testing.assert_allclose(gb, rgb, rtol=RTOL_F64, atol=ATOL_F64)


@SETTINGS
@given(conv_cases())
def test_conv2d_gradients_float32_match_the_definition(case):
    x, w, b = make_arrays(case, np.float32)
    y, gy, gx, gw, gb = run_conv(x, w, b, hyper(case))
    assert gx.dtype == gw.dtype == np.float32
    rgx, rgw, rgb = reference_grads(x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64), **hyper(case))
    # weight gradients sum over N*OH*OW terms (up to 2*7*7 here), so allow a little more absolute slack.
    np.testing.assert_allclose(gx, rgx, rtol=RTOL_F32, atol=ATOL_F32)
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F32, atol=10 * ATOL_F32)


@settings(max_examples=8, deadline=None)
@given(conv_cases(max_groups=2))
def test_conv2d_reference_gradients_agree_with_central_differences(case):
    # Guards the loop-based reference_grads above: it is checked numerically against conv2d_reference itself.
    x, w, b = make_arrays(case)
    b = np.zeros(case["OC"]) if b is None else b
    kw = hyper(case)
    gy = np.random.default_rng(2).standard_normal(F.conv2d_reference(x, w, b, **kw).shape)
    rgx, rgw, rgb = reference_grads(x, w, gy, **kw)
    loss = lambda: float(np.sum(F.conv2d_reference(x, w, b, **kw) * gy))  # noqa: E731
    np.testing.assert_allclose(numerical_grad(loss, x), rgx, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(numerical_grad(loss, w), rgw, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(numerical_grad(loss, b), rgb, rtol=1e-6, atol=1e-8)


@SETTINGS
@given(conv_cases())
def test_conv_output_size_equals_the_actual_output_shape(case):
    x, w, b = make_arrays(case)
    y = F.conv2d(Tensor(x), Tensor(w), **hyper(case))
    OH = F.conv_output_size(case["H"], case["KH"], case["stride"][0], case["padding"][0], case["dilation"][0])
    OW = F.conv_output_size(case["W"], case["KW"], case["stride"][1], case["padding"][1], case["dilation"][1])
    assert y.shape == (case["N"], case["OC"], OH, OW)
    assert OH >= 1 and OW >= 1


@pytest.mark.parametrize("size, kernel, stride, padding, dilation, expected", [
    (28, 3, 1, 0, 1, 26), (28, 3, 1, 1, 1, 28), (28, 5, 2, 2, 1, 14), (7, 3, 2, 0, 2, 2), (5, 5, 1, 0, 1, 1),
    (6, 2, 3, 1, 1, 3), (1, 1, 1, 0, 1, 1)])
def test_conv_output_size_formula_on_known_cases(size, kernel, stride, padding, dilation, expected):
    assert F.conv_output_size(size, kernel, stride, padding, dilation) == expected


# ---- the 1x1, stride-1, no-padding fast path (a matmul over channels, no im2col) -------------------------------

@pytest.mark.parametrize("groups, C, OC", [(1, 3, 5), (2, 4, 6), (3, 3, 3), (4, 8, 4)])
@pytest.mark.parametrize("bias", [False, True])
def test_pointwise_conv_skips_im2col_and_matches_reference(groups, C, OC, bias, monkeypatch, rng):
    from minicnn.backend import kernels_for

    def fail(*args, **kwargs):
        raise AssertionError("the 1x1 stride-1 unpadded convolution must not call im2col/col2im")

    kernels = kernels_for(np.zeros(1))  # the CPU kernel module in use (Numba, or MINICNN_KERNELS=numpy)
    monkeypatch.setattr(kernels, "im2col", fail)
    monkeypatch.setattr(kernels, "col2im", fail)
    x = rng.standard_normal((2, C, 3, 4))
    w = rng.standard_normal((OC, C // groups, 1, 1))
    b = rng.standard_normal(OC) if bias else None
    y, gy, gx, gw, gb = run_conv(x, w, b, dict(groups=groups, dilation=2))  # dilation is irrelevant for 1x1
    kw = dict(stride=(1, 1), padding=(0, 0), dilation=(2, 2), groups=groups)
    assert_matches_the_definition(x, w, b, y, gy, gx, gw, gb, kw)


@pytest.mark.parametrize("stride, padding", [(2, 0), (1, 1), ((1, 2), 0)])
def test_pointwise_conv_with_stride_or_padding_uses_im2col_and_matches_reference(stride, padding, rng):
    x = rng.standard_normal((2, 4, 5, 5))
    w = rng.standard_normal((6, 2, 1, 1))
    kw = dict(stride=stride, padding=padding, groups=2)
    y, gy, gx, gw, _ = run_conv(x, w, None, kw)
    np.testing.assert_allclose(y, F.conv2d_reference(x, w, **kw), rtol=RTOL_F64, atol=ATOL_F64)
    full = dict(stride=pair(stride, "s"), padding=pair(padding, "p"), dilation=(1, 1), groups=2)
    rgx, rgw, _ = reference_grads(x, w, gy, **full)
    np.testing.assert_allclose(gx, rgx, rtol=RTOL_F64, atol=ATOL_F64)
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F64, atol=ATOL_F64)


def test_pointwise_conv_on_a_non_contiguous_input(rng):
    x = rng.standard_normal((2, 5, 4, 3)).transpose(0, 3, 1, 2)  # (2, 3, 5, 4), not C-contiguous
    w = rng.standard_normal((2, 3, 1, 1))
    y = F.conv2d(Tensor(x), Tensor(w))
    np.testing.assert_allclose(y.data, F.conv2d_reference(x, w), rtol=RTOL_F64, atol=ATOL_F64)


def test_conv2d_gradient_only_for_the_weight(rng):
    x, w = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3))
    xt, wt = Tensor(x), Tensor(w, requires_grad=True)
    F.sum(F.conv2d(xt, wt)).backward()
    assert xt.grad is None
    np.testing.assert_allclose(wt.grad, reference_grads(x, w, np.ones((1, 3, 2, 2)), (1, 1), (0, 0), (1, 1), 1)[1])


# ---- against PyTorch -----------------------------------------------------------------------------------------

@requires_torch
@SETTINGS
@given(conv_cases())
def test_conv2d_matches_torch_forward_and_gradients(case):
    torch = torch_module()
    x, w, b = make_arrays(case)
    y, gy, gx, gw, gb = run_conv(x, w, b, hyper(case))
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, **hyper(case))
    assert tuple(yt.shape) == y.shape
    yt.backward(torch.tensor(gy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=RTOL_F64, atol=ATOL_F64)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=RTOL_F64, atol=ATOL_F64)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=RTOL_F64, atol=ATOL_F64)
    if b is not None:
        np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=RTOL_F64, atol=ATOL_F64)
    OH = F.conv_output_size(case["H"], case["KH"], case["stride"][0], case["padding"][0], case["dilation"][0])
    assert yt.shape[2] == OH


@pytest.mark.parametrize("kernels", ["numba", "numpy"])
@settings(max_examples=25, deadline=None)
@given(case=conv_cases())
def test_conv2d_forward_and_gradients_match_the_definition_on_both_cpu_backends(kernels, case):
    """Numba kernels (stride 1 on the wide grid) and plain NumPy (the classic column matrix), each against the definition."""
    from minicnn import backend
    from minicnn.kernels import cpu
    backend.use_reference_kernels(kernels == "numpy")
    try:
        assert backend.kernels_for(np.zeros(1)).wide_columns == (kernels == "numba")
        x, w, b = make_arrays(case)
        y, gy, gx, gw, gb = run_conv(x, w, b, hyper(case))
    finally:
        backend.use_reference_kernels(False)
    assert backend.kernels_for(np.zeros(1)) is cpu
    np.testing.assert_allclose(y, F.conv2d_reference(x, w, b, **hyper(case)), rtol=RTOL_F64, atol=ATOL_F64)
    rgx, rgw, rgb = reference_grads(x, w, gy, **hyper(case))
    np.testing.assert_allclose(gx, rgx, rtol=RTOL_F64, atol=ATOL_F64)
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F64, atol=ATOL_F64)


@pytest.mark.parametrize("stride, padding, expected", [(1, 0, "wide"), (1, 2, "wide"), ((1, 2), 1, "classic"),
                                                       (2, 0, "classic")])
def test_cpu_convolution_uses_the_wide_grid_exactly_for_stride_1(stride, padding, expected, monkeypatch, rng):
    """Stride 1 (any padding): im2col_wide / col2im_wide; any other stride: the classic im2col / col2im."""
    from minicnn.backend import kernels_for
    from minicnn.kernels import cpu
    if kernels_for(np.zeros(1)) is not cpu:
        pytest.skip("MINICNN_KERNELS=numpy: the plain-NumPy backend has no wide grid")
    calls = []
    for name in ("im2col", "col2im", "im2col_wide", "col2im_wide"):
        real = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2))
    kw = dict(stride=stride, padding=padding)
    y, gy, gx, gw, _ = run_conv(x, w, None, kw)
    wide = {"im2col_wide", "col2im_wide"}
    assert set(calls) == (wide if expected == "wide" else {"im2col", "col2im"})
    full = dict(stride=pair(stride, "s"), padding=pair(padding, "p"), dilation=(1, 1), groups=1)
    np.testing.assert_allclose(y, F.conv2d_reference(x, w, **full), rtol=RTOL_F64, atol=ATOL_F64)
    rgx, rgw, _ = reference_grads(x, w, gy, **full)
    np.testing.assert_allclose(gx, rgx, rtol=RTOL_F64, atol=ATOL_F64)
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F64, atol=ATOL_F64)


@pytest.mark.parametrize("columns_first", [True, False])
@pytest.mark.parametrize("groups", [1, 2])
def test_weight_gradient_in_either_product_orientation_matches_the_definition(columns_first, groups, monkeypatch,
                                                                             rng):
    """A backend picks the weight gradient's product: (col @ gy^T)^T (the CPU's) or gy @ col^T (the GPU's,
    weight_grad_columns_first = False); both give the definition's gradient, groups and the wide grid included."""
    from minicnn.backend import kernels_for
    monkeypatch.setattr(kernels_for(np.zeros(1)), "weight_grad_columns_first", columns_first)
    monkeypatch.setattr(kernels_for(np.zeros(1)), "direct_conv", False)
    x, w = rng.standard_normal((3, 4, 7, 6)), rng.standard_normal((6, 4 // groups, 3, 2))
    kw = dict(stride=1, padding=1, dilation=(1, 1), groups=groups)
    y, gy, gx, gw, _ = run_conv(x, w, None, kw)
    rgx, rgw, _ = reference_grads(x, w, gy, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=groups)
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F64, atol=ATOL_F64)
    np.testing.assert_allclose(gx, rgx, rtol=RTOL_F64, atol=ATOL_F64)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_a_kernel_as_large_as_the_image_is_one_matrix_product_and_matches_the_definition(bias, stride, monkeypatch,
                                                                                         rng):
    """eip4's last layer (4x4 kernel on a 4x4 map): no im2col either way, results as the definition's."""
    from minicnn.backend import kernels_for
    K = kernels_for(np.zeros(1))
    for name in ("im2col", "im2col_wide", "col2im", "col2im_wide"):
        if hasattr(K, name):
            monkeypatch.setattr(K, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} called"))
    x, w = rng.standard_normal((3, 5, 4, 4)), rng.standard_normal((6, 5, 4, 4))
    b = rng.standard_normal(6) if bias else None
    full = dict(stride=(stride, stride), padding=(0, 0), dilation=(1, 1), groups=1)
    y, gy, gx, gw, gb = run_conv(x, w, b, dict(stride=stride))
    assert y.shape == (3, 6, 1, 1)
    assert_matches_the_definition(x, w, b, y, gy, gx, gw, gb, full)


@pytest.mark.parametrize("kernels", ["numba", "numpy"])
@pytest.mark.parametrize("C, OC, H, K, kw", [
    (16, 16, 10, 3, {}),                          # direct (Numba backend)
    (16, 16, 10, 3, dict(padding=1)),             # direct, padded
    (3, 5, 9, 3, dict(stride=2)),                 # columns
    (4, 4, 8, 3, dict(groups=4, padding=1)),      # depthwise
    (4, 6, 5, 1, {}),                             # pointwise: one matrix product
    (5, 6, 4, 4, {}),                             # kernel as large as the image
])
def test_conv2d_on_an_empty_batch_gives_empty_outputs_and_zero_weight_gradients(kernels, C, OC, H, K, kw, rng):
    """N = 0 (an empty last batch, an empty split): shapes as for any N, nothing to sum, as PyTorch does."""
    from minicnn import backend
    groups = kw.get("groups", 1)
    x = Tensor(np.zeros((0, C, H, H), np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((OC, C // groups, K, K)).astype(np.float32), requires_grad=True)
    b = Tensor(rng.standard_normal(OC).astype(np.float32), requires_grad=True)
    backend.use_reference_kernels(kernels == "numpy")
    try:
        y = F.conv2d(x, w, b, **kw)
        y.sum().backward()
    finally:
        backend.use_reference_kernels(False)
    s, p = kw.get("stride", 1), kw.get("padding", 0)
    OH = F.conv_output_size(H, K, s, p, 1)
    assert y.shape == (0, OC, OH, OH) and y.data.dtype == np.float32
    assert x.grad.shape == x.shape
    np.testing.assert_array_equal(w.grad, np.zeros_like(w.data))
    np.testing.assert_array_equal(b.grad, np.zeros_like(b.data))


def test_flatten_keeps_an_empty_batch_empty():
    x = Tensor(np.zeros((0, 10, 1, 1), np.float32))
    assert F.flatten(x, 1).shape == (0, 10)

"""conv2d against its definition, conv2d_reference, and against PyTorch: the lesson path and every fast algorithm."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import contextlib

import minicnn.functional as F
from minicnn import Tensor, config
from minicnn.backend import kernels_for
from minicnn.functional.checks import pair
from conv_cases import (ATOL_F32, ATOL_F64, RTOL_F32, RTOL_F64, SETTINGS, assert_matches_the_definition,  # noqa: F401
                        conv_cases, hyper, make_arrays, reference_grads, run_conv)
from helpers import numerical_grad, requires_torch, torch_module


@contextlib.contextmanager
def im2col_calls():
    """Record the names of the im2col / col2im calls the current CPU backend makes inside the block."""
    K, calls = kernels_for(np.zeros(1)), []
    real = {name: getattr(K, name) for name in ("im2col", "col2im")}
    for name, fn in real.items():
        setattr(K, name, lambda *a, _fn=fn, _name=name, **k: calls.append(_name) or _fn(*a, **k))
    try:
        yield calls
    finally:
        for name, fn in real.items():
            setattr(K, name, fn)


@contextlib.contextmanager
def im2col_forbidden():
    """Fail the test if the current CPU backend's im2col or col2im runs inside the block."""
    with im2col_calls() as calls:
        yield
    assert not calls, f"{calls} ran where no column matrix is needed"


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

@pytest.mark.parametrize("kernels", ["numba", "numpy"])
@pytest.mark.parametrize("groups, C, OC", [(1, 3, 5), (2, 4, 6), (3, 3, 3), (4, 8, 4)])
@pytest.mark.parametrize("bias", [False, True])
def test_pointwise_conv_runs_without_im2col_and_matches_reference(kernels, groups, C, OC, bias, rng):
    x = rng.standard_normal((2, C, 3, 4))
    w = rng.standard_normal((OC, C // groups, 1, 1))
    b = rng.standard_normal(OC) if bias else None
    with config.using(kernels=kernels), im2col_forbidden():
        assert F.conv2d_algorithm(x.shape, w.shape, groups=groups, dilation=2, dtype=x.dtype) == "pointwise"
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


# ---- every algorithm of every CPU backend, chosen through the configuration ------------------------------------
ROUTES = [(kernels, conv) for kernels in ("numba", "numpy") for conv in config.CONV_ALGORITHMS
          if kernels == "numba" or conv in ("auto", "im2col", "pointwise", "whole_image")]


@pytest.mark.parametrize("kernels, conv", ROUTES)
@settings(max_examples=25, deadline=None)
@given(case=conv_cases())
def test_every_route_matches_the_definition_forward_and_backward(kernels, conv, case):
    """config.using(conv=...) on each CPU backend: whichever algorithm serves the shape (or the lesson path where
    the named one does not), y and every gradient equal the definition's."""
    x, w, b = make_arrays(case)
    with config.using(kernels=kernels, conv=conv):
        y, gy, gx, gw, gb = run_conv(x, w, b, hyper(case))
    assert_matches_the_definition(x, w, b, y, gy, gx, gw, gb, hyper(case))


# One shape per fast algorithm, each served by it (the plan's name says so) and equal to the definition.
SHAPES = {   # algorithm: (x shape, w shape, conv2d keywords)
    "pointwise": ((3, 4, 5, 6), (6, 4, 1, 1), {}),
    "whole_image": ((3, 5, 4, 4), (6, 5, 4, 4), {}),
    "depthwise": ((3, 4, 7, 8), (4, 1, 3, 3), dict(groups=4, padding=1)),
    "direct": ((3, 8, 9, 10), (16, 8, 3, 3), dict(padding=1)),
    "wide": ((3, 3, 7, 6), (4, 3, 3, 2), dict(padding=(1, 2))),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_each_fast_algorithm_serves_its_shape_and_matches_the_definition(name, dtype, rng):
    xs, ws, kw = SHAPES[name]
    x, w, b = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype), rng.standard_normal(ws[0]).astype(dtype)
    with config.using(conv=name):
        assert F.conv2d_algorithm(xs, ws, dtype=dtype, **kw).split()[0] == name
        y, gy, gx, gw, gb = run_conv(x, w, b, kw)
    full = dict(stride=(1, 1), padding=pair(kw.get("padding", 0), "p"), dilation=(1, 1), groups=kw.get("groups", 1))
    tol = dict(rtol=RTOL_F64, atol=ATOL_F64) if dtype == np.float64 else dict(rtol=RTOL_F32, atol=ATOL_F32)
    assert_matches_the_definition(x, w, b, y, gy, gx, gw, gb, full, **tol)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_under_im2col_every_layer_runs_the_lesson_path(name, rng):
    """config.using(conv="im2col"): the shapes the fast algorithms serve go through im2col and col2im."""
    xs, ws, kw = SHAPES[name]
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    with config.using(conv="im2col"), im2col_calls() as calls:
        assert F.conv2d_algorithm(xs, ws, dtype=x.dtype, **kw) == "im2col"
        y, gy, gx, gw, _ = run_conv(x, w, None, kw)
    assert calls == ["im2col", "col2im"]
    full = dict(stride=(1, 1), padding=pair(kw.get("padding", 0), "p"), dilation=(1, 1), groups=kw.get("groups", 1))
    assert_matches_the_definition(x, w, None, y, gy, gx, gw, None, full)


def test_a_named_algorithm_that_does_not_fit_falls_back_to_the_lesson_path(rng):
    """conv="depthwise" on a layer that is not depthwise, "direct" on a stride-2 layer: im2col."""
    assert F.conv2d_algorithm((2, 4, 8, 8), (6, 4, 3, 3), dtype=np.float64) != "im2col"
    with config.using(conv="depthwise"):
        assert F.conv2d_algorithm((2, 4, 8, 8), (6, 4, 3, 3), dtype=np.float64) == "im2col"
    with config.using(conv="direct"):
        assert F.conv2d_algorithm((2, 8, 9, 9), (16, 8, 3, 3), stride=2, dtype=np.float64) == "im2col"


@pytest.mark.parametrize("padding, stride", [("same", 1), ("valid", 1), ("valid", 2)])
@pytest.mark.parametrize("kernel, dilation", [(3, 1), (4, 1), (2, 3), ((3, 2), (1, 2))])
def test_padding_same_and_valid_as_pytorch_defines_them(padding, stride, kernel, dilation, rng):
    """"valid" is no padding; "same" keeps H x W at stride 1, an even reach padded one more after than before."""
    KH, KW = pair(kernel, "k")
    x, w, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, KH, KW)), rng.standard_normal(4)
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    y, gy, gx, gw, gb = run_conv(x, w, b, kw)
    if padding == "same":
        assert y.shape == (2, 4, 7, 6)
    np.testing.assert_allclose(y, F.conv2d_reference(x, w, b, **kw), rtol=RTOL_F64, atol=ATOL_F64)
    xt, wt = Tensor(x), Tensor(w, requires_grad=True)
    F.sum(F.conv2d(xt, wt, padding=padding, stride=stride, dilation=dilation) * Tensor(gy)).backward()
    if torch_module() is not None:
        torch = torch_module()
        xr, wr = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        yr = torch.nn.functional.conv2d(xr, wr, torch.tensor(b), stride=stride, padding=padding, dilation=dilation)
        np.testing.assert_allclose(y, yr.detach().numpy(), rtol=RTOL_F64, atol=ATOL_F64)
        yr.backward(torch.tensor(gy))
        np.testing.assert_allclose(gx, xr.grad.numpy(), rtol=RTOL_F64, atol=ATOL_F64)
        np.testing.assert_allclose(gw, wr.grad.numpy(), rtol=RTOL_F64, atol=ATOL_F64)


def test_padding_same_with_a_stride_is_refused():
    with pytest.raises(ValueError, match=r"padding='same' needs stride 1"):
        F.conv2d(Tensor(np.ones((1, 1, 5, 5))), Tensor(np.ones((1, 1, 3, 3))), stride=2, padding="same")
    with pytest.raises(ValueError, match=r"padding must be an int, a pair of ints, 'valid' or 'same', got 'full'"):
        F.conv2d(Tensor(np.ones((1, 1, 5, 5))), Tensor(np.ones((1, 1, 3, 3))), padding="full")


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
    groups = kw.get("groups", 1)
    x = Tensor(np.zeros((0, C, H, H), np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((OC, C // groups, K, K)).astype(np.float32), requires_grad=True)
    b = Tensor(rng.standard_normal(OC).astype(np.float32), requires_grad=True)
    with config.using(kernels=kernels):
        y = F.conv2d(x, w, b, **kw)
        y.sum().backward()
    s, p = kw.get("stride", 1), kw.get("padding", 0)
    OH = F.conv_output_size(H, K, s, p, 1)
    assert y.shape == (0, OC, OH, OH) and y.data.dtype == np.float32
    assert x.grad.shape == x.shape
    np.testing.assert_array_equal(w.grad, np.zeros_like(w.data))
    np.testing.assert_array_equal(b.grad, np.zeros_like(b.data))


def test_flatten_keeps_an_empty_batch_empty():
    x = Tensor(np.zeros((0, 10, 1, 1), np.float32))
    assert F.flatten(x, 1).shape == (0, 10)

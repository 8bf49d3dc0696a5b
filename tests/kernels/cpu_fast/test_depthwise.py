"""Depthwise convolution (kernels/cpu_fast/depthwise.py) against the definition: the kernels on their own, and the
engine's routing of groups = C = OC layers to them (other grouped layers keep the columns)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn.functional as F
from minicnn import config
from minicnn.kernels.cpu_fast import depthwise as conv_depthwise, plan
from conv_cases import RTOL_F32, ATOL_F32, RTOL_F64, ATOL_F64, assert_matches_the_definition, reference_grads, run_conv

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def cases(draw):
    """x (N, C, H, W) unpadded, one KH x KW filter per channel, padding below the kernel size."""
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    PH, PW = draw(st.integers(0, KH - 1)), draw(st.integers(0, KW - 1))
    H, W = draw(st.integers(max(1, KH - 2 * PH), 11)), draw(st.integers(max(1, KW - 2 * PW), 11))
    return dict(N=draw(st.integers(1, 3)), C=draw(st.integers(1, 5)), H=H, W=W, KH=KH, KW=KW, PH=PH, PW=PW,
                seed=draw(st.integers(0, 2 ** 31 - 1)))


@pytest.mark.parametrize("dtype, rtol, atol", [(np.float64, RTOL_F64, ATOL_F64), (np.float32, RTOL_F32, ATOL_F32)])
@SETTINGS
@given(case=cases())
def test_kernels_match_the_definition(dtype, rtol, atol, case):
    """Forward, image, weight and bias gradients, with padding, kernels from 1x1 to 4x4 (non-square too)."""
    rng = np.random.default_rng(case["seed"])
    N, C, H, W, KH, KW, PH, PW = (case[k] for k in ("N", "C", "H", "W", "KH", "KW", "PH", "PW"))
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C, 1, KH, KW)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    y = conv_depthwise.conv2d_depthwise(np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW))), w, b)
    full = dict(stride=(1, 1), padding=(PH, PW), dilation=(1, 1), groups=C)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, F.conv2d_reference(x, w, b, **full), rtol=rtol, atol=atol)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, gb = conv_depthwise.conv2d_depthwise_grads(x, gy, w, PH, PW)
    rgx, rgw, rgb = reference_grads(x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64), **full)
    np.testing.assert_allclose(gx, rgx, rtol=rtol, atol=atol)
    np.testing.assert_allclose(gw, rgw, rtol=rtol, atol=10 * atol)
    np.testing.assert_allclose(gb, rgb, rtol=rtol, atol=10 * atol)


def test_gradients_asked_one_at_a_time_and_repeatable_bit_for_bit(rng):
    """need_x / need_w leave the other None and change nothing else; a second call gives the same bits."""
    x = rng.standard_normal((4, 6, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((4, 6, 9, 9)).astype(np.float32)
    gx, gw, gb = conv_depthwise.conv2d_depthwise_grads(x, gy, w, 1, 1)
    only_x = conv_depthwise.conv2d_depthwise_grads(x, gy, w, 1, 1, need_w=False)
    only_w = conv_depthwise.conv2d_depthwise_grads(x, gy, w, 1, 1, need_x=False)
    assert only_x[1] is None and only_w[0] is None
    assert np.array_equal(only_x[0], gx) and np.array_equal(only_w[1], gw)
    np.testing.assert_allclose(only_x[2], gb, rtol=1e-6)
    again = conv_depthwise.conv2d_depthwise_grads(x, gy, w, 1, 1)
    assert all(np.array_equal(a, b) for a, b in zip(again, (gx, gw, gb)))


def test_wrong_shapes_are_refused_with_the_values_named():
    with pytest.raises(ValueError, match=r"expected \(3, 1, KH, KW\).*C=3"):
        conv_depthwise.conv2d_depthwise(np.zeros((1, 3, 5, 5)), np.zeros((3, 2, 3, 3)))
    with pytest.raises(ValueError, match="kernel 3x3 larger than the image 2x5"):
        conv_depthwise.conv2d_depthwise(np.zeros((1, 1, 2, 5)), np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"gy has shape \(1, 1, 2, 2\), expected \(1, 1, 3, 3\)"):
        conv_depthwise.conv2d_depthwise_grads(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)), 0, 0)


def spy(monkeypatch, names):
    """Record the names of the calls to plan.<name> (still made) in the returned list."""
    calls = []
    for name in names:
        real = getattr(plan, name)
        monkeypatch.setattr(plan, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    return calls


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("padding, bias", [(0, True), (1, False)])
def test_engine_sends_depthwise_layers_to_the_kernels(dtype, padding, bias, monkeypatch, rng):
    """groups = C = OC, stride 1: forward and backward through depthwise.py, every result against the definition."""
    calls = spy(monkeypatch, ("conv2d_depthwise", "conv2d_depthwise_grads"))
    x = rng.standard_normal((3, 5, 8, 7)).astype(dtype)
    w = rng.standard_normal((5, 1, 3, 3)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype) if bias else None
    kw = dict(stride=(1, 1), padding=(padding, padding), dilation=(1, 1), groups=5)
    with config.using(kernels="numba", conv="auto"):
        assert F.conv2d_algorithm(x.shape, w.shape, padding=padding, groups=5, dtype=dtype) == "depthwise"
        y, gy, gx, gw, gb = run_conv(x, w, b, dict(padding=padding, groups=5))
    assert calls == ["conv2d_depthwise", "conv2d_depthwise_grads"]
    rtol, atol = (RTOL_F64, ATOL_F64) if dtype == np.float64 else (RTOL_F32, ATOL_F32)
    assert_matches_the_definition(x, w, b, y, gy, gx, gw, gb, kw, rtol, atol)


@pytest.mark.parametrize("OC, stride, dilation, algorithm", [(10, 1, 1, "wide"), (5, 2, 1, "im2col"),
                                                             (5, 1, 2, "im2col")])
def test_other_grouped_layers_keep_the_columns(OC, stride, dilation, algorithm, monkeypatch, rng):
    """Two filters per channel (OC = 2C: the wide grid's columns, a product per group), stride 2 or dilation 2 (the
    lesson path): never the depthwise kernels, still right."""
    calls = spy(monkeypatch, ("conv2d_depthwise", "conv2d_depthwise_grads"))
    x, w = rng.standard_normal((2, 5, 9, 9)), rng.standard_normal((OC, 1, 3, 3))
    kw = dict(stride=(stride, stride), padding=(0, 0), dilation=(dilation, dilation), groups=5)
    with config.using(kernels="numba", conv="auto"):
        assert F.conv2d_algorithm(x.shape, w.shape, dtype=x.dtype, **kw) == algorithm
        y, gy, gx, gw, _ = run_conv(x, w, None, kw)
    assert calls == []
    assert_matches_the_definition(x, w, None, y, gy, gx, gw, None, kw)

"""Shared by the convolution tests: random valid cases, the definition's gradients, and one forward + backward run.

Random shapes come from hypothesis: N, C, H, W, OC, KH, KW, stride, padding, dilation and groups, kept tiny because
conv2d_reference is nested Python loops. Combinations whose dilated kernel does not fit the padded input are
assumed away (they are errors, tested in test_errors.py).
"""
import numpy as np
from hypothesis import assume, settings, strategies as st

import minicnn.functional as F
from minicnn import Tensor

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

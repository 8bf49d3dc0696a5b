"""Shared test helpers (imported as `helpers`): central-difference gradients, a gradient check along a random direction, optional torch."""
import importlib.util

import numpy as np
import pytest
from hypothesis import assume, strategies as st

import minicnn.functional as F
from minicnn.kernels.conv_geometry import out_size
from minicnn import Tensor, no_grad

# Central differences in float64 with step EPS have error O(EPS^2 * f''') + O(1e-16 * |f| / EPS):
# about 1e-10 relative for the smooth, O(1)-sized losses used here, so GRAD_RTOL/ATOL leave a wide margin
# while a wrong factor, sign or index in a backward pass is off by O(1).
EPS = 1e-6
GRAD_RTOL = 1e-6
GRAD_ATOL = 1e-7


def numerical_grad(f, x, eps=EPS):
    """d f() / d x by central differences; f takes no arguments and reads the float64 array x, perturbed in place."""
    assert x.dtype == np.float64 and x.flags.c_contiguous, "x must be a contiguous float64 array"
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)  # views: writing flat[i] perturbs x
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


def check_gradients(fn, arrays, rng, eps=EPS, rtol=GRAD_RTOL, atol=GRAD_ATOL, wrt=None):
    """Compare autograd with central differences for loss = sum(fn(*tensors) * R), R random (not all ones).

    `arrays` are float64 NumPy arrays, each becomes a Tensor with requires_grad=True (only the indices in `wrt`
    when given). The analytic loss is built with the library's own mul and sum so the engine is exercised too.
    """
    arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in arrays]
    wrt = range(len(arrays)) if wrt is None else wrt
    tensors = [Tensor(a, requires_grad=(i in wrt)) for i, a in enumerate(arrays)]
    out = fn(*tensors)
    assert out.dtype == np.float64, f"float64 inputs gave a {out.dtype} output"
    R = rng.standard_normal(out.shape)
    loss = F.sum(F.mul(out, Tensor(R)))
    assert loss.dtype == np.float64
    loss.backward()

    def f():
        with no_grad():
            return float(np.sum(fn(*[Tensor(a) for a in arrays]).data * R))

    for i in wrt:
        expected = numerical_grad(f, arrays[i], eps)
        assert tensors[i].grad is not None, f"input {i} got no gradient"
        assert tensors[i].grad.shape == arrays[i].shape
        np.testing.assert_allclose(tensors[i].grad, expected, rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {i}")
    return out


def distinct_values(rng, shape, scale=1.0):
    """Values that are pairwise at least `scale / size` apart (a random permutation): no ties for max pooling."""
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) - n / 2 + 0.5) * (scale / n) * 2


def away_from_zero(rng, shape, margin=1e-2):
    """Standard normal values with |x| >= margin: central differences never straddle the ReLU kink."""
    x = rng.standard_normal(shape)
    return np.where(x >= 0, x + margin, x - margin)


HAVE_TORCH = importlib.util.find_spec("torch") is not None
requires_torch = pytest.mark.skipif(
    not HAVE_TORCH, reason="PyTorch is not installed: the cross-checks against torch.nn.functional are skipped "
                           "(every other test still runs)")


def torch_module():
    """Import PyTorch (only called from tests marked requires_torch), on one thread to spare shared CPUs."""
    import torch
    torch.set_num_threads(1)
    return torch


@st.composite
def unfold_cases(draw, max_batch=3, max_channels=3, max_size=8, max_kernel=4, max_padding=3, max_dilation=3):
    """(N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, seed) with the dilated kernel fitting the padded input."""
    N, C = draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels))
    H, W = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    KH, KW = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    SH, SW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    PH, PW = draw(st.integers(0, max_padding)), draw(st.integers(0, max_padding))
    DH, DW = draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation))
    assume(DH * (KH - 1) + 1 <= H + 2 * PH and DW * (KW - 1) + 1 <= W + 2 * PW)
    return N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, draw(st.integers(0, 2 ** 31 - 1))


def im2col_by_definition(x, KH, KW, SH, SW, PH, PW, DH, DW):
    """col[c, kh, kw, n, oh, ow] = x[n, c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW] (0 outside), entry by entry."""
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

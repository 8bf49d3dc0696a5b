"""Cross-entropy's kernels (kernels/cross_entropy.py) against NumPy, and its gradients against finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn.functional as F
from minicnn import Tensor
from minicnn.kernels import cpu
from minicnn.kernels import numpy_backend


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 20), st.integers(1, 12), st.sampled_from([1.0, 30.0, 1000.0]),
       st.sampled_from([np.float32, np.float64]), st.integers(0, 2 ** 31 - 1))
def test_cross_entropy_kernels_equal_numpy(N, K, scale, dtype, seed):
    """Losses and softmax as NumPy's log-softmax gives them, for logits large enough to overflow a naive exp."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, K)) * scale).astype(dtype)
    t = rng.integers(0, K, N)
    losses, p, mean = cpu.cross_entropy_forward(x, t, N)
    want_losses, want_p, _ = numpy_backend.cross_entropy_forward(x.astype(np.float64), t)
    assert losses.dtype == p.dtype == dtype and np.isfinite(losses).all()
    tol = dict(rtol=2e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(losses, want_losses, **tol)
    np.testing.assert_allclose(p, want_p, **tol)
    assert mean.shape == () and mean.dtype == dtype
    np.testing.assert_allclose(mean, want_losses.mean(), **tol)
    gy = rng.standard_normal(N).astype(dtype)
    onehot = np.eye(K)[t]
    np.testing.assert_allclose(cpu.cross_entropy_backward(p, t, gy, 1), (p - onehot) * gy[:, None], **tol)
    np.testing.assert_allclose(cpu.cross_entropy_backward(p, t, gy[:1], N), (p - onehot) * gy[0] / N, **tol)


def test_a_label_outside_the_classes_gives_a_nan_row_not_a_stray_read():
    x = np.zeros((3, 4), np.float32)
    losses, p, total = cpu.cross_entropy_forward(x, np.array([0, 4, -1]))
    assert np.isfinite(losses[0]) and np.isnan(losses[1:]).all() and np.isnan(total)
    assert np.isfinite(p[0]).all() and np.isnan(p[1:]).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradient_matches_finite_differences(rng, reduction):
    """Along a random direction u: <grad, u> against (f(x + h u) - f(x - h u)) / 2h, float64."""
    x = rng.standard_normal((5, 7)) * 3
    t = rng.integers(0, 7, 5)
    w = rng.standard_normal(5)  # weights the per-image losses of "none" into one number

    def f(v):
        out = F.cross_entropy(v, t, reduction=reduction)
        return (out * Tensor(w)).sum() if reduction == "none" else out
    xt = Tensor(x, requires_grad=True)
    f(xt).backward()
    u = rng.standard_normal(x.shape)
    h = 1e-6
    numeric = (float(f(Tensor(x + h * u)).data) - float(f(Tensor(x - h * u)).data)) / (2 * h)
    assert np.isclose(np.sum(xt.grad * u), numeric, rtol=1e-6, atol=1e-8)

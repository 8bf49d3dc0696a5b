"""Every differentiable op against central differences in float64, along a random upstream gradient.

loss = sum(op(inputs) * R) with R ~ N(0, 1) (not all ones, so a gradient that is right only on average, or that
mixes up output positions, fails). Inputs stay away from kinks: |x| >= 1e-2 for ReLU (the step is 1e-6) and
pairwise-distinct values for max pooling, so the finite difference never crosses a switch.
"""
import numpy as np
import pytest

import minicnn.functional as F
from minicnn import Tensor
from helpers import away_from_zero, check_gradients, distinct_values, requires_torch, torch_module


def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def positive(*shape):
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def nonzero(*shape):
    return lambda rng: away_from_zero(rng, shape, margin=0.5)


def distinct(*shape):
    return lambda rng: distinct_values(rng, shape, scale=2.0)


def fixed(array):
    return lambda rng: np.array(array, dtype=np.float64)


def bn_eval(x, g, b):
    rm = np.array([0.3, -0.2, 0.1])
    rv = np.array([0.5, 2.0, 1.2])
    return F.batch_norm(x, g, b, rm, rv, training=False)


def dropout_fixed_mask(x):
    # a fresh generator with the same seed on every call: the same mask for the analytic and numerical passes
    return F.dropout(x, 0.4, generator=np.random.default_rng(123))


CASES = [
    # (id, op, input makers) -- each input becomes a float64 Tensor with requires_grad=True
    ("add", F.add, [normal(3, 4), normal(3, 4)]),
    ("add_broadcast", F.add, [normal(3, 1), normal(1, 4)]),
    ("sub_broadcast", F.sub, [normal(5), normal(2, 5)]),
    ("mul_broadcast", F.mul, [normal(2, 5), normal(5)]),
    ("div", F.div, [normal(3, 4), nonzero(3, 4)]),
    ("div_broadcast", F.div, [normal(2, 3), nonzero(3)]),
    ("neg", F.neg, [normal(4)]),
    ("pow_int", lambda a: F.pow(a, 3), [normal(3, 3)]),
    ("pow_frac", lambda a: F.pow(a, 2.5), [positive(3, 3)]),
    ("pow_negative", lambda a: F.pow(a, -1.5), [positive(3, 3)]),
    ("exp", F.exp, [normal(3, 4)]),
    ("log", F.log, [positive(3, 4)]),
    ("matmul", F.matmul, [normal(3, 4), normal(4, 5)]),
    ("matmul_batched_broadcast", F.matmul, [normal(2, 3, 4), normal(4, 5)]),
    ("sum_all", F.sum, [normal(2, 3, 4)]),
    ("sum_axis0", lambda a: F.sum(a, axis=0), [normal(2, 3, 4)]),
    ("sum_axes_keepdims", lambda a: F.sum(a, axis=(0, 2), keepdims=True), [normal(2, 3, 4)]),
    ("sum_negative_axis", lambda a: F.sum(a, axis=-1), [normal(2, 3, 4)]),
    ("mean_all", F.mean, [normal(2, 3, 4)]),
    ("mean_axes", lambda a: F.mean(a, axis=(1, 2)), [normal(2, 3, 4)]),
    ("mean_axis_keepdims", lambda a: F.mean(a, axis=1, keepdims=True), [normal(2, 3, 4)]),
    ("reshape", lambda a: F.reshape(a, (4, -1)), [normal(2, 3, 4)]),
    ("transpose_default", F.transpose, [normal(2, 3, 4)]),
    ("transpose_axes", lambda a: F.transpose(a, (1, 2, 0)), [normal(2, 3, 4)]),
    ("flatten", F.flatten, [normal(2, 3, 2, 2)]),
    ("getitem_slice", lambda a: a[1:, ::2], [normal(3, 5)]),
    ("getitem_int", lambda a: a[1], [normal(3, 5)]),
    ("getitem_repeated_indices", lambda a: a[np.array([0, 2, 0, 0])], [normal(3, 5)]),
    ("getitem_pairs", lambda a: a[np.arange(3), np.array([4, 0, 4])], [normal(3, 5)]),
    ("getitem_tensor_key", lambda a: a[Tensor(np.array([2, 0, 2]))], [normal(3, 5)]),
    ("getitem_bool_mask", lambda a: a[np.array([True, False, True])], [normal(3, 5)]),
    ("relu", F.relu, [lambda rng: away_from_zero(rng, (4, 5))]),
    ("sigmoid", F.sigmoid, [lambda rng: 3 * rng.standard_normal((4, 5))]),
    ("tanh", F.tanh, [normal(4, 5)]),
    ("log_softmax", F.log_softmax, [normal(4, 5)]),
    ("log_softmax_axis0", lambda a: F.log_softmax(a, axis=0), [normal(4, 5)]),
    ("softmax", F.softmax, [normal(4, 5)]),
    ("cross_entropy_mean", lambda a: F.cross_entropy(a, np.array([0, 3, 1, 3])), [normal(4, 5)]),
    ("cross_entropy_sum", lambda a: F.cross_entropy(a, np.array([0, 3, 1, 3]), reduction="sum"), [normal(4, 5)]),
    ("cross_entropy_none", lambda a: F.cross_entropy(a, np.array([0, 3, 1, 3]), reduction="none"), [normal(4, 5)]),
    ("nll_loss", lambda a: F.nll_loss(F.log_softmax(a), np.array([2, 2, 0])), [normal(3, 4)]),
    ("conv2d_plain_bias", F.conv2d, [normal(2, 3, 5, 5), normal(4, 3, 3, 3), normal(4)]),
    ("conv2d_stride_padding", lambda x, w: F.conv2d(x, w, stride=2, padding=1), [normal(2, 2, 6, 5), normal(3, 2, 3, 2)]),
    ("conv2d_dilation", lambda x, w: F.conv2d(x, w, dilation=(2, 1), padding=(1, 0)), [normal(1, 2, 6, 6), normal(2, 2, 3, 3)]),
    ("conv2d_groups", lambda x, w, b: F.conv2d(x, w, b, stride=(1, 2), padding=1, groups=2),
     [normal(2, 4, 5, 5), normal(6, 2, 3, 3), normal(6)]),
    ("conv2d_depthwise", lambda x, w: F.conv2d(x, w, padding=1, groups=3), [normal(1, 3, 4, 4), normal(3, 1, 3, 3)]),
    ("conv2d_pointwise", F.conv2d, [normal(2, 4, 3, 3), normal(5, 4, 1, 1), normal(5)]),
    ("conv2d_pointwise_groups", lambda x, w: F.conv2d(x, w, groups=2), [normal(2, 4, 3, 3), normal(6, 2, 1, 1)]),
    ("max_pool_k2s2", lambda x: F.max_pool2d(x, 2), [distinct(2, 2, 6, 6)]),
    ("max_pool_k3s2_overlap", lambda x: F.max_pool2d(x, 3, stride=2), [distinct(2, 2, 7, 7)]),
    ("max_pool_k3s1_overlap", lambda x: F.max_pool2d(x, 3, stride=1), [distinct(1, 2, 5, 6)]),
    ("max_pool_k3s2_padding", lambda x: F.max_pool2d(x, 3, stride=2, padding=1), [distinct(2, 2, 6, 7)]),
    ("avg_pool_k2s2", lambda x: F.avg_pool2d(x, 2), [normal(2, 2, 4, 6)]),
    ("avg_pool_k3s2_padding", lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), [normal(2, 2, 6, 7)]),
    ("global_avg_pool2d", F.global_avg_pool2d, [normal(2, 3, 4, 5)]),
    ("batch_norm_training", lambda x, g, b: F.batch_norm(x, g, b, training=True),
     [normal(4, 3, 2, 3), positive(3), normal(3)]),
    ("batch_norm_eval", bn_eval, [normal(4, 3, 2, 3), positive(3), normal(3)]),
    ("dropout", dropout_fixed_mask, [normal(4, 6)]),
]


@pytest.mark.parametrize("fn, makers", [pytest.param(fn, makers, id=name) for name, fn, makers in CASES])
def test_gradient_matches_central_differences(fn, makers, rng):
    check_gradients(fn, [make(rng) for make in makers], rng)


def test_gradcheck_catches_a_wrong_gradient(rng):
    # The checker itself must be able to fail: a Function whose backward is off by 1% is rejected.
    from minicnn.autograd import Function

    class WrongSquare(Function):
        def forward(self, a):
            self.a = a
            return a * a

        def backward(self, gy):
            return gy * 2.02 * self.a

    with pytest.raises(AssertionError):
        check_gradients(lambda a: WrongSquare()(a), [rng.standard_normal(5)], rng)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_with_large_logits_stays_finite_and_has_the_right_gradient(reduction, rng):
    logits = rng.standard_normal((4, 6)) * 1000
    logits[0, 2] = 1000.0
    logits[1] = [1000.0, -1000.0, 0, 999.0, 1000.0, -5.0]
    target = np.array([2, 3, 0, 5])
    # the finite-difference loss is ~1000 with float64 rounding ~1e-13 per evaluation: (1e-13 / 1e-6) slack in atol
    out = check_gradients(lambda a: F.cross_entropy(a, target, reduction=reduction), [logits], rng, atol=1e-6)
    assert np.isfinite(out.data).all()


def test_cross_entropy_value_with_large_logits_is_exact():
    logits = Tensor(np.array([[1000.0, -1000.0, 0.0], [1000.0, 1000.0, 1000.0]]), requires_grad=True)
    loss = F.cross_entropy(logits, np.array([1, 2]), reduction="none")
    np.testing.assert_allclose(loss.data, [2000.0, np.log(3.0)], rtol=1e-15)
    F.sum(loss).backward()
    assert np.isfinite(logits.grad).all()
    np.testing.assert_allclose(logits.grad[0], [1.0, -1.0, 0.0], atol=1e-300)
    np.testing.assert_allclose(logits.grad[1], [1 / 3, 1 / 3, -2 / 3], rtol=1e-14)


def test_log_softmax_with_large_logits_stays_finite():
    x = Tensor(np.array([[1000.0, 0.0, -1000.0]]), requires_grad=True)
    y = F.log_softmax(x)
    np.testing.assert_allclose(y.data, [[0.0, -1000.0, -2000.0]])
    F.sum(y * np.array([[0.5, -1.0, 2.0]])).backward()
    assert np.isfinite(x.grad).all()


def test_sigmoid_is_stable_for_large_inputs():
    y = F.sigmoid(Tensor(np.array([-800.0, 0.0, 800.0])))
    np.testing.assert_array_equal(y.data, [0.0, 0.5, 1.0])


# ---- cross_entropy against PyTorch ---------------------------------------------------------------------------

@requires_torch
@pytest.mark.parametrize("scale", [1.0, 1000.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(scale, reduction, rng):
    torch = torch_module()
    logits = rng.standard_normal((7, 5)) * scale
    target = rng.integers(0, 5, 7)
    gy = rng.standard_normal(7) if reduction == "none" else np.array(rng.standard_normal())
    x = Tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x, target, reduction=reduction)
    loss.backward(gy)
    xr = torch.tensor(logits, requires_grad=True)
    lr = torch.nn.functional.cross_entropy(xr, torch.tensor(target), reduction=reduction)
    lr.backward(torch.tensor(gy))
    np.testing.assert_allclose(loss.data, lr.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x.grad, xr.grad.numpy(), rtol=1e-10, atol=1e-14)

"""Batch normalisation (batch statistics, running statistics, eval mode) and inverted dropout.

batch_norm's momentum weighs the NEW batch statistic (PyTorch's convention) and the running variance is updated
with the unbiased batch variance (M / (M - 1) with M = N*H*W values per channel), while the normalisation
itself uses the biased one.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn.functional as F
from minicnn import config, nn
from minicnn import Tensor, manual_seed
from minicnn import random as mrandom
from helpers import requires_torch, torch_module

EPS = 1e-5


def bn_inputs(rng, shape=(4, 3, 2, 5)):
    C = shape[1]
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3.0, (1, C, 1, 1)) + rng.uniform(-2, 2, (1, C, 1, 1))
    return x, rng.uniform(0.5, 1.5, C), rng.uniform(-0.5, 0.5, C)


def test_training_normalises_with_the_biased_batch_statistics(rng):
    x, gamma, beta = bn_inputs(rng)
    y = F.batch_norm(Tensor(x), Tensor(gamma), Tensor(beta), training=True, eps=EPS)
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)  # ddof=0
    expected = (x - mu) / np.sqrt(var + EPS) * gamma.reshape(1, -1, 1, 1) + beta.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(y.data, expected, rtol=1e-10, atol=1e-12)


def test_training_with_unit_gamma_gives_zero_mean_unit_variance_per_channel(rng):
    x, _, _ = bn_inputs(rng)
    C = x.shape[1]
    y = F.batch_norm(Tensor(x), Tensor(np.ones(C)), Tensor(np.zeros(C)), training=True, eps=0.0).data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-12)


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e5])
def test_batch_statistics_stay_accurate_far_from_zero(offset, rng):
    """One pass over x - x[0, c, 0, 0]: a large common offset must not cancel the variance away (float32 input)."""
    from minicnn.kernels import cpu
    x = (offset + rng.standard_normal((7, 3, 9, 7))).astype(np.float32)   # N = 7: the four-image pass and single ones
    _, mean, var, _ = cpu.batch_norm_forward(x, np.ones(3, np.float32), np.zeros(3, np.float32), EPS)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(var, x64.var(axis=(0, 2, 3)), rtol=1e-6)


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0])
def test_running_stats_update_with_momentum_and_unbiased_variance(momentum, rng):
    x, gamma, beta = bn_inputs(rng)
    rm0, rv0 = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    rm, rv = rm0.copy(), rv0.copy()
    F.batch_norm(Tensor(x), Tensor(gamma), Tensor(beta), rm, rv, training=True, momentum=momentum)
    M = x.size // x.shape[1]
    np.testing.assert_allclose(rm, (1 - momentum) * rm0 + momentum * x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(rv, (1 - momentum) * rv0 + momentum * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-12)
    assert M == 40  # the ddof=1 variance above is x.var() * M / (M - 1)


def test_running_stats_given_as_tensors_are_updated_in_place(rng):
    x, gamma, beta = bn_inputs(rng)
    rm, rv = Tensor(np.zeros(3)), Tensor(np.ones(3))
    F.batch_norm(Tensor(x), Tensor(gamma), Tensor(beta), rm, rv, training=True, momentum=0.1)
    np.testing.assert_allclose(rm.data, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(rv.data, 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-12)


def test_eval_uses_the_running_stats_and_leaves_them_unchanged(rng):
    x, gamma, beta = bn_inputs(rng)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    rm_before, rv_before = rm.copy(), rv.copy()
    y = F.batch_norm(Tensor(x), Tensor(gamma), Tensor(beta), rm, rv, training=False, eps=EPS)
    expected = ((x - rm.reshape(1, -1, 1, 1)) / np.sqrt(rv.reshape(1, -1, 1, 1) + EPS) * gamma.reshape(1, -1, 1, 1)
                + beta.reshape(1, -1, 1, 1))
    np.testing.assert_allclose(y.data, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(rm, rm_before)
    np.testing.assert_array_equal(rv, rv_before)


def test_eval_output_of_one_sample_does_not_depend_on_the_rest_of_the_batch(rng):
    x, gamma, beta = bn_inputs(rng)
    rm, rv = np.zeros(3), np.ones(3)
    full = F.batch_norm(Tensor(x), Tensor(gamma), Tensor(beta), rm, rv, training=False).data
    one = F.batch_norm(Tensor(x[:1]), Tensor(gamma), Tensor(beta), rm, rv, training=False).data
    np.testing.assert_allclose(one, full[:1], rtol=1e-12)


def test_float32_batch_norm_stays_float32(rng):
    x, gamma, beta = (a.astype(np.float32) for a in bn_inputs(rng))
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    xt = Tensor(x, requires_grad=True)
    y = F.batch_norm(xt, Tensor(gamma), Tensor(beta), rm, rv, training=True)
    assert y.dtype == np.float32 and rm.dtype == rv.dtype == np.float32
    F.sum(y * y).backward()
    assert xt.grad.dtype == np.float32


@requires_torch
@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
       st.sampled_from([0.1, 0.3, 1.0]), st.integers(0, 2 ** 31 - 1))
def test_batch_norm_matches_torch_in_training_and_eval(N, C, H, W, momentum, seed):
    torch = torch_module()
    if N * H * W < 2:
        N = 2
    rng = np.random.default_rng(seed)
    gamma, beta = rng.uniform(0.5, 1.5, C), rng.uniform(-0.5, 0.5, C)
    rm, rv = np.zeros(C), np.ones(C)
    trm, trv = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    for step in range(3):  # three training steps: the running statistics compound
        x = rng.standard_normal((N, C, H, W)) * 2 + 1
        gy = rng.standard_normal(x.shape)
        xt, gt, bt = (Tensor(a, requires_grad=True) for a in (x, gamma, beta))
        y = F.batch_norm(xt, gt, bt, rm, rv, training=True, momentum=momentum, eps=EPS)
        y.backward(gy)
        xr, gr, br = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
        yr = torch.nn.functional.batch_norm(xr, trm, trv, gr, br, training=True, momentum=momentum, eps=EPS)
        yr.backward(torch.tensor(gy))
        np.testing.assert_allclose(y.data, yr.detach().numpy(), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-12, atol=1e-14)
        for ours, theirs in ((xt, xr), (gt, gr), (bt, br)):
            np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-8, atol=1e-10)
    x = rng.standard_normal((N, C, H, W))
    gy = rng.standard_normal(x.shape)
    xt, gt, bt = (Tensor(a, requires_grad=True) for a in (x, gamma, beta))
    y = F.batch_norm(xt, gt, bt, rm, rv, training=False, eps=EPS)
    y.backward(gy)
    xr, gr, br = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    yr = torch.nn.functional.batch_norm(xr, trm, trv, gr, br, training=False, eps=EPS)
    yr.backward(torch.tensor(gy))
    np.testing.assert_allclose(y.data, yr.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, theirs in ((xt, xr), (gt, gr), (bt, br)):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


# ---- dropout ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.5, 0.75])
def test_dropout_survivors_are_scaled_exactly_by_one_over_keep(p):
    # 1/(1-p) is a power of two for these p, so x * mask equals x / (1-p) bit for bit
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    y = F.dropout(Tensor(x), p, generator=np.random.default_rng(1)).data
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept] / np.float32(1 - p))
    assert 0 < kept.sum() < x.size


@pytest.mark.parametrize("p", [0.1, 0.3, 0.9])
def test_dropout_survivors_equal_x_over_keep_to_float32_rounding(p):
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    y = F.dropout(Tensor(x), p, generator=np.random.default_rng(1)).data
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=2.5e-7)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_preserves_the_mean_and_drops_a_fraction_p(p):
    n = 200_000
    y = F.dropout(Tensor(np.ones(n, np.float32)), p, generator=np.random.default_rng(3)).data
    # binomial: the dropped fraction has std sqrt(p(1-p)/n) <= 0.0012, the mean std sqrt(p/((1-p) n)) <= 0.0045
    assert abs((y == 0).mean() - p) < 0.006
    assert abs(y.mean() - 1.0) < 0.025


def test_dropout_is_the_identity_in_eval_and_for_p_zero():
    x = Tensor(np.arange(5.0, dtype=np.float32), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x


def test_dropout_mask_repeats_with_the_same_seeded_generator():
    x = Tensor(np.ones((4, 50), np.float32))
    a = F.dropout(x, 0.4, generator=np.random.default_rng(42)).data
    b = F.dropout(x, 0.4, generator=np.random.default_rng(42)).data
    c = F.dropout(x, 0.4, generator=np.random.default_rng(43)).data
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_default_generator_repeats_after_manual_seed(monkeypatch):
    monkeypatch.setattr(mrandom, "_generator", None)  # keep the global generator of other tests untouched
    monkeypatch.setattr(mrandom, "_seed", mrandom._seed)
    x = Tensor(np.ones(100, np.float32))
    manual_seed(7)
    a = F.dropout(x, 0.5).data
    b = F.dropout(x, 0.5).data
    manual_seed(7)
    np.testing.assert_array_equal(F.dropout(x, 0.5).data, a)
    assert not np.array_equal(a, b), "two draws from the same generator must differ"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_gradient_equals_the_mask(dtype):
    p = 0.3
    x_np = np.random.default_rng(0).uniform(1.0, 2.0, (3, 40)).astype(dtype)  # nonzero: y == 0 only where dropped
    x = Tensor(x_np, requires_grad=True)
    y = F.dropout(x, p, generator=np.random.default_rng(5))
    assert y.dtype == dtype
    gy = np.random.default_rng(6).standard_normal(x_np.shape).astype(dtype)
    y.backward(gy)
    mask = y.data / x_np          # 0 or 1/(1-p)
    np.testing.assert_allclose(np.unique(np.round(mask, 5)), [0, round(1 / (1 - p), 5)])
    np.testing.assert_allclose(x.grad, gy * mask, rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_dropout_mask_equals_the_plain_numpy_hash(p, dtype):
    """The one-pass Numba kernel computes the formulas of kernels/dropout.py exactly, for keys of every size."""
    from minicnn.kernels.dropout import dropout_apply, dropout_mask
    from minicnn.kernels.numpy_backend import dropout_mask as dropout_mask_numpy
    for key in (0, 12345, 2**63 + 7, 2**64 - 1):
        expected = dropout_mask_numpy((7, 11, 13), p, key, dtype)
        np.testing.assert_array_equal(dropout_mask((7, 11, 13), p, key, dtype), expected)
        x = np.random.default_rng(key % 1000).standard_normal((7, 11, 13)).astype(dtype)
        np.testing.assert_array_equal(dropout_apply(x, p, key), x * expected)


def test_dropout_threshold_keeps_a_fraction_one_minus_p_of_the_24_bit_values():
    from minicnn.kernels.numpy_backend import dropout_threshold as threshold
    assert threshold(0.0) == 0 and threshold(0.5) == 2**23 and threshold(0.1) == 1677722  # ceil(0.1 * 2^24)
    with pytest.raises(ValueError, match="dropout probability must lie in \\[0, 1\\), got 1.0"):
        threshold(1.0)


def test_dropout_keys_come_from_a_numpy_generator():
    assert mrandom.draw_key(np.random.default_rng(0)) == mrandom.draw_key(np.random.default_rng(0))
    with pytest.raises(TypeError, match="numpy.random.Generator, got builtins.object"):
        mrandom.draw_key(object())


def test_dropout_keys_are_the_full_range_integers_of_the_generator():
    """draw_key takes the raw 64-bit output, which is what generator.integers(0, 2**64, uint64) returns: the keys
    (and so every dropout mask and checkpoint) stay those of the documented call."""
    g1, g2 = np.random.default_rng(7), np.random.default_rng(7)
    assert [mrandom.draw_key(g1) for _ in range(200)] == [int(g2.integers(0, 1 << 64, dtype=np.uint64)) for _ in range(200)]


def test_observing_keys_sees_every_draw_with_its_generator_inside_the_block_only():
    """minicnn/cuda_graph.py watches the draws of a recorded step (random.observing_keys), to redraw them per replay."""
    seen = []
    g1, g2 = np.random.default_rng(1), np.random.default_rng(2)
    with mrandom.observing_keys(lambda g, k: seen.append((g, k))):
        keys = [mrandom.draw_key(g1), mrandom.draw_key(g2), mrandom.draw_key(g1)]
    mrandom.draw_key(g1)   # after the block: not seen
    assert seen == [(g1, keys[0]), (g2, keys[1]), (g1, keys[2])]
    assert keys[2] != keys[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu, p", [(True, 0.0), (False, 0.3), (True, 0.1)])
def test_batch_norm_with_relu_and_dropout_fused_equals_the_layers_apart_bit_for_bit(dtype, relu, p, rng):
    """F.batch_norm(x, relu=..., dropout=p) is F.dropout(F.batch_norm(F.relu(x)), p): outputs, running
    statistics and every gradient identical (the dropout key drawn the same way), with zeros and negative
    values in x."""
    x = rng.standard_normal((4, 3, 5, 6)).astype(dtype)
    x[0, 0, 0, :3] = 0.0
    gamma, beta = rng.uniform(0.5, 1.5, 3).astype(dtype), rng.standard_normal(3).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    results = []
    for fused in (True, False):
        xt, gt, bt = (Tensor(a.copy(), requires_grad=True) for a in (x, gamma, beta))
        rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
        gen = np.random.default_rng(11)
        if fused:
            y = F.batch_norm(xt, gt, bt, rm, rv, relu=relu, dropout=p, generator=gen)
        else:
            y = F.dropout(F.batch_norm(F.relu(xt) if relu else xt, gt, bt, rm, rv), p, generator=gen)
        y.backward(gy)
        results.append([y.data, rm, rv, xt.grad, gt.grad, bt.grad])
    if p:
        assert (results[0][0] == 0).mean() > 0.05  # the dropout did drop
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_sums_add_in_the_order_kernels_batchnorm_states(relu, rng):
    """Per position j of the plane the images' values left to right, then the positions left to right (N = 7:
    one pass over four images, then three passes of one): mean, var, dbeta and dgamma have exactly these bits,
    whatever the machine's vector width and with or without the fused ReLU."""
    from minicnn.kernels import cpu
    N, C, H, W = 7, 3, 5, 6
    x, gy = rng.standard_normal((N, C, H, W)), rng.standard_normal((N, C, H, W))
    x[0, 1, 0, 0] = -1.0                       # k = relu(x)[0, c, 0, 0] is 0 for channel 1 when relu
    gamma, beta = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
    y, mean, var, invstd = cpu.batch_norm_forward(x, gamma, beta, EPS, relu=relu)
    _, dgamma, dbeta = cpu.batch_norm_backward(gy, x, mean, invstd, gamma, relu=relu)

    def in_order(terms):                       # terms (N, C, H, W): sum over n, then over j, each left to right
        per_position = np.zeros((C, H * W))
        for n in range(N):
            per_position += terms[n].reshape(C, H * W)
        total = np.zeros(C)
        for j in range(H * W):
            total += per_position[:, j]
        return total

    v = np.maximum(x, 0) if relu else x
    k = v[0, :, 0, 0].reshape(1, C, 1, 1)
    S, Q = in_order(v - k), in_order((v - k) * (v - k))
    M = N * H * W
    np.testing.assert_array_equal(mean, k.reshape(C) + S / M)
    np.testing.assert_array_equal(var, np.maximum(Q / M - (S / M) ** 2, 0.0))
    np.testing.assert_array_equal(dbeta, in_order(gy))
    np.testing.assert_array_equal(dgamma, in_order(gy * (v - mean.reshape(1, C, 1, 1))) * invstd)


def test_fuse_pass_runs_relu_batch_norm_and_dropout_as_one_op_in_training_only(rng, monkeypatch):
    """eip4: six Conv -> ReLU -> BatchNorm2d -> Dropout blocks, a ReLU after the 1x1 convolution with no batch
    norm, and a final BatchNorm2d -> Dropout. In training only that ReLU and no Dropout run on their own, and
    the loss, every gradient and running statistic equal the unfused model's; in eval nothing is fused."""
    import importlib
    import minicnn
    from minicnn.models import eip4
    activation = importlib.import_module("minicnn.functional.activation")
    dropout = importlib.import_module("minicnn.functional.dropout")  # the module, not F.dropout
    x = rng.random((6, 1, 28, 28), dtype=np.float32)
    calls = []
    for cls in (activation.ReLU, dropout.Dropout):
        real = cls.forward
        monkeypatch.setattr(cls, "forward", lambda self, a, real=real: calls.append(type(self).__name__) or real(self, a))
    results = {}
    for fuse in (True, False):
        minicnn.manual_seed(3)
        model = eip4()
        run = nn.fuse(model)
        calls.clear()
        with config.using(fuse=fuse):
            loss = F.cross_entropy(run(Tensor(x)), np.arange(6) % 10)
        loss.backward()
        results[fuse] = [loss.data] + [p.grad for p in model.parameters()] + [b.data for _, b in model.named_buffers()]
        fused = [m for m in run.children() if isinstance(m, nn.FusedBatchNorm)]
        assert len(fused) == 7 and sum(m.relu is not None for m in fused) == 6   # the last BN has no ReLU before it
        assert all(m.dropout is not None for m in fused)
        assert sorted(calls) == (["ReLU"] if fuse else ["Dropout"] * 7 + ["ReLU"] * 7), (fuse, calls)
        model.eval()
        calls.clear()
        run(Tensor(x))
        assert calls == ["ReLU"] * 7  # eval: BatchNorm2d uses its running statistics, ReLU runs as a layer
        model.train()
    for a, b in zip(results[True], results[False]):
        np.testing.assert_array_equal(a, b)

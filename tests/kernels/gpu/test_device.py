"""The CUDA kernels and every op, layer and optimizer on a GPU against the CPU backend (marker `gpu`; skipped with
the reason when CuPy or a CUDA device is missing): within the tolerances of tests/support/gpu_checks.py; col2im is
bit-for-bit repeatable."""
import copy

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import minicnn
import minicnn.functional as F
from minicnn import Tensor, nn
from minicnn.kernels import cpu
from gpu_checks import (ATOL_F32, ATOL_F64, GPU_SETTINGS, KERNEL_ATOL_F32, KERNEL_RTOL_F32, RTOL_F32,  # noqa: F401
                        RTOL_F64, TRAIN_BUFFER_ATOL, TRAIN_RTOL, assert_close, cp, gpu_test, host, to_gpu, tols)
from helpers import unfold_cases
from kernel_cases import gemm_cases, pool_cases, pool_input  # noqa: F401


def kgpu():
    from minicnn.kernels import gpu as kernels_gpu
    return kernels_gpu


@gpu_test
def test_every_cuda_kernel_compiles_with_nvrtc_and_is_loaded_once():
    g = kgpu()
    names = g.compile_all()
    assert "col2im_f32" in names and "adam_update_f64" in names and "affine_warp_f32" in names
    modules = dict(g.runtime._MODULES)
    g.compile_all()
    assert all(g.runtime._MODULES[k] is m for k, m in modules.items()), "a RawModule was rebuilt"
    assert set(modules) == set(g.KERNELS)


@gpu_test
@GPU_SETTINGS
@given(unfold_cases(max_batch=2, max_size=7, max_kernel=3, max_padding=2, max_dilation=2),
       st.sampled_from([np.float32, np.float64]))
def test_gpu_im2col_col2im_match_the_cpu(case, dtype):
    N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    g = kgpu()
    col = g.im2col(to_gpu(x), KH, KW, SH, SW, PH, PW, DH, DW)
    assert isinstance(col, cp.ndarray)
    assert_close(col, cpu.im2col(x, KH, KW, SH, SW, PH, PW, DH, DW), 0, 0, "im2col (pure copies: exact)")
    gcol = rng.standard_normal(col.shape).astype(dtype)
    assert_close(g.col2im(to_gpu(gcol), H, W, SH, SW, PH, PW, DH, DW),
                 cpu.col2im(gcol, H, W, SH, SW, PH, PW, DH, DW), *tols(dtype, kernel=True), what="col2im")


@gpu_test
def test_gpu_col2im_is_bit_for_bit_repeatable():
    """A gather (one thread per pixel, fixed order), not atomicAdd: the same bits on every run."""
    g = kgpu()
    rng = np.random.default_rng(0)
    # 3x3 stride 1 with padding and dilation: every pixel sums up to 9 overlapping terms
    gcol = to_gpu(rng.standard_normal((16, 3, 3, 32, 28, 28)).astype(np.float32))
    first = g.col2im(gcol, 28, 28, 1, 1, 2, 2, 2, 2)
    for _ in range(5):
        assert bool(cp.array_equal(g.col2im(gcol, 28, 28, 1, 1, 2, 2, 2, 2), first))


@gpu_test
@GPU_SETTINGS
@given(pool_cases(), st.sampled_from([np.float32, np.float64]), st.booleans())
def test_gpu_pooling_kernels_match_the_cpu(case, dtype, ties):
    N, C, H, W, KH, KW, SH, SW, PH, PW, seed = case
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2, 3, (N, C, H, W)) if ties else rng.standard_normal((N, C, H, W))).astype(dtype)
    g = kgpu()
    y, argmax = g.max_pool2d_forward(to_gpu(x), KH, KW, SH, SW, PH, PW)
    y_cpu, argmax_cpu = cpu.max_pool2d_forward(x, KH, KW, SH, SW, PH, PW)
    assert_close(y, y_cpu, 0, 0, "max pool y")
    assert_close(argmax, argmax_cpu, 0, 0, "max pool argmax (same tie rule)")
    gy = rng.standard_normal(y.shape).astype(dtype)
    window = (KH, KW, SH, SW, PH, PW)
    gx_cpu = cpu.max_pool2d_backward(gy, argmax_cpu, H, W, *window)
    r, a = tols(dtype, kernel=True)
    assert_close(g.max_pool2d_backward(to_gpu(gy), argmax, H, W, *window), gx_cpu, r, a, "max pool backward (gather)")
    assert_close(g.avg_pool2d_forward(to_gpu(x), KH, KW, SH, SW, PH, PW),
                 cpu.avg_pool2d_forward(x, KH, KW, SH, SW, PH, PW), r, a, "avg pool forward")
    assert_close(g.avg_pool2d_backward(to_gpu(gy), H, W, KH, KW, SH, SW, PH, PW),
                 cpu.avg_pool2d_backward(gy, H, W, KH, KW, SH, SW, PH, PW), r, a, "avg pool backward")


@gpu_test
def test_gpu_affine_warp_matches_the_cpu():
    rng = np.random.default_rng(1)
    x = rng.random((8, 2, 28, 28), dtype=np.float32)
    theta = (np.tile(np.eye(2, 3), (8, 1, 1)) + rng.normal(0, 0.2, (8, 2, 3)) * [1, 1, 4]).astype(np.float32)
    assert_close(kgpu().affine_warp(to_gpu(x), to_gpu(theta)), cpu.affine_warp(x, theta),
                 KERNEL_RTOL_F32, KERNEL_ATOL_F32, "affine warp")
    assert_close(kgpu().affine_warp(to_gpu(x), theta), cpu.affine_warp(x, theta),  # theta may stay on the host
                 KERNEL_RTOL_F32, KERNEL_ATOL_F32, "affine warp, host theta")


@gpu_test
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_dropout_mask_equals_the_cpu_mask_for_the_same_key(dtype):
    mask = kgpu().dropout_mask((64, 16, 5, 5), 0.3, 2**63 + 12345, dtype)
    assert isinstance(mask, cp.ndarray)
    assert_close(mask, cpu.dropout_mask((64, 16, 5, 5), 0.3, 2**63 + 12345, dtype), 0, 0, "mask")


@gpu_test
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_gpu_dropout_mask_statistics(p):
    """Hashed on the device: a fraction p of zeros (within 5 standard deviations), the rest exactly 1/(1-p)."""
    n = 1_000_000
    mask = host(kgpu().dropout_mask((n,), p, minicnn.random.draw_key(np.random.default_rng(0)), np.float32))
    dropped = np.count_nonzero(mask == 0) / n
    assert abs(dropped - p) < 5 * np.sqrt(p * (1 - p) / n)
    assert set(np.unique(mask)) == {np.float32(0), np.float32(1 / (1 - p))}
    assert abs(mask.mean() - 1.0) < 5 * np.sqrt(p / (1 - p) / n)


@gpu_test
def test_gpu_default_dropout_generator_follows_manual_seed():
    x = Tensor(cp.ones((4, 100), np.float32))
    minicnn.manual_seed(11)
    a = host(F.dropout(x, 0.5).data)
    minicnn.manual_seed(11)
    b = host(F.dropout(x, 0.5).data)
    np.testing.assert_array_equal(a, b)
    assert 0 < np.count_nonzero(a) < a.size


@gpu_test
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd", "sgd_momentum", "sgd_nesterov"])
def test_gpu_optimizer_kernels_match_the_cpu(kind, dtype):
    rng = np.random.default_rng(3)
    n = 10_007
    p = rng.standard_normal(n).astype(dtype)
    state_cpu = [p.copy(), np.zeros(n, dtype), np.zeros(n, dtype)]
    state_gpu = [to_gpu(a) for a in state_cpu]
    g = kgpu()
    for step in range(1, 6):
        grad = (rng.standard_normal(n) * 10.0 ** rng.integers(-6, 1, n)).astype(dtype)
        if kind.startswith("adam"):
            args = (0.003, 0.9, 0.999, 1e-7, step, 0.01, kind == "adamw")
            cpu.adam_update(state_cpu[0], grad, state_cpu[1], state_cpu[2], *args)
            g.adam_update(state_gpu[0], to_gpu(grad), state_gpu[1], state_gpu[2], *args)
        else:
            args = (0.01, 0.0 if kind == "sgd" else 0.9, 1e-4, kind == "sgd_nesterov")
            cpu.sgd_update(state_cpu[0], grad, state_cpu[1], *args)
            g.sgd_update(state_gpu[0], to_gpu(grad), state_gpu[1], *args)
        for name, a, b in zip(("p", "m/buf", "v"), state_gpu, state_cpu):
            assert_close(a, b, *tols(dtype, kernel=True), what=f"{kind} step {step} {name}")


# ---- ops forward and backward --------------------------------------------------------------------------
def both_devices(fn, arrays, seed=0, wrt=None):
    """Run fn(*tensors) on the CPU and on the GPU from the same arrays; backward with the same random gy.

    Returns ((out_cpu, grads_cpu), (out_gpu, grads_gpu)) as NumPy arrays."""
    wrt = range(len(arrays)) if wrt is None else wrt
    results = []
    for device in ("cpu", "gpu"):
        tensors = [Tensor(a if device == "cpu" else to_gpu(a), requires_grad=i in wrt) for i, a in enumerate(arrays)]
        out = fn(*tensors)
        assert out.device == device
        gy = np.asarray(np.random.default_rng(seed).standard_normal(out.shape), dtype=out.dtype)
        out.backward(gy if device == "cpu" else to_gpu(gy))
        results.append((host(out.data), [host(t.grad) if t.requires_grad else None for t in tensors]))
    return results


def assert_same_on_both(fn, arrays, dtype, what, wrt=None, kernel=False):
    (out_c, grads_c), (out_g, grads_g) = both_devices(fn, arrays, wrt=wrt)
    rtol, atol = tols(dtype, kernel)
    assert_close(out_g, out_c, rtol, atol, f"{what}: forward")
    for i, (a, b) in enumerate(zip(grads_g, grads_c)):
        if b is not None:
            assert_close(a, b, rtol, atol, f"{what}: gradient of input {i}")


@st.composite
def conv_cases(draw):
    G = draw(st.integers(1, 3))
    case = dict(N=draw(st.integers(1, 3)), G=G, C=G * draw(st.integers(1, 3)), OC=G * draw(st.integers(1, 3)),
                H=draw(st.integers(1, 9)), W=draw(st.integers(1, 9)), KH=draw(st.integers(1, 3)),
                KW=draw(st.integers(1, 3)), stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                padding=(draw(st.integers(0, 2)), draw(st.integers(0, 2))),
                dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))), bias=draw(st.booleans()),
                seed=draw(st.integers(0, 2 ** 31 - 1)))
    assume(case["dilation"][0] * (case["KH"] - 1) + 1 <= case["H"] + 2 * case["padding"][0])
    assume(case["dilation"][1] * (case["KW"] - 1) + 1 <= case["W"] + 2 * case["padding"][1])
    return case


@gpu_test
@GPU_SETTINGS
@given(conv_cases(), st.sampled_from([np.float32, np.float64]))
def test_gpu_conv2d_forward_and_backward_match_the_cpu(case, dtype):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["N"], case["C"], case["H"], case["W"])).astype(dtype)
    w = rng.standard_normal((case["OC"], case["C"] // case["G"], case["KH"], case["KW"])).astype(dtype)
    arrays = [x, w] + ([rng.standard_normal(case["OC"]).astype(dtype)] if case["bias"] else [])
    hyper = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["G"])
    assert_same_on_both(lambda *t: F.conv2d(*t, **hyper), arrays, dtype, f"conv2d {case}")


@gpu_test
def test_gpu_conv2d_pointwise_fast_path_matches_the_cpu():
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((4, 6, 5, 5)).astype(np.float32), rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
              rng.standard_normal(4).astype(np.float32)]
    assert_same_on_both(lambda x, w, b: F.conv2d(x, w, b, groups=2), arrays, np.float32, "1x1 conv2d")


@gpu_test
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_pool_ops_match_the_cpu(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 9, 8)).astype(dtype)
    for name, fn in [("max_pool2d 2", lambda t: F.max_pool2d(t, 2)),
                     ("max_pool2d 3/2 pad 1", lambda t: F.max_pool2d(t, 3, 2, 1)),
                     ("avg_pool2d 3/1 pad 1", lambda t: F.avg_pool2d(t, 3, 1, 1)),
                     ("avg_pool2d (2,3)", lambda t: F.avg_pool2d(t, (2, 3))),
                     ("global_avg_pool2d", F.global_avg_pool2d)]:
        assert_same_on_both(fn, [x], dtype, name)


@gpu_test
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_batch_norm_matches_the_cpu_in_training_and_eval(dtype):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((8, 5, 6, 6)) * 3 + 1).astype(dtype)
    gamma, beta = rng.standard_normal(5).astype(dtype), rng.standard_normal(5).astype(dtype)
    for training in (True, False):
        rm, rv = np.full(5, 0.5, dtype), np.full(5, 2.0, dtype)
        stats = {"cpu": (rm, rv), "gpu": (to_gpu(rm), to_gpu(rv))}  # updated in place by training passes

        def fn(t, g, b, training=training, stats=stats):
            return F.batch_norm(t, g, b, *stats[t.device], training=training, momentum=0.1, eps=1e-5)
        assert_same_on_both(fn, [x, gamma, beta], dtype, f"batch_norm training={training}")
        for a, b in zip(stats["gpu"], stats["cpu"]):
            assert_close(a, b, *tols(dtype), what="running statistics")
    stats = {"cpu": (np.zeros(5, dtype), np.ones(5, dtype)), "gpu": (to_gpu(np.zeros(5, dtype)), to_gpu(np.ones(5, dtype)))}

    def fused(t, g, b):  # ReLU in front and dropout behind, fused; about half of t - 1 is negative here
        return F.batch_norm(t - 1, g, b, *stats[t.device], training=True, relu=True, dropout=0.3,
                            generator=np.random.default_rng(9))
    assert_same_on_both(fused, [x, gamma, beta], dtype, "batch_norm relu=True dropout=0.3")
    for a, b in zip(stats["gpu"], stats["cpu"]):
        assert_close(a, b, *tols(dtype), what="running statistics (relu=True)")


@gpu_test
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_activations_and_losses_match_the_cpu(dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((16, 10)).astype(dtype) * 4
    labels = rng.integers(0, 10, 16)
    for name, fn in [("relu", F.relu), ("sigmoid", F.sigmoid), ("tanh", F.tanh), ("log_softmax", F.log_softmax),
                     ("softmax", F.softmax), ("exp", F.exp)]:
        assert_same_on_both(fn, [x], dtype, name)
    for reduction in ("mean", "sum", "none"):
        def loss(t, r=reduction):
            return F.cross_entropy(t, labels if t.device == "cpu" else to_gpu(labels), reduction=r)
        assert_same_on_both(loss, [x], dtype, f"cross_entropy {reduction}")
    def nll(t):
        return F.nll_loss(F.log_softmax(t), labels if t.device == "cpu" else to_gpu(labels))
    assert_same_on_both(nll, [x], dtype, "nll_loss")
    y = rng.standard_normal((10, 7)).astype(dtype)
    assert_same_on_both(lambda a, b: F.relu(a @ b).sum(axis=1).mean(), [x, y], dtype, "matmul, sum, mean")


@gpu_test
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_dropout_op_with_a_seeded_numpy_generator_matches_the_cpu(dtype):
    x = np.random.default_rng(8).standard_normal((4, 3, 5, 5)).astype(dtype)
    assert_same_on_both(lambda t: F.dropout(t, 0.25, generator=np.random.default_rng(1)), [x], dtype, "dropout",
                        kernel=True)


# ---- layers --------------------------------------------------------------------------------------------
LAYERS = {
    "Conv2d 3x3 s2 p1": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 9, 9)),
    "Conv2d dilated grouped": (lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), (2, 4, 7, 8)),
    "Conv2d 1x1": (lambda: nn.Conv2d(3, 5, 1), (2, 3, 6, 6)),
    "Conv2d no bias": (lambda: nn.Conv2d(2, 3, (2, 3), bias=False), (3, 2, 5, 6)),
    "Linear": (lambda: nn.Linear(12, 7), (5, 12)),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3, momentum=0.01, eps=1e-3), (4, 3, 5, 5)),
    "BatchNorm2d eval": (lambda: nn.BatchNorm2d(3).eval(), (4, 3, 5, 5)),
    "ReLU": (lambda: nn.ReLU(), (2, 3, 4, 4)),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), (2, 3, 8, 8)),
    "MaxPool2d 3/2 pad 1": (lambda: nn.MaxPool2d(3, 2, 1), (2, 3, 9, 9)),
    "AvgPool2d": (lambda: nn.AvgPool2d(2), (2, 3, 8, 8)),
    "GlobalAvgPool2d": (lambda: nn.GlobalAvgPool2d(), (2, 3, 5, 5)),
    "Dropout seeded": (lambda: nn.Dropout(0.3, seed=3), (4, 3, 5, 5)),
    "Dropout eval": (lambda: nn.Dropout(0.3).eval(), (4, 3, 5, 5)),
    "Flatten": (lambda: nn.Flatten(), (2, 3, 4, 4)),
}


@gpu_test
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gpu_layer_forward_and_backward_match_the_cpu(name):
    make, shape = LAYERS[name]
    minicnn.manual_seed(0)
    layer_cpu = make()
    layer_gpu = copy.deepcopy(layer_cpu).to("gpu")
    assert all(p.device == "gpu" for p in layer_gpu.parameters())
    x = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
    results = {}
    for device, layer in (("cpu", layer_cpu), ("gpu", layer_gpu)):
        xt = Tensor(x if device == "cpu" else to_gpu(x), requires_grad=True)
        out = layer(xt)
        assert out.device == device
        gy = np.random.default_rng(10).standard_normal(out.shape).astype(np.float32)
        out.backward(gy if device == "cpu" else to_gpu(gy))
        results[device] = (out.data, xt.grad, [(n, p.grad) for n, p in layer.named_parameters()],
                           [(n, b.data) for n, b in layer.named_buffers()])
    (oc, gc, pc, bc), (og, gg, pg, bg) = results["cpu"], results["gpu"]
    assert_close(og, oc, RTOL_F32, ATOL_F32, f"{name}: forward")
    assert_close(gg, gc, RTOL_F32, ATOL_F32, f"{name}: input gradient")
    for (n, a), (_, b) in zip(pg, pc):
        assert_close(a, b, RTOL_F32, ATOL_F32, f"{name}: gradient of {n}")
    for (n, a), (_, b) in zip(bg, bc):
        assert_close(a, b, RTOL_F32, ATOL_F32, f"{name}: buffer {n}")


@gpu_test
@pytest.mark.parametrize("kind", ["Adam", "AdamW", "SGD"])
def test_gpu_optimizer_classes_match_the_cpu(kind):
    from minicnn import optim
    minicnn.manual_seed(1)
    model_cpu = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model_gpu = copy.deepcopy(model_cpu).to("gpu")
    make = {"Adam": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-3), "AdamW": lambda ps: optim.AdamW(ps, lr=0.01),
            "SGD": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)}[kind]
    opts = {"cpu": make(model_cpu.parameters()), "gpu": make(model_gpu.parameters())}
    rng = np.random.default_rng(12)
    for _ in range(3):
        x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
        y = rng.integers(0, 3, 5)
        for device, model in (("cpu", model_cpu), ("gpu", model_gpu)):
            loss = F.cross_entropy(model(Tensor(x if device == "cpu" else to_gpu(x))),
                                   y if device == "cpu" else to_gpu(y))
            opts[device].zero_grad()
            loss.backward()
            opts[device].step()
    for (n, a), (_, b) in zip(model_gpu.named_parameters(), model_cpu.named_parameters()):
        assert_close(a.data, b.data, TRAIN_RTOL, 1e-5, f"{kind}: {n} after 3 steps")


@gpu_test
def test_gpu_eip4_training_steps_give_the_cpu_losses():
    """Same weights, same batches, dropout p=0 (so the two devices' generators do not matter), Adam."""
    from minicnn import optim
    from minicnn.models import eip4
    minicnn.manual_seed(0)
    model_cpu = eip4(dropout=0.0)
    model_gpu = copy.deepcopy(model_cpu).to("gpu")
    opts = {"cpu": optim.Adam(model_cpu.parameters(), lr=1e-3, eps=1e-3),
            "gpu": optim.Adam(model_gpu.parameters(), lr=1e-3, eps=1e-3)}
    rng = np.random.default_rng(13)
    losses = {"cpu": [], "gpu": []}
    for _ in range(4):
        x = rng.random((32, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, 32)
        for device, model in (("cpu", model_cpu), ("gpu", model_gpu)):
            out = model(Tensor(x if device == "cpu" else to_gpu(x)))
            loss = F.cross_entropy(out, y if device == "cpu" else to_gpu(y))
            opts[device].zero_grad()
            loss.backward()
            opts[device].step()
            losses[device].append(float(host(loss.data)))
    np.testing.assert_allclose(losses["gpu"][0], losses["cpu"][0], rtol=RTOL_F32, err_msg="first loss")
    np.testing.assert_allclose(losses["gpu"], losses["cpu"], rtol=TRAIN_RTOL, err_msg="losses of 4 steps")
    for (n, a), (_, b) in zip(model_gpu.named_buffers(), model_cpu.named_buffers()):
        assert_close(a.data, b.data, TRAIN_RTOL, TRAIN_BUFFER_ATOL, f"eip4 buffer {n}")


# ---- the GEMM kernel ----------------------------------------------------------------------------------------
def _strided_like(a_host, a_gpu):
    """a_gpu laid out like a_host: a transposed view where a_host is one."""
    if a_host.flags.c_contiguous:
        return a_gpu
    return cp.ascontiguousarray(a_gpu.swapaxes(-1, -2)).swapaxes(-1, -2)


@gpu_test
@GPU_SETTINGS
@given(gemm_cases())
def test_gpu_gemm_kernel_matches_cublas(case):
    a, b = case
    ga, gb = _strided_like(a, to_gpu(a)), _strided_like(b, to_gpu(b))
    got = kgpu().gemm(ga, gb)
    assert_close(got, cp.matmul(ga, gb), *tols(a.dtype), what="gemm.cu vs cupy.matmul")


@gpu_test
@pytest.mark.parametrize("M, K, N, transpose_b", [(16, 144, 86528, False), (144, 86528, 16, True),
                                                 (144, 16, 86528, False), (10, 16, 73728, False)])
def test_gpu_gemm_kernel_on_the_eip4_shapes(M, K, N, transpose_b):
    """The products of eip4's second convolution (forward, weight gradient with split k, column gradient) and
    of the 1x1 convolution, as the engine hands them over (the weight gradient's B is a transposed view)."""
    rng = cp.random.default_rng(3)
    a = rng.standard_normal((1, M, K), dtype=np.float32)
    b = (rng.standard_normal((1, N, K), dtype=np.float32).swapaxes(-1, -2) if transpose_b
         else rng.standard_normal((1, K, N), dtype=np.float32))
    want = cp.matmul(a.astype(np.float64), b.astype(np.float64))
    got = kgpu().gemm(a, b)
    scale = float(cp.abs(want).max())
    assert_close(got.astype(np.float64), want, 1e-4, 1e-5 * scale, what=f"gemm {M}x{K} @ {K}x{N}")


@gpu_test
def test_gpu_kernel_wrappers_name_bad_inputs():
    g = kgpu()
    with pytest.raises(TypeError, match="CuPy array"):
        g.im2col(np.zeros((1, 1, 3, 3), np.float32), 2, 2)
    with pytest.raises(TypeError, match="float16"):
        g.im2col(cp.zeros((1, 1, 3, 3), np.float16), 2, 2)
    with pytest.raises(ValueError, match="1-D C-contiguous"):
        g.adam_update(cp.zeros((4, 2), np.float32)[:, 0], cp.zeros(4, np.float32), cp.zeros(4, np.float32),
                      cp.zeros(4, np.float32), 0.1, 0.9, 0.999, 1e-8, 1)

"""The CUDA kernels (kernels/*.cu) emulated on the host, through the real GPU wrappers (kernels/gpu/), against their
Numba twins: each must equal its twin BIT FOR BIT (same operation order, no fused multiply-add), launched with
3-thread blocks and at most 2 blocks so that every grid-stride loop wraps many times. tests/support/cuda_host.py
says how. Runs everywhere a C++ compiler is found; no GPU needed."""
import os
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from minicnn.kernels import cpu
from minicnn.kernels.gemm import matmul_reference
from cuda_host import CXX, KERNELS_DIR, HostKernel, HostModule, host_cupy, load_gpu_package
from helpers import unfold_cases
from kernel_cases import gemm_cases, pool_cases, pool_input, same_bits

needs_cxx = pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++, c++ or clang++) to emulate the CUDA kernels")
HOST_SETTINGS = settings(max_examples=30, deadline=None)


@pytest.fixture(scope="module")
def host_gpu(tmp_path_factory):
    """kernels/gpu/ running the .cu kernels on the host, with 3-thread blocks and at most 2 blocks per launch."""
    HostModule.build_root = str(tmp_path_factory.mktemp("cuda_on_host"))
    package = load_gpu_package(host_cupy(HostModule))
    package.runtime.THREADS, package.runtime.MAX_BLOCKS = 3, 2  # so every grid-stride loop wraps around many times
    return package


@needs_cxx
@HOST_SETTINGS
@given(unfold_cases(max_batch=2, max_size=7, max_kernel=3, max_padding=2, max_dilation=2),
       st.sampled_from([np.float32, np.float64]))
def test_host_emulated_im2col_and_col2im_equal_numba_bit_for_bit(host_gpu, case, dtype):
    N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    col = host_gpu.im2col(x, KH, KW, SH, SW, PH, PW, DH, DW)
    assert col.dtype == dtype
    np.testing.assert_array_equal(col, cpu.im2col(x, KH, KW, SH, SW, PH, PW, DH, DW))
    gcol = rng.standard_normal(col.shape).astype(dtype)
    dx = host_gpu.col2im(gcol, H, W, SH, SW, PH, PW, DH, DW)
    assert dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_array_equal(dx, cpu.col2im(gcol, H, W, SH, SW, PH, PW, DH, DW))


@needs_cxx
@HOST_SETTINGS
@given(pool_cases(), st.sampled_from([np.float32, np.float64]), st.sampled_from(["normal", "ties", "nans"]))
def test_host_emulated_pooling_equals_numba_bit_for_bit(host_gpu, case, dtype, values):
    N, C, H, W, KH, KW, SH, SW, PH, PW, seed = case
    rng = np.random.default_rng(seed)
    x = pool_input(rng, (N, C, H, W), dtype, values)
    y, argmax = host_gpu.max_pool2d_forward(x, KH, KW, SH, SW, PH, PW)
    y_cpu, argmax_cpu = cpu.max_pool2d_forward(x, KH, KW, SH, SW, PH, PW)
    assert same_bits(y, y_cpu), (y, y_cpu)
    np.testing.assert_array_equal(argmax, argmax_cpu)
    assert argmax.dtype == np.int32
    gy = rng.standard_normal(y.shape).astype(dtype)
    window = (KH, KW, SH, SW, PH, PW)
    gx_cpu = cpu.max_pool2d_backward(gy, argmax_cpu, H, W, *window)
    np.testing.assert_array_equal(host_gpu.max_pool2d_backward(gy, argmax, H, W, *window), gx_cpu)  # gather
    np.testing.assert_array_equal(host_gpu.avg_pool2d_forward(x, KH, KW, SH, SW, PH, PW),
                                  cpu.avg_pool2d_forward(x, KH, KW, SH, SW, PH, PW))
    np.testing.assert_array_equal(host_gpu.avg_pool2d_backward(gy, H, W, KH, KW, SH, SW, PH, PW),
                                  cpu.avg_pool2d_backward(gy, H, W, KH, KW, SH, SW, PH, PW))


@needs_cxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window", [(2, 2, 2, 2, 0, 0), (3, 3, 1, 1, 1, 1), (3, 2, 2, 1, 1, 1)],
                         ids=["2x2 stride 2 (Numba's 2x2 path)", "3x3 stride 1 pad 1", "3x2 stride 2x1 pad 1"])
def test_host_emulated_max_pool_propagates_nan_like_numba(host_gpu, dtype, window):
    """One NaN at each position of the planes (so at every position of a window, first or not), then two and
    three NaNs in a plane, NaN beside +inf, a plane of -inf: the .cu kernel and the Numba kernel agree on the
    value (the same NaN, bit for bit), on argmax (the last NaN of the window) and on the gathered gradient."""
    H, W = 6, 5
    base = np.arange(H * W, dtype=dtype).reshape(H, W) - 7
    planes = []
    for k in range(H * W):
        plane = base.copy()
        plane.flat[k] = np.nan
        planes.append(plane)
    for ks in [(0, 1), (1, 5), (0, 6), (6, 12), (2, 3, 8), (7, 8, 12, 13)]:
        plane = base.copy()
        plane.flat[list(ks)] = np.nan
        plane.flat[ks[0] + 2] = np.inf
        planes.append(plane)
    planes.append(np.full((H, W), -np.inf, dtype))
    x = np.stack(planes)[:, None]
    y, argmax = host_gpu.max_pool2d_forward(x, *window)
    y_cpu, argmax_cpu = cpu.max_pool2d_forward(x, *window)
    assert same_bits(y, y_cpu), (y, y_cpu)
    np.testing.assert_array_equal(argmax, argmax_cpu)
    KH, KW, SH, SW, PH, PW = window   # the rule itself: the window's last NaN, else its first maximum
    for p, oh, ow in np.ndindex(len(planes), *y.shape[2:]):
        cells = [(ih, iw) for ih in range(oh * SH - PH, oh * SH - PH + KH)
                 for iw in range(ow * SW - PW, ow * SW - PW + KW) if 0 <= ih < H and 0 <= iw < W]
        nans = [cell for cell in cells if np.isnan(planes[p][cell])]
        ih, iw = nans[-1] if nans else max(cells, key=lambda cell: planes[p][cell])  # max: the first maximum
        assert argmax[p, 0, oh, ow] == ih * W + iw and same_bits(y[p, 0, oh, ow], planes[p][ih, iw]), (p, oh, ow)
    gy = np.random.default_rng(0).standard_normal(y.shape).astype(dtype)
    np.testing.assert_array_equal(host_gpu.max_pool2d_backward(gy, argmax, H, W, *window),
                                  cpu.max_pool2d_backward(gy, argmax_cpu, H, W, *window))


@needs_cxx
@HOST_SETTINGS
@given(st.integers(1, 3), st.integers(1, 2), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2 ** 31 - 1))
def test_host_emulated_affine_warp_equals_numba_bit_for_bit(host_gpu, N, C, H, W, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    theta = (np.tile(np.eye(2, 3), (N, 1, 1)) + rng.normal(0, 0.3, (N, 2, 3)) * [1, 1, 3]).astype(np.float32)
    np.testing.assert_array_equal(host_gpu.affine_warp(x, theta), cpu.affine_warp(x, theta))


@needs_cxx
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_host_emulated_dropout_equals_the_cpu_mask_for_the_same_key(host_gpu, p, dtype):
    """Same hash on both devices: keys above 2^63 check that the key travels as an unsigned 64-bit value."""
    x = np.random.default_rng(0).standard_normal((3, 5, 7)).astype(dtype)
    for key in (0, 99, 2**63 + 5, 2**64 - 1):
        y = host_gpu.dropout_apply(x, p, key)
        assert y.dtype == x.dtype and y.shape == x.shape
        np.testing.assert_array_equal(y, cpu.dropout_apply(x, p, key))
        np.testing.assert_array_equal(host_gpu.dropout_mask(x.shape, p, key, dtype),
                                      cpu.dropout_mask(x.shape, p, key, dtype))


@needs_cxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_host_emulated_kernels_read_the_dropout_key_from_its_slot_while_captured(host_gpu, monkeypatch, dtype):
    """While a CUDA graph is recorded (minicnn/cuda_graph.py), dropout.cu and batchnorm.cu get key 0 and a pointer
    to the key's device slot, and use key + *key_offset: with a slot holding another key, the masks are that
    key's. Without slots, the key passed by value is used and reported frozen."""
    slot_key = 2 ** 63 + 12345

    class Slots:
        asked = []

        def slot(self, key):
            self.asked.append(key)
            return np.array([slot_key], np.uint64)
    monkeypatch.setattr(host_gpu.fake_cupy.cuda.stream, "capturing", True)   # as if a CUDA graph were recorded
    with host_gpu.recording(Slots()) as frozen:
        rng = np.random.default_rng(4)
        x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
        gy = rng.standard_normal(x.shape).astype(dtype)
        gamma, beta = rng.uniform(0.5, 1.5, 3).astype(dtype), rng.standard_normal(3).astype(dtype)
        np.testing.assert_array_equal(host_gpu.dropout_apply(x, 0.3, 7), cpu.dropout_apply(x, 0.3, slot_key))
        got = host_gpu.batch_norm_forward(x, gamma, beta, 1e-3, relu=True, dropout_p=0.3, dropout_key=7)
        want = cpu.batch_norm_forward(x, gamma, beta, 1e-3, relu=True, dropout_p=0.3, dropout_key=slot_key)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
        mean, invstd = want[1], want[3]
        got_back = host_gpu.batch_norm_backward(gy, x, mean, invstd, gamma, relu=True, dropout_p=0.3, dropout_key=7)
        want_back = cpu.batch_norm_backward(gy, x, mean, invstd, gamma, relu=True, dropout_p=0.3, dropout_key=slot_key)
        for a, b in zip(got_back, want_back):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert Slots.asked == [7, 7, 7] and frozen == []
    with host_gpu.recording(None) as frozen:   # no slots: the key is passed by value, and reported frozen
        np.testing.assert_array_equal(host_gpu.dropout_apply(x, 0.3, 7), cpu.dropout_apply(x, 0.3, 7))
    assert frozen == ["dropout key"]


@needs_cxx
@HOST_SETTINGS
@given(st.integers(1, 50), st.booleans(), st.sampled_from([0.0, 0.01]), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2 ** 31 - 1))
def test_host_emulated_adam_equals_numba_bit_for_bit(host_gpu, n, decoupled, wd, dtype, seed):
    rng = np.random.default_rng(seed)
    host = [rng.standard_normal(n).astype(dtype), None, np.zeros(n, dtype), np.zeros(n, dtype)]
    ref = [a.copy() if a is not None else None for a in host]
    for step in range(1, 4):
        g = (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 1, n)).astype(dtype)  # tiny and large gradients
        host[1], ref[1] = g, g.copy()
        host_gpu.adam_update(*host, 0.003, 0.9, 0.999, 1e-7, step, wd, decoupled)
        cpu.adam_update(*ref, 0.003, 0.9, 0.999, 1e-7, step, wd, decoupled)
        for a, b in zip(host, ref):
            np.testing.assert_array_equal(a, b)


@needs_cxx
@HOST_SETTINGS
@given(st.integers(1, 50), st.sampled_from([(0.0, False), (0.9, False), (0.9, True)]), st.sampled_from([0.0, 1e-4]),
       st.sampled_from([np.float32, np.float64]), st.integers(0, 2 ** 31 - 1))
def test_host_emulated_sgd_equals_numba_bit_for_bit(host_gpu, n, momentum, wd, dtype, seed):
    mu, nesterov = momentum
    rng = np.random.default_rng(seed)
    p, buf = rng.standard_normal(n).astype(dtype), np.zeros(n, dtype)
    p_ref, buf_ref = p.copy(), buf.copy()
    for _ in range(3):
        g = rng.standard_normal(n).astype(dtype)
        host_gpu.sgd_update(p, g, buf, 0.01, mu, wd, nesterov)
        cpu.sgd_update(p_ref, g.copy(), buf_ref, 0.01, mu, wd, nesterov)
        np.testing.assert_array_equal(p, p_ref)
        np.testing.assert_array_equal(buf, buf_ref)


@needs_cxx
@settings(max_examples=12, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.sampled_from([3, 5, 8]),
       st.sampled_from([np.float32, np.float64]), st.floats(-100, 100), st.booleans(), st.sampled_from([0.0, 0.4]),
       st.integers(0, 2 ** 31 - 1))
def test_host_emulated_batch_norm_matches_numba(host_gpu, N, C, H, W, threads, dtype, offset, relu, p, seed):
    """batchnorm.cu (block sums in shared memory, then one thread per value) against kernels/batchnorm.py;
    an offset far from zero checks the shifted sums. Block sizes 3, 5 and 8 give the tree odd and even rounds.
    With relu, both normalise relu(x) (a fused ReLU) and mask the input gradient; with p, a fused dropout."""
    assume(N * H * W >= 2)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, C, H, W)) * rng.uniform(0.1, 3) + offset).astype(dtype)
    gamma, beta = rng.uniform(0.5, 1.5, C).astype(dtype), rng.standard_normal(C).astype(dtype)
    gy = rng.standard_normal((N, C, H, W)).astype(dtype)
    old = host_gpu.runtime.THREADS
    host_gpu.runtime.THREADS = threads
    running = [rng.uniform(0.5, 2, C).astype(dtype) for _ in range(2)]  # running mean and variance
    running_ref = [a.copy() for a in running]
    try:
        fused = dict(relu=relu, dropout_p=p, dropout_key=seed)
        got = host_gpu.batch_norm_forward(x, gamma, beta, 1e-3, *running, 0.3, **fused)
        y, mean, var, invstd = cpu.batch_norm_forward(x, gamma, beta, 1e-3, *running_ref, 0.3, **fused)
        got_back = host_gpu.batch_norm_backward(gy, x, mean, invstd, gamma, **fused)
    finally:
        host_gpu.runtime.THREADS = old
    want_back = cpu.batch_norm_backward(gy, x, mean, invstd, gamma, **fused)
    rtol, atol = (2e-5, 2e-5) if dtype == np.float32 else (1e-10, 1e-10)
    for a, b in zip(got + got_back + tuple(running), (y, mean, var, invstd) + want_back + tuple(running_ref)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * max(1.0, float(np.abs(b).max())))


@needs_cxx
def test_host_emulated_batch_norm_blocks_wait_for_each_other(host_gpu):
    """With 64 real threads per block the sums are right only if __syncthreads holds every thread of the tree."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 2, 9, 9)).astype(np.float64)
    old = host_gpu.runtime.THREADS
    host_gpu.runtime.THREADS = 64
    try:
        y, mean, var, invstd = host_gpu.batch_norm_forward(x, np.ones(2), np.zeros(2), 1e-5)
    finally:
        host_gpu.runtime.THREADS = old
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(var, x.var(axis=(0, 2, 3)), rtol=1e-12)


@needs_cxx
@HOST_SETTINGS
@given(st.integers(1, 40), st.sampled_from([np.float32, np.float64]), st.integers(0, 2 ** 31 - 1))
def test_host_emulated_relu_equals_numba_bit_for_bit(host_gpu, n, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(dtype)
    x[rng.random(n) < 0.2] = 0.0
    x[rng.random(n) < 0.1] = np.nan
    gy = rng.standard_normal(n).astype(dtype)
    gy[rng.random(n) < 0.1] = np.inf
    y = host_gpu.relu_forward(x)
    np.testing.assert_array_equal(y, cpu.relu_forward(x))
    np.testing.assert_array_equal(host_gpu.relu_backward(gy, y), cpu.relu_backward(gy, y))


@needs_cxx
@HOST_SETTINGS
@given(st.integers(1, 9), st.integers(1, 11), st.sampled_from([np.float32, np.float64]), st.integers(0, 2 ** 31 - 1))
def test_host_emulated_cross_entropy_equals_numba(host_gpu, N, K, dtype, seed):
    """Same formulas, row sums in double on both sides: equal up to the last bit of exp/log in the two libms."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, K)) * 20).astype(dtype)
    t = rng.integers(0, K, N)
    t[rng.random(N) < 0.2] = K  # outside the classes: a NaN row on both
    losses, p, mean = host_gpu.cross_entropy_forward(x, t, N)
    want_losses, want_p, want_mean = cpu.cross_entropy_forward(x, t, N)
    tol = dict(rtol=1e-6, atol=0) if dtype == np.float32 else dict(rtol=1e-14, atol=0)
    np.testing.assert_allclose(losses, want_losses, **tol)
    np.testing.assert_allclose(p, want_p, **tol)
    np.testing.assert_allclose(mean, want_mean, **tol)  # the block's tree against a loop: both sum in double
    t[:] = 0
    total = host_gpu.cross_entropy_forward(x, t)[2]
    np.testing.assert_allclose(total, cpu.cross_entropy_forward(x, t)[2], **tol)
    for gy, divisor in ((rng.standard_normal(N).astype(dtype), 1), (np.ones(1, dtype), N)):
        np.testing.assert_allclose(host_gpu.cross_entropy_backward(p, t, gy, divisor),
                                   cpu.cross_entropy_backward(want_p, t, gy, divisor), **tol)


@needs_cxx
@HOST_SETTINGS
@given(st.lists(st.integers(1, 12), min_size=1, max_size=5), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2 ** 31 - 1))
def test_host_emulated_accumulate_grads_adds_every_pair(host_gpu, sizes, dtype, seed):
    """optim.cu's accumulate_grads: one launch adds K sources into K destinations (views into one flat
    buffer, as the optimizer's gradients are) through a table of addresses; nothing else is written."""
    rng = np.random.default_rng(seed)
    flat = rng.standard_normal(sum(sizes) + 3).astype(dtype)
    want = flat.copy()
    dsts, srcs, at = [], [], 1
    for n in sizes:
        dsts.append(flat[at:at + n])
        srcs.append(rng.standard_normal(n).astype(dtype))
        want[at:at + n] += srcs[-1]
        at += n
    HostKernel.launches.clear()
    real, host_gpu.ops._address = host_gpu.ops._address, (lambda a: a.ctypes.data)  # host memory stands in for the device's
    try:
        host_gpu.accumulate_grads(dsts, srcs)
    finally:
        host_gpu.ops._address = real
    assert [name for name, *_ in HostKernel.launches] == ["accumulate_grads_" + ("f32" if dtype == np.float32 else "f64")]
    np.testing.assert_array_equal(flat, want)


def test_batchnorm_cu_carries_dropout_cu_mask_verbatim():
    """batchnorm.cu fuses a dropout and so needs its mask; each .cu compiles alone, so it holds a copy of
    dropout_kept, which must stay the same text as dropout.cu's (else the fused and plain layers differ)."""
    def kept(name):
        text = open(os.path.join(KERNELS_DIR, name)).read()
        return re.search(r"__device__ __forceinline__ bool dropout_kept\(.*?\n}\n", text, re.S).group(0)
    assert kept("batchnorm.cu") == kept("dropout.cu")


def test_index_arithmetic_limit_is_checked_with_a_clear_message(host_gpu):
    """The kernels split flat indices with 32-bit arithmetic: an array past INDEX_LIMIT values is a clear error."""
    with pytest.raises(ValueError, match="32-bit index"):
        host_gpu.runtime._check_index_range("im2col", col=host_gpu.runtime.INDEX_LIMIT)


@needs_cxx
@settings(max_examples=20, deadline=None)
@given(gemm_cases(), st.sampled_from([1, 3, 528]), st.booleans())
def test_host_emulated_gemm_equals_the_definition(host_gpu, case, wanted_blocks, with_bias):
    """gemm.cu (16x16 tiles in shared memory, blocks of 256 real threads) against matmul_reference; few wanted
    blocks keep k in one slice, many split it into slices of 16 whose partial products are added. A bias per
    row is added once, by the product itself or by the slices' sum."""
    a, b = case
    bias = np.random.default_rng(0).standard_normal(a.shape[-2]).astype(a.dtype) if with_bias else None
    old = host_gpu.ops.GEMM_BLOCKS_WANTED
    host_gpu.ops.GEMM_BLOCKS_WANTED = wanted_blocks
    try:
        got = host_gpu.gemm(a, b, bias)
    finally:
        host_gpu.ops.GEMM_BLOCKS_WANTED = old
    want = matmul_reference(a, b) + (0 if bias is None else bias.astype(np.float64)[:, None])
    assert got.shape == want.shape and got.dtype == a.dtype
    tol = 1e-5 if a.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.sqrt(a.shape[-1]) * 4)


@needs_cxx
def test_host_emulated_launches_are_sized_by_the_grid_stride_rule(host_gpu):
    HostKernel.launches.clear()
    host_gpu.im2col(np.zeros((2, 3, 5, 5), np.float32), 3, 3)   # col has 3*3*3*2*3*3 = 486 entries
    host_gpu.col2im(np.zeros((3, 3, 3, 2, 3, 3), np.float32), 5, 5)  # dx has 2*3*5*5 = 150 entries
    assert HostKernel.launches == [("im2col_f32", 2, 3), ("col2im_f32", 2, 3)]


@needs_cxx
def test_host_emulated_wrappers_check_their_inputs(host_gpu):
    with pytest.raises(ValueError, match=r"bias must be a float32 CuPy array of shape \(2,\)"):
        host_gpu.gemm(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32), np.ones(4, np.float32))
    with pytest.raises(TypeError, match="float16"):
        host_gpu.im2col(np.zeros((1, 1, 3, 3), np.float16), 2, 2)
    with pytest.raises(ValueError, match="4 dimensions"):
        host_gpu.max_pool2d_forward(np.zeros((3, 3), np.float32), 2, 2, 2, 2)
    with pytest.raises(ValueError, match="SH must be a positive int, got 0"):
        host_gpu.im2col(np.zeros((1, 1, 3, 3), np.float32), 2, 2, 0, 1)
    with pytest.raises(ValueError, match="m .*does not match"):
        host_gpu.adam_update(np.zeros(4, np.float32), np.zeros(4, np.float32), np.zeros(3, np.float32),
                             np.zeros(4, np.float32), 0.1, 0.9, 0.999, 1e-8, 1)
    with pytest.raises(ValueError, match="1-D C-contiguous"):
        host_gpu.sgd_update(np.zeros((4, 2), np.float32)[:, 0], np.zeros(4, np.float32), np.zeros(4, np.float32), 0.1)
    with pytest.raises(TypeError, match="float32 CuPy array"):
        host_gpu.affine_warp(np.zeros((1, 1, 2, 2), np.float64), np.zeros((1, 2, 3)))
    with pytest.raises(TypeError, match="dtype int32 is not supported"):
        host_gpu.dropout_apply(np.zeros(2, np.int32), 0.5, 1)
    # a non-contiguous input is copied, as the CPU backend does
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32).transpose(0, 1, 3, 2)
    np.testing.assert_array_equal(host_gpu.im2col(x, 2, 2), cpu.im2col(x, 2, 2))



@needs_cxx
@HOST_SETTINGS
@given(st.integers(0, 6), st.lists(st.integers(1, 5), min_size=0, max_size=2), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2 ** 31 - 1))
def test_host_emulated_sum_leading_adds_the_first_axis_in_order(host_gpu, B, rest, dtype, seed):
    """gemm_sum_slices as sum_leading: a[0] + a[1] + ... in that order, bit for bit; no sub-array gives zeros."""
    a = np.random.default_rng(seed).standard_normal([B] + rest).astype(dtype)
    got = host_gpu.sum_leading(a)
    want = np.zeros(tuple(rest), dtype)
    if B:
        want = a[0].copy()
        for b in a[1:]:
            want = want + b
    assert got.dtype == dtype and got.shape == tuple(rest)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(cpu.sum_leading(a), want, rtol=1e-5)


@needs_cxx
@HOST_SETTINGS
@given(st.integers(1, 5), st.integers(0, 40), st.sampled_from([3, 4, 8]), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2 ** 31 - 1))
def test_host_emulated_sum_rows_equals_numpy(host_gpu, R, L, threads, dtype, seed):
    """gemm.cu's sum_rows (one block per row, a tree of the threads' double sums) against float64 NumPy; block
    sizes 3, 4 and 8 give the tree odd and even rounds, and an empty row gives 0."""
    x = np.random.default_rng(seed).standard_normal((R, L)).astype(dtype)
    old = host_gpu.runtime.THREADS
    host_gpu.runtime.THREADS = threads
    try:
        got = host_gpu.sum_rows(x)
    finally:
        host_gpu.runtime.THREADS = old
    assert got.dtype == dtype and got.shape == (R,)
    np.testing.assert_allclose(got, x.astype(np.float64).sum(axis=1), rtol=1e-6 if dtype == np.float32 else 1e-13,
                               atol=1e-6 if dtype == np.float32 else 1e-13)

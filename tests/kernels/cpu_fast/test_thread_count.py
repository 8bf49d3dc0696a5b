"""The same bits on any thread count: every CPU fast-path convolution, forward and backward, on 1 and on 2 of Numba's
threads, on batches cut into several chunks (whose partial sums the weight and bias gradients add).

The chunks are cut by the batch alone (parallel.chunk_size), so the sums run in one order whatever the thread count;
each test here checks that the results are equal bit for bit (np.array_equal), not merely close.
"""
import numba
import numpy as np
import pytest

from minicnn.kernels.conv_geometry import ConvGeometry
from minicnn.kernels.cpu_fast import depthwise, direct, direct_grad, lanes
from minicnn.kernels.cpu_fast.wide import WideConv

pytestmark = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="Numba runs one thread here")


def on_threads(threads, fn):
    """fn() run with numba.set_num_threads(threads), the thread count put back after."""
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        return fn()
    finally:
        numba.set_num_threads(before)


def assert_same_bits_on_1_and_2_threads(fn):
    one, two = on_threads(1, fn), on_threads(2, fn)
    for a, b in zip(one, two):
        assert a is None and b is None or np.array_equal(a, b), "results differ between 1 and 2 threads"


@pytest.fixture
def chunk_counts(monkeypatch):
    """The chunk counts the direct convolution's kernels ran with (run_chunks' count), as a list."""
    counts = []
    for module in (direct, direct_grad, lanes):
        real = module.run_chunks
        monkeypatch.setattr(module, "run_chunks", lambda chunk, count, args, real=real: counts.append(count) or
                            real(chunk, count, args))
    return counts


@pytest.mark.parametrize("wide_registers", [False, True])
@pytest.mark.parametrize("C, H, PH", [
    (1, 28, 0),    # eip4's first layer: the wide grid; weight gradient walking x where it lies (lanes: without gx)
    (16, 26, 0),   # eip4's second: the wide grid; both gradients by the rows tiles (x where it lies)
    (10, 12, 0),   # 10x10 outputs: the lanes' tiles with 512-bit registers, else the wide grid and image_rows
    (16, 6, 0),    # 4x4 outputs: laid end to end (image_rows, unrows), or the lanes
    (16, 12, 1),   # padded: the image gradient through the chunks' tall images (unrows)
])
def test_direct_convolution_forward_and_gradients(C, H, PH, wide_registers, monkeypatch, chunk_counts, rng):
    """float32, 16 output channels, a batch of 64: several chunks for every kernel; with 512-bit registers (simulated
    where the CPU lacks them) the lanes' tiles, without them direct.py's."""
    monkeypatch.setattr(lanes, "ON_THIS_CPU", wide_registers)
    x = rng.standard_normal((64, C, H, H)).astype(np.float32)
    w = rng.standard_normal((16, C, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    gy = rng.standard_normal((64, 16, H + 2 * PH - 2, H + 2 * PH - 2)).astype(np.float32)
    need_x = C > 1

    def run():
        y = direct.conv2d_direct(np.pad(x, ((0, 0), (0, 0), (PH, PH), (PH, PH))), w, b)
        wt = direct_grad.flipped_weights(w)
        return (y,) + direct_grad.conv2d_direct_grads(x, gy, wt, 3, 3, PH, PH, need_x=need_x)

    assert_same_bits_on_1_and_2_threads(run)
    assert chunk_counts and min(chunk_counts) > 1


def test_depthwise_forward_and_gradients(rng):
    """Planes in parallel, each channel's weight gradient summed image after image on one thread."""
    x = rng.standard_normal((32, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    gy = rng.standard_normal((32, 8, 12, 12)).astype(np.float32)
    assert_same_bits_on_1_and_2_threads(
        lambda: (depthwise.conv2d_depthwise(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), w, b),)
        + depthwise.conv2d_depthwise_grads(x, gy, w, 1, 1))


def test_wide_grid_forward_and_gradients(monkeypatch, rng):
    """WideConv (4 output channels: no direct tile), its chunks on Python threads, the weight gradient's parts added in
    chunk order."""
    x = rng.standard_normal((64, 8, 12, 14)).astype(np.float32)
    w = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    gy = rng.standard_normal((64, 4, 12, 14)).astype(np.float32)
    g = ConvGeometry.of(x.shape, w.shape, (1, 1), (1, 1), (1, 1), 1, x.dtype)
    chunks = []
    real = WideConv._chunks
    monkeypatch.setattr(WideConv, "_chunks", lambda self: chunks.append(real(self)) or chunks[-1])

    def run():
        conv = WideConv(g)
        return (conv.forward(x, w, b),) + conv.backward(gy)

    assert_same_bits_on_1_and_2_threads(run)
    assert min(len(c) for c in chunks) > 1

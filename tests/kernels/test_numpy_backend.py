"""The plain-NumPy backend (kernels/numpy_backend.py) computes what the Numba kernels compute, and runs without Numba."""
import os
import subprocess
import sys

import numpy as np
import pytest

from minicnn.kernels import cpu, numpy_backend as npb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DTYPES = [np.float32, np.float64]


def close(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", [(2, 2, 2, 2, 0, 0), (3, 3, 2, 2, 1, 1), (3, 2, 1, 2, 1, 0)])
def test_pooling_equals_the_numba_kernels_with_ties_nans_and_infinities(dtype, window, rng):
    x = rng.integers(-2, 3, (2, 3, 7, 8)).astype(dtype)   # many ties
    x[0, 0, 1, 1], x[1, 2, 4, 5], x[0, 1, 0, 0] = np.nan, -np.inf, np.inf
    x[1, 0, 2:4, 2:4] = np.nan   # several NaNs in a window: the last one wins, as in PyTorch
    y, argmax = npb.max_pool2d_forward(x, *window)
    y_ref, argmax_ref = cpu.max_pool2d_forward(x, *window)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    gy = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_array_equal(npb.max_pool2d_backward(gy, argmax, 7, 8, *window),
                                  cpu.max_pool2d_backward(gy, argmax, 7, 8, *window))
    x = rng.standard_normal((2, 3, 7, 8)).astype(dtype)
    np.testing.assert_allclose(npb.avg_pool2d_forward(x, *window), cpu.avg_pool2d_forward(x, *window), **close(dtype))
    np.testing.assert_allclose(npb.avg_pool2d_backward(gy, 7, 8, *window), cpu.avg_pool2d_backward(gy, 7, 8, *window),
                               **close(dtype))


def test_max_pool_on_a_window_of_minus_infinities_points_inside_the_image():
    x = np.full((1, 1, 3, 3), -np.inf)
    y, argmax = npb.max_pool2d_forward(x, 3, 3, 1, 1, 1, 1)
    assert np.all(y == -np.inf) and np.all((argmax >= 0) & (argmax < 9))
    np.testing.assert_array_equal(argmax, cpu.max_pool2d_forward(x, 3, 3, 1, 1, 1, 1)[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_and_dropout_equal_the_numba_kernels_bit_for_bit(dtype, rng):
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    x[0, 0, 0, :2] = [0.0, np.nan]
    y = npb.relu_forward(x)
    np.testing.assert_array_equal(y, cpu.relu_forward(x))
    gy = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(npb.relu_backward(gy, y), cpu.relu_backward(gy, y))
    for p, key in ((0.1, 7), (0.5, 2 ** 64 - 1)):
        np.testing.assert_array_equal(npb.dropout_apply(x, p, key), cpu.dropout_apply(x, p, key))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu, p", [(False, 0.0), (True, 0.0), (True, 0.2)])
def test_batch_norm_equals_the_numba_kernels(dtype, relu, p, rng):
    x = rng.standard_normal((4, 3, 5, 6)).astype(dtype) + 0.5
    gamma, beta = rng.uniform(0.5, 1.5, 3).astype(dtype), rng.standard_normal(3).astype(dtype)
    stats = [(np.zeros(3, dtype), np.ones(3, dtype)) for _ in range(2)]
    out = [k.batch_norm_forward(x, gamma, beta, 1e-3, *s, 0.1, relu, p, 99) for k, s in zip((npb, cpu), stats)]
    for a, b in zip(out[0], out[1]):
        np.testing.assert_allclose(a, b, **close(dtype))
    for a, b in zip(stats[0], stats[1]):
        np.testing.assert_allclose(a, b, **close(dtype))
    gy = rng.standard_normal(x.shape).astype(dtype)
    _, mean, _, invstd = out[1]
    grads = [k.batch_norm_backward(gy, x, mean, invstd, gamma, relu, p, 99) for k in (npb, cpu)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, **close(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_equals_the_numba_kernels(dtype, rng):
    x, t = (rng.standard_normal((6, 10)) * 5).astype(dtype), rng.integers(0, 10, 6)
    for a, b in zip(npb.cross_entropy_forward(x, t, 6), cpu.cross_entropy_forward(x, t, 6)):
        np.testing.assert_allclose(a, b, **close(dtype))
    p = cpu.cross_entropy_forward(x, t)[1]
    for gy in (np.asarray(1.0, dtype), rng.standard_normal(6).astype(dtype)):
        np.testing.assert_allclose(npb.cross_entropy_backward(p, t, gy, 6), cpu.cross_entropy_backward(p, t, gy, 6),
                                   **close(dtype))


@pytest.mark.parametrize("decoupled", [False, True])
def test_optimizer_updates_equal_the_numba_kernels(decoupled, rng):
    def buffers():   # p, g, m, v (v, a mean of squares, is not negative)
        r = np.random.default_rng(3)
        p, g, m, v = (r.standard_normal(50).astype(np.float32) for _ in range(4))
        return [p, g, m, np.abs(v)]
    a, b = buffers(), buffers()
    for step in (1, 2, 3):
        npb.adam_update(*a, 1e-3, 0.9, 0.999, 1e-8, step, 0.01, decoupled)
        cpu.adam_update(*b, 1e-3, 0.9, 0.999, 1e-8, step, 0.01, decoupled)
        npb.sgd_update(a[0], a[1], a[2], 0.1, 0.9, 0.01, decoupled)
        cpu.sgd_update(b[0], b[1], b[2], 0.1, 0.9, 0.01, decoupled)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)


def test_affine_warp_equals_the_numba_kernel(rng):
    x = rng.random((3, 2, 9, 7), dtype=np.float32)
    theta = (np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (3, 1, 1))
             + rng.normal(scale=0.3, size=(3, 2, 3)).astype(np.float32))
    np.testing.assert_allclose(npb.affine_warp(x, theta), cpu.affine_warp(x, theta), atol=1e-6)


def test_training_without_numba_installed(tmp_path):
    """Numba hidden (sys.modules['numba'] = None makes every `import numba` fail): the engine picks the NumPy
    backend and trains eip4 with augmentation and fused batch norm on the committed MNIST subset."""
    code = f"""
import sys
sys.modules["numba"] = None
import numpy as np
import minicnn
from minicnn import config, optim
from minicnn.data import read_mnist_folder
from minicnn.models import AFFINE, get_model
from minicnn.training import Trainer, to_device_dataset
assert config.current().kernels == "numpy", config.current()
(xtr, ytr), (xte, yte) = read_mnist_folder({os.path.join(ROOT, "tests", "data", "mnist_small")!r})
train, test = to_device_dataset(xtr[:256], ytr[:256], "cpu"), to_device_dataset(xte[:200], yte[:200], "cpu")
minicnn.manual_seed(0)
model = get_model("eip4")
trainer = Trainer(model, optim.Adam(model.parameters(), lr=3e-3), train, test, batch_size=64, augment=AFFINE)
record = trainer.train_epoch(show_progress=False)
assert np.isfinite(record["loss"]) and 0.0 <= record["test_accuracy"] <= 1.0
print("trained", record["loss"], sorted(m for m, mod in sys.modules.items() if m.split(".")[0] == "numba" and mod is not None))
"""
    env = {k: v for k, v in os.environ.items() if k != "MINICNN_KERNELS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("trained") and out.stdout.strip().endswith("[]")

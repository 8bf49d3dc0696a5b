"""The same numbers on any thread count: the lesson's kernels, and a short training run, give the same bits under
numba.set_num_threads(1) and numba.set_num_threads(2) (what `examples/mnist.py --threads 1` and `--threads 2` set).

What makes it so: a parallel loop gives each thread whole channels, rows, images or chunks, and the partial
results are added in an order fixed by the shapes, never by the thread count or by which thread finishes first
(kernels/batchnorm.py, kernels/cpu_fast/parallel.py). BLAS stays on one thread, as in examples/mnist.py.
"""
import contextlib
import os

import numba
import numpy as np
import pytest

import minicnn
from minicnn import config, optim
from minicnn.data import read_mnist_folder
from minicnn.kernels import batchnorm, cpu
from minicnn.models import AFFINE, get_model
from minicnn.training import Trainer, to_device_dataset

SUBSET = os.path.join(os.path.dirname(__file__), "data", "mnist_small")

pytestmark = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                reason=f"Numba has {numba.config.NUMBA_NUM_THREADS} thread here "
                                       "(NUMBA_NUM_THREADS): nothing to compare one thread against")


@contextlib.contextmanager
def single_threaded_blas():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # minicnn/__init__.py set OPENBLAS_NUM_THREADS=1 unless NumPy loaded first
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def on_threads(threads, fn):
    """fn() with Numba (and the batch chunks of kernels/cpu_fast/parallel.py) on `threads` threads."""
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        with single_threaded_blas():
            return fn()
    finally:
        numba.set_num_threads(before)


def assert_same_bits(a, b, where=""):
    """Equal arrays (NaN where NaN), numbers and strings, through dicts, lists, tuples; names the first difference."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_bits(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_bits(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=f"{where}: differs between 1 and 2 threads")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} on 1 thread, {b!r} on 2"


def on_one_and_two_threads(fn):
    """fn() on one thread and on two, asserted bit-identical; fn starts from the same seed each time."""
    one, two = on_threads(1, fn), on_threads(2, fn)
    assert_same_bits(one, two)
    return one


# ---- the kernels, one by one ---------------------------------------------------------------------------------
# Shapes that every parallel loop splits between the two threads: channels, (n, c) planes, rows, values.

def batch_norm(dtype, relu, p):
    def run():
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((19, 8, 61, 57)) * 2 + 1).astype(dtype)   # N = 19: four-image passes and single
        assert x.size >= batchnorm.PARALLEL_VALUES   # smaller passes run on the calling thread alone
        gy = rng.standard_normal(x.shape).astype(dtype)
        gamma, beta = rng.uniform(0.5, 1.5, 8).astype(dtype), rng.standard_normal(8).astype(dtype)
        rm, rv = np.zeros(8, dtype), np.ones(8, dtype)
        y, mean, var, invstd = cpu.batch_norm_forward(x, gamma, beta, 1e-5, rm, rv, 0.1, relu, p, 1234)
        grads = cpu.batch_norm_backward(gy, x, mean, invstd, gamma, relu, p, 1234)
        return y, mean, var, invstd, rm, rv, grads
    return run


def relu():
    x = np.random.default_rng(1).standard_normal(100_003).astype(np.float32)
    gy = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    y = cpu.relu_forward(x)
    return y, cpu.relu_backward(gy, y)


def dropout():
    x = np.random.default_rng(3).standard_normal((64, 16, 13, 13)).astype(np.float32)
    return cpu.dropout_apply(x, 0.3, 2**63 + 5), cpu.dropout_mask((1001,), 0.1, 7)


def cross_entropy():
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((301, 10)).astype(np.float32) * 3, rng.integers(0, 10, 301)
    losses, p, mean = cpu.cross_entropy_forward(x, t, divisor=301)
    return losses, p, mean, cpu.cross_entropy_backward(p, t, np.float32(1.0), 301)


def optimizers():
    rng = np.random.default_rng(5)
    p, g = rng.standard_normal(10_007).astype(np.float32), rng.standard_normal(10_007).astype(np.float32)
    m, v, buf = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    pa, ps = p.copy(), p.copy()
    for step in (1, 2, 3):
        cpu.adam_update(pa, g, m, v, 1e-3, 0.9, 0.999, 1e-8, step, weight_decay=1e-4)
        cpu.sgd_update(ps, g, buf, 0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    return pa, m, v, ps, buf


def im2col_col2im():
    x = np.random.default_rng(6).standard_normal((9, 5, 17, 15)).astype(np.float32)
    col = cpu.im2col(x, 3, 3, 2, 1, 1, 2, 1, 2)
    return col, cpu.col2im(col, 17, 15, 2, 1, 1, 2, 1, 2)


def affine_warp():
    rng = np.random.default_rng(7)
    x = rng.random((33, 2, 28, 28), dtype=np.float32)
    a = rng.uniform(-0.3, 0.3, 33)
    theta = np.stack([np.stack([np.cos(a), -np.sin(a), rng.uniform(-3, 3, 33)], 1),
                      np.stack([np.sin(a), np.cos(a), rng.uniform(-3, 3, 33)], 1)], 1).astype(np.float32)
    return cpu.affine_warp(x, theta)


KERNELS = {
    **{f"batch_norm-{np.dtype(d).name}-relu{int(r)}-p{p}": batch_norm(d, r, p)
       for d in (np.float32, np.float64) for r in (False, True) for p in (0.0, 0.2)},
    "relu": relu, "dropout": dropout, "cross_entropy": cross_entropy, "optimizers": optimizers,
    "im2col_col2im": im2col_col2im, "affine_warp": affine_warp,
}


@pytest.mark.parametrize("name", KERNELS)
def test_each_lesson_kernel_gives_the_same_bits_on_one_and_two_threads(name):
    on_one_and_two_threads(KERNELS[name])


# ---- end to end: a short training run ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    """384 training digits (3 batches of 128) and 200 test digits of the committed MNIST subset."""
    (xtr, ytr), (xte, yte) = read_mnist_folder(SUBSET)
    return to_device_dataset(xtr[:384], ytr[:384], "cpu"), to_device_dataset(xte[:200], yte[:200], "cpu")


def training_run(preset, digits):
    """One epoch of 3 batches of 128 from seed 0 (compact and tiny with the random affine augmentation of their
    recipes): the weights, batch-norm statistics, Adam's moments and the epoch's losses."""
    def run():
        minicnn.manual_seed(0)
        model = get_model(preset)
        opt = optim.Adam(model.parameters(), lr=0.003)
        trainer = Trainer(model, opt, *digits, batch_size=128, seed=0, augment=None if preset == "eip4" else AFFINE)
        trainer.train_epoch(show_progress=False)
        record = {k: v for k, v in trainer.history[-1].items() if k != "seconds"}
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "record": record}
    return run


@pytest.mark.parametrize("preset", ["eip4", "compact", "tiny"])
def test_training_writes_the_same_weights_on_one_and_two_threads(preset, digits):
    """What `examples/mnist.py --threads 1` and `--threads 2` save after the same steps: bit-identical."""
    on_one_and_two_threads(training_run(preset, digits))


@pytest.mark.parametrize("preset", ["eip4", "compact", "tiny"])
def test_the_lesson_path_trains_to_the_same_bits_on_one_and_two_threads(preset, digits):
    """Every convolution as im2col + GEMM + col2im (config conv="im2col"): batch norm, ReLU, dropout, pooling,
    cross-entropy and Adam on the lesson's kernels alone."""
    with config.using(conv="im2col"):
        on_one_and_two_threads(training_run(preset, digits))

"""Tests of the affine-warp kernel (against its NumPy reference and exact cases) and of random_affine."""
import numpy as np
import pytest

from minicnn._kernels_loader import load_kernels

load_kernels()  # makes `minicnn.kernels` importable from a plain checkout

from minicnn.kernels.affine import affine_warp  # noqa: E402
from minicnn.kernels.numpy_backend import affine_warp as affine_warp_reference  # noqa: E402
from minicnn.data.augment import affine_matrices, random_affine  # noqa: E402

IDENTITY = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)


def images(n=3, c=2, h=9, w=7, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


def test_kernel_matches_reference_for_random_matrices():
    x = images(n=8)
    rng = np.random.default_rng(1)
    theta = np.tile(IDENTITY, (8, 1, 1)) + rng.normal(scale=0.3, size=(8, 2, 3)).astype(np.float32)
    theta[:, :, 2] += rng.uniform(-3, 3, size=(8, 2)).astype(np.float32)
    out = affine_warp(x, theta)
    ref = affine_warp_reference(x, theta)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert np.count_nonzero(out == 0) < out.size  # not all warped out of the picture


def test_identity_gives_the_input_back():
    x = images()
    np.testing.assert_array_equal(affine_warp(x, np.tile(IDENTITY, (3, 1, 1))), x)


def test_integer_translation_shifts_pixels_exactly():
    x = images(n=2)
    dx, dy = 2, 3
    theta = np.tile(np.array([[1, 0, -dx], [0, 1, -dy]], dtype=np.float32), (2, 1, 1))
    out = affine_warp(x, theta)
    np.testing.assert_array_equal(out[:, :, dy:, dx:], x[:, :, :-dy, :-dx])
    assert not out[:, :, :dy, :].any() and not out[:, :, :, :dx].any()  # zeros where nothing maps


def test_half_pixel_shift_averages_neighbours():
    x = images(n=1, c=1)
    theta = np.array([[[1, 0, 0.5], [0, 1, 0]]], dtype=np.float32)
    out = affine_warp(x, theta)
    np.testing.assert_allclose(out[0, 0, :, :-1], (x[0, 0, :, :-1] + x[0, 0, :, 1:]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[0, 0, :, -1], x[0, 0, :, -1] / 2, rtol=1e-6)  # right neighbour is outside


def test_kernel_rejects_bad_inputs():
    with pytest.raises(TypeError, match="float32"):
        affine_warp(images().astype(np.float64), np.tile(IDENTITY, (3, 1, 1)))
    with pytest.raises(ValueError, match=r"\(3, 2, 3\)"):
        affine_warp(images(), np.tile(IDENTITY, (2, 1, 1)))


def test_rotation_by_90_degrees_about_the_centre():
    x = images(n=1, c=1, h=5, w=5)
    theta = affine_matrices([90.0], [1.0], [0.0], [0.0], 5, 5)
    # rows point down, so +90 degrees turns the picture clockwise
    np.testing.assert_allclose(affine_warp(x, theta)[0, 0], np.rot90(x[0, 0], k=-1), atol=1e-5)


def test_random_affine_without_change_is_identity_and_seeded():
    x = images(n=4)
    np.testing.assert_array_equal(random_affine(x, np.random.default_rng(0), degrees=0, translate=0, scale=None), x)
    a = random_affine(x, np.random.default_rng(5))
    b = random_affine(x, np.random.default_rng(5))
    c = random_affine(x, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and a.dtype == np.float32
    assert not np.array_equal(a, c) and not np.array_equal(a, x)


def test_random_affine_pure_translation_moves_mass_by_the_drawn_shift():
    x = np.zeros((64, 1, 28, 28), dtype=np.float32)
    x[:, :, 12:16, 12:16] = 1.0
    out = random_affine(x, np.random.default_rng(0), degrees=0, translate=0.1, scale=None)
    rows = np.arange(28)[:, None]
    centre_row = (out[:, 0] * rows).sum(axis=(1, 2)) / out[:, 0].sum(axis=(1, 2))
    assert np.all(np.abs(centre_row - 13.5) <= 2.8 + 1e-4)  # |shift| <= 0.1 * 28 rows
    assert np.ptp(centre_row) > 1.0  # different images get different shifts
    np.testing.assert_allclose(out.sum(axis=(1, 2, 3)), 16.0, rtol=1e-4)  # the square stays inside


def test_random_affine_checks_arguments():
    x = images()
    with pytest.raises(TypeError, match="float32"):
        random_affine(x.astype(np.float64), np.random.default_rng(0))
    with pytest.raises(ValueError, match="scale"):
        random_affine(x, np.random.default_rng(0), scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="translate"):
        random_affine(x, np.random.default_rng(0), translate=2.0)


@pytest.mark.gpu
def test_gpu_random_affine_matches_cpu():
    from minicnn.backend import gpu_available, gpu_unavailable_reason
    if not gpu_available():
        pytest.skip(gpu_unavailable_reason())
    import cupy as cp
    x = images(n=6)
    cpu = random_affine(x, np.random.default_rng(3))
    gpu = random_affine(cp.asarray(x), np.random.default_rng(3))
    assert isinstance(gpu, cp.ndarray) and gpu.dtype == cp.float32
    np.testing.assert_allclose(cp.asnumpy(gpu), cpu, atol=1e-5)

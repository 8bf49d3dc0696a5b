"""Backward without columns (kernels/conv_direct_grad.py) against the definition: the plain loops, the fast path on
rows (the weight gradient's register tile, the image gradient on conv_direct's tile), and the engine's use of them.

The weight tile adds 8 output channels at a time and walks rows in blocks of 1,024 positions, so the shapes drawn
here include channel counts that are not multiples of 8 (the last block overlaps, and must not add twice) and
batches longer than one block; unpadded images of MIN_WALK positions or more it walks one by one, where x lies.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn.functional as F
from minicnn.kernels.cpu_fast.direct_grad import (BP, CB, MIN_WALK, conv2d_direct_grads, conv2d_image_grad_plain,
                                              conv2d_weight_grad_plain, flipped_weights, grad_rows, image_grad_fits,
                                              tile_source, weight_grad_fits)
from conv_cases import RTOL_F32, ATOL_F32, RTOL_F64, ATOL_F64, assert_matches_the_definition, reference_grads, run_conv

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def grad_cases(draw, min_c=1, min_oc=1, max_kw=4):
    """x (N, C, H, W) unpadded, w (OC, C, KH, KW), padding (PH, PW), gy of the matching shape."""
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, max_kw))
    PH, PW = draw(st.integers(0, KH - 1)), draw(st.integers(0, KW - 1))
    H, W = draw(st.integers(max(1, KH - 2 * PH), 11)), draw(st.integers(max(1, KW - 2 * PW), 11))
    return dict(N=draw(st.integers(1, 3)), C=draw(st.integers(min_c, min_c + 4)), OC=draw(st.integers(min_oc, 2 * CB + 3)),
                H=H, W=W, KH=KH, KW=KW, PH=PH, PW=PW, seed=draw(st.integers(0, 2 ** 31 - 1)))


def arrays(case, dtype):
    rng = np.random.default_rng(case["seed"])
    N, C, H, W, OC, KH, KW = (case[k] for k in ("N", "C", "H", "W", "OC", "KH", "KW"))
    OH, OW = H + 2 * case["PH"] - KH + 1, W + 2 * case["PW"] - KW + 1
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((OC, C, KH, KW)).astype(dtype)
    gy = rng.standard_normal((N, OC, OH, OW)).astype(dtype)
    return x, w, gy


def definition(x, w, gy, case):
    return reference_grads(x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64), stride=(1, 1),
                           padding=(case["PH"], case["PW"]), dilation=(1, 1), groups=1)


@SETTINGS
@given(grad_cases())
def test_plain_loops_match_the_definition(case):
    x, w, gy = arrays(case, np.float64)
    rgx, rgw, _ = definition(x, w, gy, case)
    PH, PW = case["PH"], case["PW"]
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    gw = np.empty_like(w)
    conv2d_weight_grad_plain(xp, gy, gw)
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F64, atol=10 * ATOL_F64)
    gxp = np.empty_like(xp)
    conv2d_image_grad_plain(gy, w, gxp)
    np.testing.assert_allclose(gxp[:, :, PH:PH + x.shape[2], PW:PW + x.shape[3]], rgx, rtol=RTOL_F64, atol=ATOL_F64)


@pytest.mark.parametrize("dtype, rtol, atol", [(np.float64, RTOL_F64, ATOL_F64), (np.float32, RTOL_F32, ATOL_F32)])
@SETTINGS
@given(case=grad_cases(min_c=CB, min_oc=CB, max_kw=3))
def test_fast_path_matches_the_definition(dtype, rtol, atol, case):
    """C, OC >= 8: both gradients on the tiles where they fit (KW = 3 for the weight's), the plain loops elsewhere."""
    x, w, gy = arrays(case, dtype)
    gx, gw, gb = conv2d_direct_grads(x, gy, flipped_weights(w), case["KH"], case["KW"], case["PH"], case["PW"])
    rgx, rgw, rgb = definition(x, w, gy, case)
    assert gx.dtype == gw.dtype == dtype
    np.testing.assert_allclose(gx, rgx, rtol=rtol, atol=atol)
    np.testing.assert_allclose(gw, rgw, rtol=rtol, atol=10 * atol)
    np.testing.assert_allclose(gb, rgb, rtol=rtol, atol=10 * atol)


@pytest.mark.parametrize("OC", [8, 10, 13, 16])
def test_weight_tile_adds_an_overlapping_channel_block_once_across_several_row_blocks(OC, rng):
    """OC = 10 or 13: the second block of 8 channels starts at OC - 8 and must skip the rows already added. Padded
    24x24 images are walked as rows, 4*26*26 positions: three blocks of BP = 1024 (the last one partial)."""
    assert weight_grad_fits(OC, 3)
    x = rng.standard_normal((4, 9, 24, 24)).astype(np.float32)
    w = rng.standard_normal((OC, 9, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((4, OC, 24, 24)).astype(np.float32)
    assert 2 * BP < 4 * 26 * 26 < 3 * BP
    _, gw, _ = conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, 1, 1, need_x=False)
    rgw = reference_grads(x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64), (1, 1), (1, 1), (1, 1), 1)[1]
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F32, atol=1e-3)


@pytest.mark.parametrize("N, C, OC, H, W, KH", [(3, 8, 13, 20, 18, 3), (1, 9, 8, 26, 26, 3), (2, 8, 16, 17, 30, 2),
                                                 (2, 8, 10, 12, 40, 1)])
def test_weight_tile_walks_unpadded_images_where_they_lie(N, C, OC, H, W, KH, rng):
    """Images of MIN_WALK positions or more, unpadded: the tile walks x image by image, each walk rounded up to whole
    vectors (the last image's not); both gradients still match the definition."""
    assert (H - KH + 1) * W - 2 >= MIN_WALK
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((OC, C, KH, 3)).astype(np.float32)
    gy = rng.standard_normal((N, OC, H - KH + 1, W - 2)).astype(np.float32)
    gx, gw, gb = conv2d_direct_grads(x, gy, flipped_weights(w), KH, 3, 0, 0)
    rgx, rgw, rgb = reference_grads(x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64), (1, 1), (0, 0),
                                    (1, 1), 1)
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F32, atol=1e-3)
    np.testing.assert_allclose(gx, rgx, rtol=RTOL_F32, atol=ATOL_F32)
    np.testing.assert_allclose(gb, rgb, rtol=RTOL_F32, atol=1e-3)


def test_the_last_images_walk_stays_inside_x(rng):
    """x a view whose memory is followed by NaNs: rounding the last image's walk up to whole vectors would read them."""
    buf = rng.standard_normal((3, 8, 26, 26)).astype(np.float32)
    buf[2] = np.nan
    x = buf[:2]
    w = rng.standard_normal((10, 8, 3, 3)).astype(np.float32)
    _, gw, _ = conv2d_direct_grads(x, rng.standard_normal((2, 10, 24, 24)).astype(np.float32), flipped_weights(w), 3, 3,
                                   0, 0, need_x=False)
    assert np.isfinite(gw).all()


def test_grad_rows_puts_gy_on_the_images_grid_and_sums_the_bias_gradient(rng):
    gy = rng.standard_normal((2, 3, 4, 5))
    KH, HP, WP = 3, 6, 7
    gr, gb = grad_rows(gy, KH, HP, WP)
    assert gr.shape == (3, (2 * HP + 2 * KH) * WP)
    grid = gr[:, KH * WP:(KH + 2 * HP) * WP].reshape(3, 2, HP, WP)
    np.testing.assert_array_equal(grid[:, :, :4, :5], gy.transpose(1, 0, 2, 3))
    assert not grid[:, :, 4:].any() and not grid[:, :, :, 5:].any()
    assert not gr[:, :KH * WP].any() and not gr[:, (KH + 2 * HP) * WP:].any()
    np.testing.assert_allclose(gb, gy.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_only_what_is_asked_is_computed(rng):
    x, w = rng.standard_normal((2, 8, 7, 7)), rng.standard_normal((8, 8, 3, 3))
    gy = rng.standard_normal((2, 8, 5, 5))
    gx, gw, gb = conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, 0, 0, need_x=False, need_w=True)
    assert gx is None and gw is not None and gb is not None
    gx, gw, gb = conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, 0, 0, need_x=True, need_w=False)
    assert gx is not None and gw is None


def test_a_nan_in_the_image_reaches_the_weight_gradient(rng):
    """The rows multiply zeros of gy by image values that no output reads; a NaN there must still show, as in the sum."""
    x, w = rng.standard_normal((1, 8, 6, 6)), rng.standard_normal((8, 8, 3, 3))
    x[0, 0, 2, 2] = np.nan
    _, gw, _ = conv2d_direct_grads(x, rng.standard_normal((1, 8, 4, 4)), flipped_weights(w), 3, 3, 0, 0)
    assert np.isnan(gw[:, 0]).all()


def test_fits():
    assert weight_grad_fits(CB, 3) and not weight_grad_fits(CB - 1, 3) and not weight_grad_fits(CB, 5)
    assert image_grad_fits(CB, 6, 6, 3, 3, 0, 0) and not image_grad_fits(CB - 1, 6, 6, 3, 3, 0, 0)


def test_the_tile_file_is_what_the_generator_writes():
    """kernels/conv_grad_tile.py is generated: regenerate it with `python -m minicnn.kernels.conv_direct_grad > kernels/conv_grad_tile.py`."""
    import minicnn.kernels.cpu_fast.generated.grad_tile as tile
    with open(tile.__file__) as f:
        assert f.read() == tile_source(), "kernels/conv_grad_tile.py is out of date with conv_direct_grad.tile_source()"


def test_gradients_are_the_same_bits_on_every_call(rng):
    """Fixed order everywhere (the tile's lanes included): the same inputs give the same bits."""
    x, w = rng.standard_normal((4, 16, 12, 12)).astype(np.float32), rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((4, 16, 10, 10)).astype(np.float32)
    first = conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, 0, 0)
    for _ in range(3):
        for a, b in zip(first, conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, 0, 0)):
            np.testing.assert_array_equal(a, b)


# ---- the engine ---------------------------------------------------------------------------------------------
def cpu_kernels_or_skip():
    from minicnn.backend import kernels_for
    from minicnn.kernels import cpu
    if kernels_for(np.zeros(1)) is not cpu:
        pytest.skip("MINICNN_KERNELS=numpy: the plain-NumPy backend has no direct convolution")
    return cpu


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("C, OC, padding, direct", [
    (9, 10, 0, (True, True)),          # both gradients without columns
    (9, 10, (2, 1), (True, True)),     # padding: the image gradient drops it
    (3, 10, 1, (False, True)),         # C < 8: the image gradient through the columns, the weight's directly
    (9, 5, 0, (True, False)),          # OC < 8: the weight gradient through the columns
])
def test_engine_backward_without_columns_matches_the_definition(dtype, C, OC, padding, direct, monkeypatch, rng):
    cpu = cpu_kernels_or_skip()
    asked = []
    real = cpu.conv2d_direct_grads
    monkeypatch.setattr(cpu, "conv2d_direct_grads", lambda *a, **k: asked.append(a[7:9]) or real(*a, **k))
    x = rng.standard_normal((5, C, 9, 8)).astype(dtype)
    w = rng.standard_normal((OC, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(OC).astype(dtype)
    y, gy, gx, gw, gb = run_conv(x, w, b, dict(padding=padding))
    assert set(asked) == ({direct} if any(direct) else set())
    full = dict(stride=(1, 1), padding=(padding, padding) if isinstance(padding, int) else padding,
                dilation=(1, 1), groups=1)
    rtol, atol = (RTOL_F64, ATOL_F64) if dtype == np.float64 else (RTOL_F32, ATOL_F32)
    assert_matches_the_definition(x, w, b, y, gy, gx, gw, gb, full, rtol, atol)


def test_engine_backward_of_the_first_layer_computes_no_image_gradient(monkeypatch, rng):
    """An input that needs no gradient (the images): only the weight's and the bias's are computed."""
    cpu = cpu_kernels_or_skip()
    asked = []
    real = cpu.conv2d_direct_grads
    monkeypatch.setattr(cpu, "conv2d_direct_grads", lambda *a, **k: asked.append(a[7:9]) or real(*a, **k))
    from minicnn import Tensor
    x = rng.standard_normal((2, 1, 8, 8))
    wt = Tensor(rng.standard_normal((8, 1, 3, 3)), requires_grad=True)
    F.conv2d(Tensor(x), wt).sum().backward()
    assert asked and all(a == (False, True) for a in asked)
    np.testing.assert_allclose(wt.grad, reference_grads(x, wt.data, np.ones((2, 8, 6, 6)), (1, 1), (0, 0), (1, 1), 1)[1],
                               rtol=RTOL_F64, atol=10 * ATOL_F64)



@pytest.mark.parametrize("C, PH, PW", [(1, 0, 0), (2, 1, 0), (5, 0, 2), (16, 1, 1)])
def test_weight_gradient_with_the_output_channels_as_lanes_matches_the_definition(C, PH, PW, monkeypatch, rng):
    """float32, OC = 16 and 3x3: conv2d_direct_grads takes conv_lanes' weight tile (2 input channels per pass, the last
    pass overlapping when C is odd, 1 when C = 1)."""
    from minicnn.kernels.cpu_fast import direct_grad as conv_direct_grad, lanes as conv_lanes
    used = []
    real = conv_lanes.conv2d_weight_grad_lanes
    monkeypatch.setattr(conv_direct_grad, "conv2d_weight_grad_lanes", lambda *a: used.append(1) or real(*a))
    case = dict(N=3, C=C, H=7, W=9, OC=16, KH=3, KW=3, PH=PH, PW=PW, seed=int(rng.integers(2 ** 31)))
    x, w, gy = arrays(case, np.float32)
    rtol, atol = RTOL_F32, ATOL_F32
    _, gw, gb = conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, PH, PW, need_x=False)
    assert used == [1]
    _, rgw, rgb = definition(x, w, gy, case)
    np.testing.assert_allclose(gw, rgw, rtol=rtol, atol=10 * atol)
    np.testing.assert_allclose(gb, rgb, rtol=rtol, atol=10 * atol)


@pytest.mark.parametrize("per", [1, 2])
@pytest.mark.parametrize("dtype, OC, H, PH", [
    (np.float64, 10, 12, 0),   # forward on the wide grid, weight gradient by the rows tile
    (np.float64, 8, 4, 1),     # forward laid end to end (image_rows: 22 positions per padded image)
    (np.float32, 16, 10, 0),   # forward and weight gradient with the output channels as lanes
    (np.float32, 16, 8, 1),    # the same on padded images
    (np.float32, 16, 26, 0),   # forward on the wide grid, weight gradient by the rows tile (little garbage)
])
def test_chunks_on_numbas_threads_cover_the_batch_once(per, dtype, OC, H, PH, monkeypatch, rng):
    """Chunks of 1 or 2 images (5 images: the last chunk shorter), whatever the thread count: every image computed
    once, the chunks' weight and bias gradients all added. Forward and backward against the definition (PH = 0: the
    image gradient written by the tile straight into gx, image by image; PH = 1: the chunk's tall image, unrows)."""
    from minicnn.kernels.cpu_fast import direct as conv_direct, direct_grad as conv_direct_grad
    monkeypatch.setattr(conv_direct, "images_per_chunk", lambda N, bytes_per_image: per)
    monkeypatch.setattr(conv_direct_grad, "images_per_chunk", lambda N, bytes_per_image: per)
    case = dict(N=5, C=9, OC=OC, H=H, W=H, KH=3, KW=3, PH=PH, PW=PH, seed=int(rng.integers(2 ** 31)))
    x, w, gy = arrays(case, dtype)
    b = rng.standard_normal(OC).astype(dtype)
    rtol, atol = (RTOL_F64, ATOL_F64) if dtype == np.float64 else (RTOL_F32, ATOL_F32)
    y = conv_direct.conv2d_direct(np.pad(x, ((0, 0), (0, 0), (PH, PH), (PH, PH))), w, b)
    np.testing.assert_allclose(y, F.conv2d_reference(x, w, b, padding=(PH, PH)), rtol=rtol, atol=atol)
    gx, gw, gb = conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, PH, PH)
    rgx, rgw, rgb = definition(x, w, gy, case)
    np.testing.assert_allclose(gx, rgx, rtol=rtol, atol=atol)
    np.testing.assert_allclose(gw, rgw, rtol=rtol, atol=10 * atol)
    np.testing.assert_allclose(gb, rgb, rtol=rtol, atol=10 * atol)


@pytest.mark.parametrize("H, lanes", [(26, False), (12, False), (10, True), (8, True)])
def test_weight_gradient_beside_the_image_gradient_takes_the_lanes_only_where_rows_waste_a_third(H, lanes, monkeypatch,
                                                                                               rng):
    """Both gradients asked: the rows tile reuses the image gradient's rows, garbage included (26x26: 15% of them,
    12x12: 31%), the lanes tile where more than a third is garbage (10x10: 36%, 8x8: 44%). Right either way."""
    from minicnn.kernels.cpu_fast import direct_grad as conv_direct_grad, lanes as conv_lanes
    used = []
    real = conv_lanes.conv2d_weight_grad_lanes
    monkeypatch.setattr(conv_direct_grad, "conv2d_weight_grad_lanes", lambda *a: used.append(1) or real(*a))
    case = dict(N=2, C=16, H=H, W=H, OC=16, KH=3, KW=3, PH=0, PW=0, seed=int(rng.integers(2 ** 31)))
    x, w, gy = arrays(case, np.float32)
    gx, gw, gb = conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, 0, 0)
    assert used == ([1] if lanes else [])
    rgx, rgw, rgb = definition(x, w, gy, case)
    np.testing.assert_allclose(gx, rgx, rtol=RTOL_F32, atol=ATOL_F32)
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F32, atol=10 * ATOL_F32)
    np.testing.assert_allclose(gb, rgb, rtol=RTOL_F32, atol=10 * ATOL_F32)

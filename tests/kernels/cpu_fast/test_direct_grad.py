"""Backward without columns (kernels/cpu_fast/direct_grad.py) against the definition: the plain loops, the fast path on
rows (every weight tile, the image gradient on every forward tile of direct.py), the lanes' weight tile, and the
engine's use of them.

A weight tile adds CB output channels at a time and walks rows in blocks of 1,024 positions, so the shapes drawn
here include channel counts that are not multiples of CB (the last block overlaps, and must not add twice) and
batches longer than one block; unpadded images of MIN_WALK positions or more it walks one by one, where x lies.
"""
import functools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn.functional as F
from minicnn import Tensor, config
from minicnn.kernels.cpu_fast import direct, direct_grad, lanes, plan
from minicnn.kernels.cpu_fast.direct_grad import (BP, MIN_OC, MIN_WALK, TILE_CHANNELS, conv2d_direct_grads,
                                                  conv2d_image_grad_plain, conv2d_weight_grad_plain, flipped_weights,
                                                  grad_rows, image_grad_fits, weight_grad_fits)
from conv_cases import RTOL_F32, ATOL_F32, RTOL_F64, ATOL_F64, assert_matches_the_definition, reference_grads, run_conv

# The tiles of each CPU: (direct.py's forward tile for the image gradient, the weight tile), by output channels.
TILES = list(zip(direct.TILE_CHANNELS, TILE_CHANNELS))   # [(8, 8) for AVX-512, (3, 4) for AVX2]
SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def grad_cases(draw, min_c=1, min_oc=1, max_kw=4):
    """x (N, C, H, W) unpadded, w (OC, C, KH, KW), padding (PH, PW), gy of the matching shape."""
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, max_kw))
    PH, PW = draw(st.integers(0, KH - 1)), draw(st.integers(0, KW - 1))
    H, W = draw(st.integers(max(1, KH - 2 * PH), 11)), draw(st.integers(max(1, KW - 2 * PW), 11))
    return dict(N=draw(st.integers(1, 3)), C=draw(st.integers(min_c, min_c + 4)),
                OC=draw(st.integers(min_oc, 2 * MIN_OC + 3)),
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


@pytest.mark.parametrize("tiles", TILES)
@pytest.mark.parametrize("dtype, rtol, atol", [(np.float64, RTOL_F64, ATOL_F64), (np.float32, RTOL_F32, ATOL_F32)])
@settings(max_examples=15, deadline=None)
@given(case=grad_cases(min_c=MIN_OC, min_oc=MIN_OC, max_kw=3))
def test_fast_path_matches_the_definition(tiles, dtype, rtol, atol, case):
    """C, OC >= 8: both gradients on each CPU's tiles where they fit (KW = 3 for the weight's), the plain loops
    elsewhere."""
    x, w, gy = arrays(case, dtype)
    gx, gw, gb = conv2d_direct_grads(x, gy, flipped_weights(w), case["KH"], case["KW"], case["PH"], case["PW"],
                                     cb=tiles[0], weight_cb=tiles[1])
    rgx, rgw, rgb = definition(x, w, gy, case)
    assert gx.dtype == gw.dtype == dtype
    np.testing.assert_allclose(gx, rgx, rtol=rtol, atol=atol)
    np.testing.assert_allclose(gw, rgw, rtol=rtol, atol=10 * atol)
    np.testing.assert_allclose(gb, rgb, rtol=rtol, atol=10 * atol)


@pytest.mark.parametrize("weight_cb", TILE_CHANNELS)
@pytest.mark.parametrize("OC", [8, 10, 13, 16])
def test_weight_tile_adds_an_overlapping_channel_block_once_across_several_row_blocks(OC, weight_cb, rng):
    """OC not a multiple of the tile's channels: the last block starts at OC - CB and must skip the rows already added.
    Padded 24x24 images are walked as rows, 4*26*26 positions: three blocks of BP = 1024 (the last one partial)."""
    assert weight_grad_fits(OC, 3)
    x = rng.standard_normal((4, 9, 24, 24)).astype(np.float32)
    w = rng.standard_normal((OC, 9, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((4, OC, 24, 24)).astype(np.float32)
    assert 2 * BP < 4 * 26 * 26 < 3 * BP
    _, gw, _ = conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, 1, 1, need_x=False, weight_cb=weight_cb)
    rgw = reference_grads(x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64), (1, 1), (1, 1), (1, 1), 1)[1]
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F32, atol=1e-3)


@pytest.mark.parametrize("tiles", TILES)
@pytest.mark.parametrize("N, C, OC, H, W, KH", [(3, 8, 13, 20, 18, 3), (1, 9, 8, 26, 26, 3), (2, 8, 16, 17, 30, 2),
                                                 (2, 8, 10, 12, 40, 1)])
def test_weight_tile_walks_unpadded_images_where_they_lie(N, C, OC, H, W, KH, tiles, rng):
    """Images of MIN_WALK positions or more, unpadded: the tile walks x image by image, each walk rounded up to whole
    vectors (the last image's not); both gradients still match the definition."""
    assert (H - KH + 1) * W - 2 >= MIN_WALK
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((OC, C, KH, 3)).astype(np.float32)
    gy = rng.standard_normal((N, OC, H - KH + 1, W - 2)).astype(np.float32)
    gx, gw, gb = conv2d_direct_grads(x, gy, flipped_weights(w), KH, 3, 0, 0, cb=tiles[0], weight_cb=tiles[1])
    rgx, rgw, rgb = reference_grads(x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64), (1, 1), (0, 0),
                                    (1, 1), 1)
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F32, atol=1e-3)
    np.testing.assert_allclose(gx, rgx, rtol=RTOL_F32, atol=ATOL_F32)
    np.testing.assert_allclose(gb, rgb, rtol=RTOL_F32, atol=1e-3)


@pytest.mark.parametrize("C, H, PH, cb", [(2, 9, 0, None), (9, 3, 0, None), (5, 4, 1, 8)])
def test_image_gradient_takes_the_plain_loop_where_no_tile_fits(C, H, PH, cb, rng):
    """Fewer input channels than the tile has outputs (C = 2 for every tile, C = 5 for the 8-channel one), or images
    too small for a tile even laid out as rows (3x3): the image gradient runs the plain loop, the weight gradient
    still its tile."""
    x = rng.standard_normal((3, C, H, H))
    w = rng.standard_normal((10, C, 3, 3))
    gy = rng.standard_normal((3, 10, H + 2 * PH - 2, H + 2 * PH - 2))
    assert not direct.tile_fits(C, H + 2 * PH, H + 2 * PH, 3, 3, cb)
    gx, gw, gb = conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, PH, PH, cb=cb)
    rgx, rgw, rgb = reference_grads(x, w, gy, (1, 1), (PH, PH), (1, 1), 1)
    np.testing.assert_allclose(gx, rgx, rtol=RTOL_F64, atol=ATOL_F64)
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F64, atol=10 * ATOL_F64)
    np.testing.assert_allclose(gb, rgb, rtol=RTOL_F64, atol=10 * ATOL_F64)


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
    """The same layers on every CPU: MIN_OC channels (and a 3-wide kernel for the weight tile)."""
    assert weight_grad_fits(MIN_OC, 3) and not weight_grad_fits(MIN_OC - 1, 3) and not weight_grad_fits(MIN_OC, 5)
    assert image_grad_fits(MIN_OC, 6, 6, 3, 3, 0, 0) and not image_grad_fits(MIN_OC - 1, 6, 6, 3, 3, 0, 0)
    assert all(cb <= MIN_OC for cb in TILE_CHANNELS)


def test_gradients_are_the_same_bits_on_every_call(rng):
    """Fixed order everywhere (the tile's lanes included): the same inputs give the same bits."""
    x, w = rng.standard_normal((4, 16, 12, 12)).astype(np.float32), rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((4, 16, 10, 10)).astype(np.float32)
    first = conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, 0, 0)
    for _ in range(3):
        for a, b in zip(first, conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, 0, 0)):
            np.testing.assert_array_equal(a, b)


# ---- the engine ---------------------------------------------------------------------------------------------
def spy(monkeypatch, module, name):
    """Record the positional arguments of every call to module.name (still made) in the returned list."""
    calls, real = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("C, OC, padding, direct_grads, algorithm", [
    (9, 10, 0, (True, True), "direct"),            # both gradients without columns
    (9, 10, (2, 1), (True, True), "direct"),       # padding: the image gradient drops it
    (3, 10, 1, (False, True), "direct"),           # C < 8: the image gradient through the columns, the weight's directly
    (9, 5, 0, (True, False), "wide"),              # OC < 8: forward and weight gradient through the wide grid's columns
])
def test_engine_backward_without_columns_matches_the_definition(dtype, C, OC, padding, direct_grads, algorithm,
                                                                monkeypatch, rng):
    asked = spy(monkeypatch, plan, "conv2d_direct_grads")
    x = rng.standard_normal((5, C, 9, 8)).astype(dtype)
    w = rng.standard_normal((OC, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(OC).astype(dtype)
    with config.using(kernels="numba", conv="auto"):
        assert F.conv2d_algorithm(x.shape, w.shape, padding=padding, dtype=dtype) == algorithm
        y, gy, gx, gw, gb = run_conv(x, w, b, dict(padding=padding))
    assert [a[7:9] for a in asked] == [direct_grads]   # (need_x, need_w) of the one call
    full = dict(stride=(1, 1), padding=(padding, padding) if isinstance(padding, int) else padding,
                dilation=(1, 1), groups=1)
    rtol, atol = (RTOL_F64, ATOL_F64) if dtype == np.float64 else (RTOL_F32, ATOL_F32)
    assert_matches_the_definition(x, w, b, y, gy, gx, gw, gb, full, rtol, atol)


def test_engine_backward_of_the_first_layer_computes_no_image_gradient(monkeypatch, rng):
    """An input that needs no gradient (the images): only the weight's and the bias's are computed."""
    asked = spy(monkeypatch, plan, "conv2d_direct_grads")
    x = rng.standard_normal((2, 1, 8, 8))
    wt = Tensor(rng.standard_normal((8, 1, 3, 3)), requires_grad=True)
    with config.using(kernels="numba", conv="auto"):
        F.conv2d(Tensor(x), wt).sum().backward()
    assert [a[7:9] for a in asked] == [(False, True)]
    np.testing.assert_allclose(wt.grad, reference_grads(x, wt.data, np.ones((2, 8, 6, 6)), (1, 1), (0, 0), (1, 1), 1)[1],
                               rtol=RTOL_F64, atol=10 * ATOL_F64)


# ---- the weight gradient with the output channels as lanes (lanes.py) --------------------------------------------
@pytest.mark.parametrize("C, PH, PW", [(1, 0, 0), (2, 1, 0), (5, 0, 2), (16, 1, 1)])
def test_weight_gradient_with_the_output_channels_as_lanes_matches_the_definition(C, PH, PW, monkeypatch, rng):
    """float32, OC = 16 and 3x3, a CPU with 512-bit registers (simulated where it lacks them): conv2d_direct_grads
    takes the lanes' weight tile (2 input channels per pass, the last pass overlapping when C is odd, 1 when C = 1)."""
    monkeypatch.setattr(lanes, "ON_THIS_CPU", True)
    used = spy(monkeypatch, lanes, "conv2d_weight_grad_lanes")
    case = dict(N=3, C=C, H=7, W=9, OC=16, KH=3, KW=3, PH=PH, PW=PW, seed=int(rng.integers(2 ** 31)))
    x, w, gy = arrays(case, np.float32)
    _, gw, gb = conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, PH, PW, need_x=False)
    assert len(used) == 1
    _, rgw, rgb = definition(x, w, gy, case)
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F32, atol=10 * ATOL_F32)
    np.testing.assert_allclose(gb, rgb, rtol=RTOL_F32, atol=10 * ATOL_F32)


@functools.lru_cache(maxsize=None)
def chunk_case(dtype, OC, H, PH):
    """Arrays and the definition's results for test_chunks_..., computed once for all its chunk sizes and CPUs."""
    case = dict(N=5, C=9, OC=OC, H=H, W=H, KH=3, KW=3, PH=PH, PW=PH, seed=OC * 100 + H * 10 + PH)
    x, w, gy = arrays(case, dtype)
    b = np.random.default_rng(case["seed"]).standard_normal(OC).astype(dtype)
    return x, w, b, gy, F.conv2d_reference(x, w, b, padding=(PH, PH)), definition(x, w, gy, case)


@pytest.mark.parametrize("wide_registers", [True, False])
@pytest.mark.parametrize("per", [1, 2])
@pytest.mark.parametrize("dtype, OC, H, PH", [
    (np.float64, 10, 12, 0),   # forward on the wide grid, weight gradient by the rows tile
    (np.float64, 8, 4, 1),     # forward laid end to end (image_rows: 22 positions per padded image)
    (np.float32, 16, 10, 0),   # with 512-bit registers: forward and weight gradient with the output channels as lanes
    (np.float32, 16, 8, 1),    # the same on padded images
    (np.float32, 16, 26, 0),   # forward on the wide grid, weight gradient by the rows tile (little garbage)
])
def test_chunks_on_numbas_threads_cover_the_batch_once(per, dtype, OC, H, PH, wide_registers, monkeypatch):
    """Chunks of 1 or 2 images (5 images: the last chunk shorter): every image computed once, the chunks' weight and
    bias gradients all added. Forward and backward against the definition (PH = 0: the image gradient written by
    the tile straight into gx, image by image; PH = 1: the chunk's tall image, unrows), on a CPU with 512-bit
    registers (simulated) and without."""
    monkeypatch.setattr(lanes, "ON_THIS_CPU", wide_registers)
    monkeypatch.setattr(direct, "images_per_chunk", lambda N, bytes_per_image: per)
    monkeypatch.setattr(direct_grad, "images_per_chunk", lambda N, bytes_per_image: per)
    x, w, b, gy, ry, (rgx, rgw, rgb) = chunk_case(dtype, OC, H, PH)
    rtol, atol = (RTOL_F64, ATOL_F64) if dtype == np.float64 else (RTOL_F32, ATOL_F32)
    y = direct.conv2d_direct(np.pad(x, ((0, 0), (0, 0), (PH, PH), (PH, PH))), w, b)
    np.testing.assert_allclose(y, ry, rtol=rtol, atol=atol)
    gx, gw, gb = conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, PH, PH)
    np.testing.assert_allclose(gx, rgx, rtol=rtol, atol=atol)
    np.testing.assert_allclose(gw, rgw, rtol=rtol, atol=10 * atol)
    np.testing.assert_allclose(gb, rgb, rtol=rtol, atol=10 * atol)


@pytest.mark.parametrize("wide_registers", [True, False])
@pytest.mark.parametrize("H, takes_lanes", [(26, False), (12, False), (10, True), (8, True)])
def test_weight_gradient_beside_the_image_gradient_takes_the_lanes_only_where_rows_waste_a_third(
        H, takes_lanes, wide_registers, monkeypatch, rng):
    """Both gradients asked, a CPU with 512-bit registers: the rows tile reuses the image gradient's rows, garbage
    included (26x26: 15% of them, 12x12: 31%), the lanes tile where more than a third is garbage (10x10: 36%, 8x8:
    44%). Without 512-bit registers, never the lanes. Right either way."""
    monkeypatch.setattr(lanes, "ON_THIS_CPU", wide_registers)
    used = spy(monkeypatch, lanes, "conv2d_weight_grad_lanes")
    case = dict(N=2, C=16, H=H, W=H, OC=16, KH=3, KW=3, PH=0, PW=0, seed=int(rng.integers(2 ** 31)))
    x, w, gy = arrays(case, np.float32)
    gx, gw, gb = conv2d_direct_grads(x, gy, flipped_weights(w), 3, 3, 0, 0)
    assert len(used) == (1 if takes_lanes and wide_registers else 0)
    rgx, rgw, rgb = definition(x, w, gy, case)
    np.testing.assert_allclose(gx, rgx, rtol=RTOL_F32, atol=ATOL_F32)
    np.testing.assert_allclose(gw, rgw, rtol=RTOL_F32, atol=10 * ATOL_F32)
    np.testing.assert_allclose(gb, rgb, rtol=RTOL_F32, atol=10 * ATOL_F32)

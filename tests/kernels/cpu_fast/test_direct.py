"""The direct convolution (kernels/cpu_fast/direct.py) against conv2d_reference: the plain loop, the register tiles of
every CPU, the batch laid end to end for small images, the output channels as lanes (lanes.py), and the engine's use
of it for forward (backward: test_direct_grad.py).

A tile computes the last block of channels and the last tile of positions twice where they overlap the
previous ones, so the shapes drawn here include channel counts that are not multiples of a tile's and
wide grids that are not multiples of 32.
"""
import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import minicnn.functional as F
from minicnn import config
from minicnn.kernels.cpu_fast import direct as conv_direct, generate, lanes as conv_lanes, plan, simd
from minicnn.kernels.cpu_fast.direct import (CB, MIN_OC, MIN_Q, TILE_CHANNELS, TW, conv2d_direct, conv2d_direct_plain,
                                             fits, image_rows, out_wide, tile_fits, unrows)
from conv_cases import RTOL_F32, ATOL_F32, RTOL_F64, ATOL_F64, assert_matches_the_definition, run_conv

SETTINGS = settings(max_examples=30, deadline=None)


@st.composite
def direct_cases(draw, min_oc=1):
    """x (N, C, H, W) already padded and w (OC, C, KH, KW), stride 1, kernel no larger than the image."""
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    case = dict(N=draw(st.integers(1, 3)), C=draw(st.integers(1, 3)), OC=draw(st.integers(min_oc, 2 * CB + 3)),
                H=draw(st.integers(KH, 14)), W=draw(st.integers(KW, 14)), KH=KH, KW=KW,
                seed=draw(st.integers(0, 2 ** 31 - 1)))
    return case


def arrays(case, dtype):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["N"], case["C"], case["H"], case["W"])).astype(dtype)
    w = rng.standard_normal((case["OC"], case["C"], case["KH"], case["KW"])).astype(dtype)
    return x, w


def cropped(wide, KW):
    """The valid outputs of the plain loop's wide grid: the last KW-1 columns of every row are garbage."""
    return wide[..., :wide.shape[-1] - (KW - 1)]


@SETTINGS
@given(direct_cases())
def test_plain_loop_matches_the_definition(case):
    x, w = arrays(case, np.float64)
    OH = out_wide(case["H"], case["W"], case["KH"], case["KW"])[0]
    out = np.empty((case["N"], case["OC"], OH, case["W"]))
    conv2d_direct_plain(x, w, out)
    np.testing.assert_allclose(cropped(out, case["KW"]), F.conv2d_reference(x, w), rtol=RTOL_F64, atol=ATOL_F64)


@pytest.mark.parametrize("cb", TILE_CHANNELS)
@pytest.mark.parametrize("dtype, rtol, atol", [(np.float64, RTOL_F64, ATOL_F64), (np.float32, RTOL_F32, ATOL_F32)])
@SETTINGS
@given(case=direct_cases(min_oc=MIN_OC))
def test_every_register_tile_matches_the_definition(cb, dtype, rtol, atol, case):
    """Each generated tile (8 channels for AVX-512, 3 for AVX2), whichever this CPU uses by default."""
    assume(fits(case["OC"], case["H"], case["W"], case["KH"], case["KW"]))
    x, w = arrays(case, dtype)
    b = np.random.default_rng(case["seed"] + 1).standard_normal(case["OC"]).astype(dtype)
    y = conv2d_direct(x, w, b, cb=cb)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, F.conv2d_reference(x, w, b), rtol=rtol, atol=atol)


@pytest.mark.parametrize("cb", TILE_CHANNELS)
def test_tile_covers_overlapping_blocks_on_eip4s_second_layer_shape(cb, rng):
    """OC = 10 (the last block of channels overlaps the one before) and Q = 24*26 - 2 = 622 (the last wide tile starts
    at 590, not 608)."""
    x = rng.standard_normal((2, 3, 26, 26)).astype(np.float32)
    w = rng.standard_normal((10, 3, 3, 3)).astype(np.float32)
    assert fits(10, 26, 26, 3, 3) and 10 % cb != 0 and out_wide(26, 26, 3, 3)[1] % TW != 0
    np.testing.assert_allclose(conv2d_direct(x, w, cb=cb), F.conv2d_reference(x, w), rtol=RTOL_F32, atol=ATOL_F32)


@pytest.mark.parametrize("cb", TILE_CHANNELS)
@pytest.mark.parametrize("N", [1, 3, 20])
def test_small_images_laid_end_to_end_match_the_definition(N, cb, rng):
    """6x6 images: Q = 4*6 - 2 = 22 < 32, so each chunk of the batch is one tall image (image_rows) run by the tile;
    the outputs between images are garbage that unrows must skip."""
    x = rng.standard_normal((N, 5, 6, 6)).astype(np.float32)
    w = rng.standard_normal((11, 5, 3, 3)).astype(np.float32)
    b = rng.standard_normal(11).astype(np.float32)
    assert MIN_Q <= out_wide(6, 6, 3, 3)[1] < TW
    np.testing.assert_allclose(conv2d_direct(x, w, b, cb=cb), F.conv2d_reference(x, w, b), rtol=RTOL_F32,
                               atol=ATOL_F32)


@SETTINGS
@given(case=direct_cases(), PH=st.integers(0, 2), PW=st.integers(0, 2))
def test_unrows_undoes_image_rows(case, PH, PW):
    """image_rows lays the padded images end to end after KH*WP zeros; unrows from that offset gives them back."""
    x, _ = arrays(case, np.float64)
    N, C, H, W = x.shape
    KH = case["KH"]
    HP, WP = H + 2 * PH, W + 2 * PW
    xr = image_rows(x, KH, PH, PW)
    assert xr.shape == (C, (N * HP + 2 * KH) * WP)
    padded = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    np.testing.assert_array_equal(xr[:, KH * WP:(KH + N * HP) * WP], padded.transpose(1, 0, 2, 3).reshape(C, -1))
    assert not xr[:, :KH * WP].any() and not xr[:, (KH + N * HP) * WP:].any()
    out = np.empty_like(x)
    unrows(xr.reshape(1, C, -1, WP), KH * WP, HP, WP, PH, PW, np.zeros(C), out)
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("x_shape, OC, KH", [((2, 3, 5, 5), 4, 3),     # Q = 3*5 - 2 = 13 < MIN_Q
                                         ((2, 3, 9, 9), 2, 3),      # fewer output channels than any tile's
                                         ((3, 1, 17, 1), 5, 1)])    # a tall image of one 17x1 image: 19 < TW
def test_plain_loop_serves_shapes_no_tile_fits(x_shape, OC, KH, rng):
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal((OC, x_shape[1], KH, KH)), rng.standard_normal(OC)
    assert not tile_fits(OC, *x_shape[2:], KH, KH) or out_wide(*x_shape[2:], KH, KH)[1] < MIN_Q
    np.testing.assert_allclose(conv2d_direct(x, w, b), F.conv2d_reference(x, w, b), rtol=RTOL_F64, atol=ATOL_F64)


def test_fits_needs_enough_channels_and_positions():
    """The same layers on every CPU, whichever tile it uses: MIN_OC output channels, MIN_Q wide-grid positions."""
    assert fits(MIN_OC, 6, 6, 3, 3)                     # Q = 4*6 - 2 = 22 >= 16: laid end to end
    assert not fits(MIN_OC - 1, 6, 6, 3, 3)             # too few output channels
    assert not fits(MIN_OC, 5, 5, 3, 3)                 # Q = 3*5 - 2 = 13 < 16
    assert not fits(MIN_OC, 2, 9, 3, 3)                 # kernel taller than the image: no output row
    assert all(cb <= MIN_OC for cb in TILE_CHANNELS)    # so every tile serves every layer fits() admits


def test_the_generated_tiles_are_what_their_generators_write(monkeypatch):
    """generated/*.py are written by the generators (python -m minicnn.kernels.cpu_fast.generate); stale() names a
    file whose generator now writes something else."""
    assert generate.stale() == []
    monkeypatch.setitem(generate.FILES, "direct_tile.py", lambda: conv_direct.tile_source(channel_blocks=(4,)))
    assert generate.stale() == ["direct_tile.py"]


def test_compiling_the_tile_restores_numbas_vectorizer_settings(rng):
    simd._ready.clear()   # compile_once checks again: the compilation path runs, Numba returns its overloads
    before = numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE
    conv2d_direct(rng.standard_normal((1, 1, 8, 8)).astype(np.float32), np.ones((MIN_OC, 1, 3, 3), np.float32))
    assert (numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE) == before


def test_first_calls_from_several_threads_leave_numbas_settings_as_they_were(monkeypatch, rng):
    """The engine's first forward calls the tile from every worker thread at once; the compile flags are global.
    A compilation that takes a while (here: made to sleep first) lets the other threads run meanwhile."""
    import threading
    import time
    from minicnn.kernels.cpu_fast.generated import direct_tile
    tile = getattr(direct_tile, f"conv2d_direct_tile_{CB}x{TW}")   # the tile this CPU uses
    monkeypatch.setattr(tile, "compile", lambda sig, real=tile.compile: time.sleep(0.05) or real(sig))
    before = numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE
    x, w = rng.standard_normal((1, 2, 8, 8)), rng.standard_normal((MIN_OC, 2, 3, 3))
    results = []

    def first_call(barrier):
        barrier.wait()
        results.append(conv2d_direct(x, w))

    for _ in range(3):
        simd._ready.clear()
        barrier = threading.Barrier(4)
        threads = [threading.Thread(target=first_call, args=(barrier,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert (numba.config.SLP_VECTORIZE, numba.config.LOOP_VECTORIZE) == before
    assert len(results) == 12   # no thread failed
    for y in results:
        np.testing.assert_allclose(y, F.conv2d_reference(x, w), rtol=RTOL_F64, atol=ATOL_F64)


def test_conv2d_direct_rejects_a_channel_mismatch_and_a_kernel_larger_than_the_image():
    with pytest.raises(ValueError, match="C=2"):
        conv2d_direct(np.zeros((1, 2, 5, 5)), np.zeros((8, 3, 3, 3)))
    with pytest.raises(ValueError, match="larger than the image 2x5"):
        conv2d_direct(np.zeros((1, 1, 2, 5)), np.zeros((8, 1, 3, 3)))


# ---- the engine ---------------------------------------------------------------------------------------------
def spy(monkeypatch, module, name):
    """Record the positional arguments of every call to module.name (still made) in the returned list."""
    calls, real = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("padding, bias", [(0, True), (1, False), ((2, 1), True)])
def test_engine_runs_forward_directly_and_matches_the_definition(dtype, padding, bias, monkeypatch, rng):
    """OC = 10 >= 8: the plan sends the forward pass to conv2d_direct, once, on the whole batch padded. Every result
    against the definition."""
    calls = spy(monkeypatch, plan, "conv2d_direct")
    x = rng.standard_normal((3, 9, 7, 8)).astype(dtype)
    w = rng.standard_normal((10, 9, 3, 3)).astype(dtype)
    b = rng.standard_normal(10).astype(dtype) if bias else None
    with config.using(kernels="numba", conv="auto"):
        assert F.conv2d_algorithm(x.shape, w.shape, padding=padding, dtype=dtype) == "direct"
        y, gy, gx, gw, gb = run_conv(x, w, b, dict(padding=padding))
    full = dict(stride=(1, 1), padding=(padding, padding) if isinstance(padding, int) else padding,
                dilation=(1, 1), groups=1)
    PH, PW = full["padding"]
    assert [a[0].shape for a in calls] == [(3, 9, 7 + 2 * PH, 8 + 2 * PW)]
    rtol, atol = (RTOL_F64, ATOL_F64) if dtype == np.float64 else (RTOL_F32, ATOL_F32)
    assert_matches_the_definition(x, w, b, y, gy, gx, gw, gb, full, rtol, atol)


@pytest.mark.parametrize("OC, stride, dilation, groups, algorithm", [(10, 2, 1, 1, "im2col"), (10, 1, 2, 1, "im2col"),
                                                                     (10, 1, 1, 2, "wide"), (7, 1, 1, 1, "wide")])
def test_engine_keeps_the_columns_where_the_direct_convolution_does_not_apply(OC, stride, dilation, groups, algorithm,
                                                                              monkeypatch, rng):
    """Stride 2 or dilation 2 (the lesson path), two groups or fewer than 8 output channels (the wide grid's
    columns): conv2d_direct never runs, and the results are still the definition's."""
    calls = spy(monkeypatch, plan, "conv2d_direct")
    x, w = rng.standard_normal((2, 8, 9, 9)), rng.standard_normal((OC, 8 // groups, 3, 3))
    kw = dict(stride=(stride, stride), padding=(0, 0), dilation=(dilation, dilation), groups=groups)
    with config.using(kernels="numba", conv="auto"):
        assert F.conv2d_algorithm(x.shape, w.shape, dtype=x.dtype, **kw) == algorithm
        y, gy, gx, gw, _ = run_conv(x, w, None, kw)
    assert calls == []
    assert_matches_the_definition(x, w, None, y, gy, gx, gw, None, kw)


# ---- output channels as the lanes (kernels/conv_lanes.py) ---------------------------------------------------
@pytest.mark.parametrize("block", conv_lanes.BLOCKS)
@SETTINGS
@given(N=st.integers(1, 5), C=st.integers(1, 4), H=st.integers(4, 13), W=st.integers(6, 13), per=st.integers(1, 5),
       seed=st.integers(0, 2 ** 31))
def test_lanes_tiles_match_the_definition(block, N, C, H, W, per, seed):
    """Every block shape on images whose outputs are not a multiple of it (the last blocks overlap), in chunks of
    `per` images (the last chunk shorter, or the only one)."""
    I, R, T = block
    assume(N >= I and H - 2 >= R and W - 2 >= T)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((conv_lanes.LANES, C, 3, 3)).astype(np.float32)
    b = rng.standard_normal(conv_lanes.LANES).astype(np.float32)
    out = np.empty((N, conv_lanes.LANES, H - 2, W - 2), np.float32)
    conv_lanes.conv2d_lanes(x, w, b, out, block, per)
    np.testing.assert_allclose(out, F.conv2d_reference(x, w, b), rtol=RTOL_F32, atol=ATOL_F32)


@pytest.mark.parametrize("wide_registers", [True, False])
@pytest.mark.parametrize("H, expected", [(26, None), (12, None), (10, (1, 2, 8)), (8, None), (6, (1, 4, 4))])
def test_conv2d_direct_takes_the_lanes_on_eip4s_small_layers_where_the_cpu_has_512_bit_registers(
        H, expected, wide_registers, monkeypatch, rng):
    """With AVX-512 (simulated here where the CPU lacks it), the block that computes the fewest outputs, where that is
    10% fewer than the wide grid; without, never the lanes (their 16-float vectors would spill). Right either way."""
    monkeypatch.setattr(conv_lanes, "ON_THIS_CPU", wide_registers)
    calls = spy(monkeypatch, conv_lanes, "conv2d_lanes")
    x = rng.standard_normal((4, 16, H, H)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    y = conv2d_direct(x, w)
    assert [a[4] for a in calls] == ([] if expected is None or not wide_registers else [expected])
    np.testing.assert_allclose(y, F.conv2d_reference(x, w), rtol=RTOL_F32, atol=ATOL_F32)


def test_lanes_need_float32_and_exactly_16_output_channels():
    f32 = np.dtype(np.float32)
    assert conv_lanes.pick(f32, 128, 16, 8, 8, 1e9) is not None
    assert conv_lanes.pick(f32, 128, 15, 8, 8, 1e9) is None and conv_lanes.pick(f32, 128, 32, 8, 8, 1e9) is None
    assert conv_lanes.pick(np.dtype(np.float64), 128, 16, 8, 8, 1e9) is None
    assert conv_lanes.weight_grad_fits(f32, 16, 3, 3) and not conv_lanes.weight_grad_fits(np.dtype(np.float64), 16, 3, 3)

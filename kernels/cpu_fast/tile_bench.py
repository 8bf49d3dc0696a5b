"""Time every generated register tile on this CPU: its compilation, and its speed on eip4's 26x26 layer, one thread.

    python -m minicnn.kernels.cpu_fast.tile_bench              # float32, 15 interleaved repeats
    python -m minicnn.kernels.cpu_fast.tile_bench --repeats 31
    python -m minicnn.kernels.cpu_fast.tile_bench --layers --threads 2     # eip4's layers, lanes on and off

The tiles' shapes are chosen per CPU (simd.has_512_bit_registers): this is how the choice is measured. Each tile
is compiled in this process (NUMBA_CACHE_DIR=$(mktemp -d) for a cold compilation), then all run in turn, image by
image, and the median of the repeats is reported in GFLOP/s (2 * OC * C * KH * KW * positions per call).
With --layers: eip4's six direct layers, forward and both gradients (the first layer: the weight's only) on a
batch of 128, with the lanes' tiles (lanes.py, as CPUs with 512-bit registers run them) and with this CPU's
choice, interleaved; milliseconds for all six.
"""
import argparse
import os
import time

import numba
import numpy as np

from . import direct, direct_grad, lanes
from .simd import has_512_bit_registers

# eip4's second layer: 16 -> 16 channels, 3x3, on 26x26 images (24x24 outputs).
C, OC, H, W, K = 16, 16, 26, 26, 3


def forward_case(rng, dtype):
    """(arguments of a forward tile for one image, FLOPs per call)."""
    x = rng.standard_normal((C, H * W + 2 * W)).astype(dtype)
    w = rng.standard_normal((OC, C, K, K)).astype(dtype)
    Q = (H - K + 1) * W - (K - 1)
    return (x, 0, W, w, np.empty((OC, Q + W), dtype), Q), 2 * OC * C * K * K * Q


def weight_case(rng, dtype):
    """(arguments of a weight tile for one image walked where it lies, FLOPs per call)."""
    x = rng.standard_normal(C * H * W + 2 * W).astype(dtype)
    gr = rng.standard_normal((OC, (H + 2 * K) * W)).astype(dtype)
    P = (H - K + 1) * W - (K - 1)
    return (x, 0, H * W, gr, K * W, P, W, K, np.zeros((OC, C, K, 3), dtype)), 2 * OC * C * K * 3 * P


def compiled_tiles(dtype):
    """{name: (callable, arguments, FLOPs)} for every generated tile, each compiled now (the seconds printed)."""
    rng = np.random.default_rng(0)
    tiles = {}
    for kind, channels, tile_of, case in (("forward", direct.TILE_CHANNELS, direct.forward_tile, forward_case),
                                          ("weight", direct_grad.TILE_CHANNELS, direct_grad.weight_tile, weight_case)):
        args, flops = case(rng, dtype)
        for cb in channels:
            start = time.perf_counter()
            tile = tile_of(dtype, cb)
            print(f"{kind} tile, {cb} channels: compiled (or loaded) in {time.perf_counter() - start:.1f} s")
            tiles[f"{kind} {cb} channels"] = (tile.dispatcher, args, flops)
    return tiles


# eip4's direct layers: (C, H) of the padded input, 16 output channels, 3x3 kernels, no padding.
EIP4_LAYERS = ((1, 28), (16, 26), (10, 12), (16, 10), (16, 8), (16, 6))


def eip4_layers(with_lanes, batch):
    """One pass over eip4's direct layers, forward and backward, with or without the lanes' tiles."""
    lanes.ON_THIS_CPU = with_lanes
    for x, w, gy, wt in batch:
        direct.conv2d_direct(x, w)
        direct_grad.conv2d_direct_grads(x, gy, wt, 3, 3, 0, 0, need_x=x.shape[1] > 1)


def time_layers(repeats):
    rng = np.random.default_rng(0)
    batch = []
    for C, H in EIP4_LAYERS:
        x = rng.standard_normal((128, C, H, H)).astype(np.float32)
        w = rng.standard_normal((16, C, 3, 3)).astype(np.float32)
        gy = rng.standard_normal((128, 16, H - 2, H - 2)).astype(np.float32)
        batch.append((x, w, gy, direct_grad.flipped_weights(w)))
    choices = {"lanes": True, "this CPU's": lanes.ON_THIS_CPU}
    for with_lanes in choices.values():
        eip4_layers(with_lanes, batch)
    times = {name: [] for name in choices}
    for r in range(repeats):
        for name, with_lanes in (choices.items() if r % 2 == 0 else reversed(choices.items())):
            start = time.perf_counter()
            eip4_layers(with_lanes, batch)
            times[name].append(time.perf_counter() - start)
    for name, t in times.items():
        print(f"eip4's direct layers, batch 128, {name} tiles: {float(np.median(t)) * 1e3:.1f} ms "
              f"(quartiles {np.percentile(t, 25) * 1e3:.1f}-{np.percentile(t, 75) * 1e3:.1f})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--layers", action="store_true", help="eip4's layers with and without the lanes' tiles")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    numba.set_num_threads(args.threads)
    if args.layers:
        return time_layers(args.repeats)
    print(f"CPU: {'512-bit' if has_512_bit_registers() else 'no 512-bit'} vector registers; Numba cache: "
          f"{os.environ.get('NUMBA_CACHE_DIR', 'default')}")
    tiles = compiled_tiles(np.dtype(args.dtype))
    times = {name: [] for name in tiles}
    for _ in range(args.repeats):
        for name, (tile, tile_args, _) in tiles.items():
            start = time.perf_counter()
            for _ in range(8):
                tile(*tile_args)
            times[name].append((time.perf_counter() - start) / 8)
    for name, (_, _, flops) in tiles.items():
        t = float(np.median(times[name]))
        print(f"{name:22s} {t * 1e6:8.1f} us  {flops / t / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()

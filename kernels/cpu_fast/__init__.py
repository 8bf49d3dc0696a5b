"""The CPU fast path: convolutions without the column matrix, and the machinery that makes them fast.

    plan.py          which algorithm serves which layer shape (the one place that decides)
    direct.py        direct convolution: a tile of sums in registers on the wide grid (+ the tiles' generator)
    lanes.py         tiles with 16 output channels as the vector lanes, for AVX-512 (+ their generator)
    direct_grad.py   the backward pass without columns (+ the weight tiles' generator)
    depthwise.py     one filter per channel, plane by plane
    wide.py          im2col on the wide grid, chunk by chunk (what the tiles do not serve)
    simd.py          compiling the tiles: the CPU's vector registers, 512-bit vectors, calls by address
    parallel.py      the batch cut into chunks (by the batch alone: the same bits on any thread count), on threads
    generate.py      writes generated/ from the generators (--check: CI's test that they agree)
    generated/       the register tiles, one per CPU kind (python -m minicnn.kernels.cpu_fast.generate)
    tile_bench.py    times the tiles on this CPU (python -m minicnn.kernels.cpu_fast.tile_bench)

The tiles' shapes follow the CPU's vector registers (simd.has_512_bit_registers): 8 x 32 forward tiles, 8-channel
weight tiles and the lanes with AVX-512; 3 x 32 and 4-channel tiles, no lanes, with AVX2. Only the tiles a run
uses are compiled, each once: the chunk kernels call them by address. On a 2-core AMD EPYC (AVX2, no AVX-512),
a first training run compiles for about 15 s (`python benchmarks/train_bench.py --threads 2 --startup --no-train`),
7.7 s of it on this package's kernels (Numba's "numba:compile" events summed by module, one cold run of
`examples/mnist.py --epochs 1 --train-limit 1280 --threads 2 --no-progress`; batch norm 3.1 s, pooling 2.4 s),
and an eip4 training step (batch 128, 2 threads) takes 43 ms, against 55 ms with the 8-channel tiles and the lanes
(medians of 41 interleaved steps).

Lesson 11 (docs/11-direct-convolution.md) walks through them; lesson 3 teaches the path they replace.
"""

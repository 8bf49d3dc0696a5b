"""The CPU fast path: convolutions without the column matrix, and the machinery that makes them fast.

    plan.py          which algorithm serves which layer shape (the one place that decides)
    direct.py        direct convolution: a tile of sums in registers on the wide grid (+ its tile generator)
    lanes.py         tiles with 16 output channels as the vector lanes (+ their generator)
    direct_grad.py   the backward pass without columns (+ the weight-gradient tile's generator)
    depthwise.py     one filter per channel, plane by plane
    wide.py          im2col on the wide grid, chunk by chunk (what the tiles do not serve)
    simd.py          asking LLVM for 512-bit vectors in one kernel
    parallel.py      the batch cut into chunks, run on threads
    generated/       the register tiles, written by the generators (python -m minicnn.kernels.cpu_fast.generate)

Lesson 11 (docs/11-direct-convolution.md) walks through them; lesson 3 teaches the path they replace.
"""

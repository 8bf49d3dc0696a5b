"""The GPU backend on CuPy: the CUDA twins of the lesson's kernels under the contract's names (kernels/cpu.py has the same).

    runtime.py   CuPy, NVRTC compilation of kernels/*.cu (once per file), launch plans, launches, input checks
    ops.py       one wrapper per kernel: im2col, col2im, pooling, batch norm, ..., the matrix products
    graph.py     what a CUDA graph recording needs: dropout keys read from device slots, frozen host values

Convolutions run the lesson path (minicnn/functional/conv.py) on whole batches, except the two shapes that
are one matrix product (conv_matmul.py). Importing this package without CuPy raises one RuntimeError that
says how to install the `gpu` extra.
"""
import functools
import sys
from types import MappingProxyType, SimpleNamespace

from .. import conv_matmul, contract
from ..conv_geometry import ConvGeometry  # noqa: F401
from .graph import recording  # noqa: F401
from .ops import (GEMM_ROUTES, accumulate_grads, adam_update, affine_warp, avg_pool2d_backward,  # noqa: F401
                  avg_pool2d_forward, batch_norm_backward, batch_norm_forward, col2im, cross_entropy_backward,
                  cross_entropy_forward, dropout_apply, dropout_mask, gemm, im2col, matmul, max_pool2d_backward,
                  max_pool2d_forward, relu_backward, relu_forward, sgd_update, sum_leading, sum_rows)
from .runtime import compile_all, cuda_source  # noqa: F401

capabilities = MappingProxyType({
    "name": "cupy",
    "conv_algorithms": ("im2col", "pointwise", "whole_image"),
    "gemm_routes": GEMM_ROUTES,
    "fused_batch_norm": True,
})


def conv2d_plan(g, algorithm="auto"):
    """The one-matrix-product algorithms where they apply (conv_matmul.py), else None: the lesson path."""
    return conv_matmul.plan(g, algorithm, sys.modules[__name__])


@functools.lru_cache(maxsize=None)
def with_gemm(route):
    """This backend with its matrix products on `route` ("gemm": gemm.cu; "cupy": cuBLAS), as the engine uses it."""
    this = sys.modules[__name__]
    if route == "gemm":
        return this
    if route not in GEMM_ROUTES:
        raise ValueError(f"GPU matrix products: route must be one of {GEMM_ROUTES}, got {route!r}")
    routed = SimpleNamespace(**{name: getattr(this, name) for name in (*contract.FUNCTIONS, *contract.ATTRIBUTES)},
                             recording=recording)
    routed.matmul = functools.partial(matmul, route=route)
    routed.conv2d_plan = lambda g, algorithm="auto": conv_matmul.plan(g, algorithm, routed)
    return routed

"""The CPU backend on Numba: every kernel of minicnn under its contract name (numpy_backend.py and gpu/ have the same names).

The lesson's twins (im2col.py beside im2col.cu, pool.py beside pool.cu, ...) provide the operations;
`conv2d_plan` is the one door through which a faster convolution algorithm takes a layer
(conv_matmul.py for shapes that are one matrix product, cpu_fast/plan.py for the rest).
"""
import sys
from types import MappingProxyType

from . import conv_matmul
from .affine import affine_warp  # noqa: F401
from .batchnorm import batch_norm_forward, batch_norm_backward  # noqa: F401
from .conv_geometry import ConvGeometry  # noqa: F401
from .cpu_fast import plan as fast
from .cross_entropy import cross_entropy_forward, cross_entropy_backward  # noqa: F401
from .dropout import dropout_apply, dropout_mask  # noqa: F401
from .gemm import matmul, sum_leading, sum_rows  # noqa: F401
from .im2col import im2col, col2im  # noqa: F401
from .optim import adam_update, sgd_update, accumulate_grads  # noqa: F401
from .pool import max_pool2d_forward, max_pool2d_backward, avg_pool2d_forward, avg_pool2d_backward  # noqa: F401
from .relu import relu_forward, relu_backward  # noqa: F401

capabilities = MappingProxyType({
    "name": "numba",
    "conv_algorithms": ("im2col", "pointwise", "whole_image", "depthwise", "direct", "wide"),
    "gemm_routes": (),
    "fused_batch_norm": True,   # batch_norm_forward/backward take relu= and dropout_p= (nn/fuse.py)
})


def conv2d_plan(g, algorithm="auto"):
    """A faster algorithm for the convolution of geometry g (conv_geometry.ConvGeometry), or None for the lesson path."""
    return conv_matmul.plan(g, algorithm, sys.modules[__name__]) or fast.plan(g, algorithm)

"""The CPU backend: every Numba kernel of minicnn under its contract name (the GPU backend, gpu.py, has the same names)."""
from .im2col import im2col, col2im, im2col_wide, col2im_wide  # noqa: F401
from .pool import max_pool2d_forward, max_pool2d_backward, avg_pool2d_forward, avg_pool2d_backward  # noqa: F401
from .affine import affine_warp  # noqa: F401
from .dropout import dropout_apply, dropout_mask  # noqa: F401
from .relu import relu_forward, relu_backward  # noqa: F401
from .cross_entropy import cross_entropy_forward, cross_entropy_backward  # noqa: F401
from .optim import adam_update, sgd_update, accumulate_grads  # noqa: F401
from .batchnorm import batch_norm_forward, batch_norm_backward  # noqa: F401
from .parallel import batch_chunks, map_chunks  # noqa: F401
from .gemm import matmul, sum_leading, sum_rows  # noqa: F401
from .conv_direct import conv2d_direct, fits as conv2d_direct_fits  # noqa: F401
from .conv_direct_grad import conv2d_direct_grads, flipped_weights  # noqa: F401
from .conv_direct_grad import image_grad_fits as conv2d_image_grad_fits, weight_grad_fits as conv2d_weight_grad_fits  # noqa: F401
from .conv_depthwise import conv2d_depthwise, conv2d_depthwise_grads  # noqa: F401

wide_columns = True   # stride-1 convolutions use im2col_wide / col2im_wide (kernels/im2col.py)
direct_conv = True    # stride-1 convolutions with enough channels, and depthwise ones: no columns (conv_direct.py, conv_direct_grad.py, conv_depthwise.py)
keep_columns = False  # recompute im2col in backward: a chunk's columns are cheaper to rebuild than to keep (cache)
weight_grad_columns_first = True  # the weight gradient as (col @ gy^T)^T: BLAS runs that orientation about 2x faster

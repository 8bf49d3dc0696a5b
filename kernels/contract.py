"""The backend contract: what every backend defines, under the same names, for its own arrays.

    kernels/cpu.py            Numba loops on NumPy arrays (the default on the CPU)
    kernels/numpy_backend.py  plain NumPy on NumPy arrays (no Numba needed)
    kernels/gpu/              CUDA kernels on CuPy arrays

The engine never asks which backend it has: `minicnn.backend.kernels_for(x)` returns the one for x's
device and the configuration, and every Function calls these names on it. tests/kernels/test_contract.py
checks that each backend has all of them, with the same parameters.
"""
FUNCTIONS = {
    # convolution
    "im2col": "x (N, C, H, W) -> col (C, KH, KW, N, OH, OW): every receptive field as a column",
    "col2im": "col (C, KH, KW, N, OH, OW) -> dx (N, C, H, W): the adjoint of im2col",
    "matmul": "a @ b, leading dimensions broadcast, plus bias[i] on row i when given",
    "sum_rows": "(R, L) -> (R,): the sum of each row",
    "sum_leading": "(B, ...) -> (...): the sum over the first axis, in order",
    "conv2d_plan": "a faster algorithm for a convolution's geometry, or None for the lesson path",
    # pooling
    "max_pool2d_forward": "x -> (y, argmax): each window's maximum (a NaN wins) and where it is",
    "max_pool2d_backward": "gy, argmax -> gx: each gradient to its window's winner",
    "avg_pool2d_forward": "x -> y: each window's mean, padding counted as zeros",
    "avg_pool2d_backward": "gy -> gx: each gradient spread evenly over its window",
    # activations, normalisation, regularisation, loss
    "relu_forward": "max(x, 0)",
    "relu_backward": "gy where the output is positive, else 0",
    "batch_norm_forward": "training-mode batch norm (optionally of relu(x), optionally followed by dropout)",
    "batch_norm_backward": "its gradients (gx, dgamma, dbeta)",
    "dropout_apply": "x times the mask hashed from (key, index)",
    "dropout_mask": "the mask itself",
    "cross_entropy_forward": "(losses, softmax, reduced loss) of logits against labels",
    "cross_entropy_backward": "the logits' gradient",
    # optimisers and data
    "adam_update": "one Adam (AdamW) step on flat buffers, in place",
    "sgd_update": "one SGD step on flat buffers, in place",
    "accumulate_grads": "dsts[k] += srcs[k] for every k, in place",
    "affine_warp": "each image warped by its inverse affine map (bilinear, zero outside)",
}
ATTRIBUTES = {
    "capabilities": "read-only facts: the backend's name, its convolution algorithms and GPU GEMM routes",
    "ConvGeometry": "the named shapes of a convolution (conv_geometry.py)",
}

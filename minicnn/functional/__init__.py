"""Differentiable operations: each is a Function (forward and backward on raw arrays) with a lowercase wrapper."""
from .arith import add, sub, mul, div, neg, pow, exp, log, matmul  # noqa: F401
from .shape import sum, mean, reshape, transpose, flatten, getitem  # noqa: F401
from .activation import relu, sigmoid, tanh, log_softmax, softmax  # noqa: F401
from .loss import cross_entropy, nll_loss  # noqa: F401
from .conv import conv2d, conv2d_algorithm, conv2d_reference, conv_output_size, im2col  # noqa: F401
from .pool import max_pool2d, avg_pool2d, global_avg_pool2d, max_pool2d_reference  # noqa: F401
from .norm import batch_norm  # noqa: F401
from .dropout import dropout  # noqa: F401

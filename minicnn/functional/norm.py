"""Batch normalisation over (N, H, W) per channel, with its backward derived once and written out.

Training:  mu = mean(x), var = mean((x - mu)^2)  over n, h, w for each channel c (M = N*H*W values)
           xhat = (x - mu) / sqrt(var + eps);  y = gamma * xhat + beta
           running_mean <- (1 - momentum) * running_mean + momentum * mu
           running_var  <- (1 - momentum) * running_var  + momentum * var * M / (M - 1)   (unbiased)
Eval:      xhat = (x - running_mean) / sqrt(running_var + eps)
Backward (training), every sum over n, h, w:
           dbeta = sum(gy);  dgamma = sum(gy * xhat)
           dx = gamma / sqrt(var + eps) * (gy - dbeta / M - xhat * dgamma / M)
`momentum` weighs the NEW batch statistic (PyTorch's convention, default 0.1); Keras's
momentum=0.99 is momentum=0.01 here.
"""
from ..autograd import Function
from ..backend import get_array_module, kernels_for
from .. import random as mrandom
from .checks import check_input, real_number


class BatchNorm2d(Function):
    """Training mode runs the kernels batch_norm_forward/backward (kernels/batchnorm.py and .cu: the loops of the
    formulas above); eval mode is one affine map per channel, written here as array expressions."""

    def __init__(self, running_mean, running_var, training, momentum, eps, relu=False, dropout_p=0.0, key=0):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps
        self.fused = dict(relu=relu, dropout_p=dropout_p, dropout_key=key)  # the layers fused around it

    def forward(self, x, gamma, beta):
        self.gamma = gamma
        if self.training:
            y, mu, var, self.invstd = kernels_for(x).batch_norm_forward(
                x, gamma, beta, self.eps, self.running_mean, self.running_var, self.momentum,  # running: in place
                **self.fused)
            self.x, self.mean = x, mu
            return y
        xp = get_array_module(x)
        shape = (1, -1, 1, 1)
        self.invstd = (1.0 / xp.sqrt(self.running_var + self.eps)).astype(x.dtype)
        self.xhat = (x - self.running_mean.reshape(shape)) * self.invstd.reshape(shape)
        return self.xhat * gamma.reshape(shape) + beta.reshape(shape)

    def backward(self, gy):
        if self.training:
            return kernels_for(gy).batch_norm_backward(gy, self.x, self.mean, self.invstd, self.gamma, **self.fused)
        dbeta = gy.sum(axis=(0, 2, 3))
        dgamma = (gy * self.xhat).sum(axis=(0, 2, 3))
        return gy * (self.gamma * self.invstd).reshape(1, -1, 1, 1), dgamma, dbeta


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1, eps=1e-5,
               relu=False, dropout=0.0, generator=None):
    """Normalise each channel of x (N, C, H, W); running statistics (raw arrays) are updated in place when training.

    Two neighbours can be fused in, training mode only, as one operation with the same numbers:
    relu=True normalises relu(x) -- batch_norm(F.relu(x), ...) -- and dropout=p applies
    F.dropout(y, p, generator=generator) to the result (its key drawn the same way). The kernels read
    relu(x) and the dropout mask on the fly. nn.Sequential uses this for ReLU -> BatchNorm2d -> Dropout."""
    a = check_input(x, "batch_norm")
    C = a.shape[1]
    vectors = {}
    for name, t in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)):
        if t is None and name.startswith("running_"):
            continue
        vectors[name] = v = check_input(t, "batch_norm", 1, name)
        if tuple(v.shape) != (C,):
            raise ValueError(f"batch_norm: {name} must have shape ({C},) for {C} channels, got {tuple(v.shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm in eval mode needs running_mean and running_var")
    if training and a.size // C < 2:
        raise ValueError(f"batch_norm in training mode needs more than one value per channel, got input shape {tuple(x.shape)}")
    check_momentum_and_eps(momentum, eps, "batch_norm", eps_zero_ok=True)
    if (relu or dropout) and not training:
        raise ValueError("batch_norm: relu=True and dropout are for training mode; in eval mode apply F.relu first "
                         "(and no dropout)")
    key = 0
    if dropout:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout probability must lie in [0, 1), got {dropout}")
        key = mrandom.draw_key(generator if generator is not None else mrandom.default_generator())
    # the running statistics are updated in place: the raw arrays themselves (check_input returned them)
    rm, rv = vectors.get("running_mean"), vectors.get("running_var")
    return BatchNorm2d(rm, rv, training, momentum, eps, relu, dropout, key)(x, gamma, beta)


def check_momentum_and_eps(momentum, eps, op, eps_zero_ok=False):
    """momentum a number in [0, 1] (None, PyTorch's cumulative average, is not supported), eps positive
    (or zero, where `eps_zero_ok`: F.batch_norm computes the exact normalisation then)."""
    if momentum is None:
        raise ValueError(f"{op}: momentum=None (PyTorch's cumulative moving average) is not supported; "
                         "give a number in [0, 1] (PyTorch's default is 0.1)")
    if not 0.0 <= real_number(momentum, "momentum", op) <= 1.0:
        raise ValueError(f"{op}: momentum must lie in [0, 1], got {momentum}")
    eps_value = real_number(eps, "eps", op)
    if not (eps_value >= 0.0 if eps_zero_ok else eps_value > 0.0):
        raise ValueError(f"{op}: eps must be {'non-negative' if eps_zero_ok else 'positive'}, got {eps}")

"""Cross-entropy from logits: log-softmax and negative log-likelihood fused, so large logits never overflow."""
from ..autograd import Function
from ..backend import get_array_module, kernels_for
from ..tensor import Tensor
from .checks import check_input


class CrossEntropy(Function):
    """loss = mean_n [ logsumexp(x_n) - x_n[t_n] ]; d loss / d x_n = (softmax(x_n) - onehot(t_n)) / N.

    Each way is one kernel (kernels/cross_entropy.py and .cu, where the formulas are written out; the NumPy
    version is `cross_entropy_forward` in kernels/numpy_backend.py): the forward keeps the softmax for the backward."""

    def __init__(self, target, reduction):
        self.target, self.reduction = target, reduction

    def forward(self, x):
        divisor = x.shape[0] if self.reduction == "mean" else 1
        losses, self.p, reduced = kernels_for(x).cross_entropy_forward(x, self.target, divisor)
        return losses if self.reduction == "none" else reduced

    def backward(self, gy):
        divisor = self.p.shape[0] if self.reduction == "mean" else 1
        return kernels_for(self.p).cross_entropy_backward(self.p, self.target, gy, divisor)


def cross_entropy(logits, target, reduction="mean"):
    """Cross-entropy of logits (N, K) against integer class labels target (N,).

    Labels outside [0, K) are an error on the CPU; on the GPU that check would cost a host sync per step, so it is skipped.
    """
    t = target.data if isinstance(target, Tensor) else target  # a raw array's .data is a memoryview / pointer
    xp = get_array_module(t)
    if not isinstance(t, xp.ndarray):
        t = xp.asarray(t)
    check_input(logits, "cross_entropy", None, "logits")
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy expects logits of shape (N, K), got shape {tuple(logits.shape)}")
    if t.ndim != 1 or t.shape[0] != logits.shape[0]:
        raise ValueError(f"cross_entropy: target must have shape ({logits.shape[0]},), got {tuple(t.shape)}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class labels, got dtype {t.dtype}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if xp.__name__ == "numpy" and t.size and (int(t.min()) < 0 or int(t.max()) >= logits.shape[1]):
        raise ValueError(f"cross_entropy: labels must lie in [0, {logits.shape[1] - 1}], "
                         f"got values from {int(t.min())} to {int(t.max())}")
    return CrossEntropy(t, reduction)(logits)


def nll_loss(log_probs, target):
    """Mean negative log-likelihood of integer labels under log-probabilities (N, K)."""
    from .shape import getitem, mean
    from .arith import neg
    xp = get_array_module(log_probs.data)
    t = xp.asarray(target.data if isinstance(target, Tensor) else target)
    return neg(mean(getitem(log_probs, (xp.arange(len(t)), t))))

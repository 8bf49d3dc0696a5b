"""Cross-entropy from logits: log-softmax and negative log-likelihood fused, so large logits never overflow."""
from ..autograd import Function
from ..backend import get_array_module
from ..tensor import Tensor


class CrossEntropy(Function):
    """loss = mean_n [ logsumexp(x_n) - x_n[t_n] ]; d loss / d x_n = (softmax(x_n) - onehot(t_n)) / N."""

    def __init__(self, target, reduction):
        self.target, self.reduction = target, reduction

    def forward(self, x):
        xp = get_array_module(x)
        N = x.shape[0]
        shifted = x - x.max(axis=1, keepdims=True)
        logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        self.p = xp.exp(logp)
        losses = -logp[xp.arange(N), self.target]
        return losses.mean() if self.reduction == "mean" else losses.sum() if self.reduction == "sum" else losses

    def backward(self, gy):
        xp = get_array_module(gy)
        N = self.p.shape[0]
        g = self.p.copy()
        g[xp.arange(N), self.target] -= 1
        if self.reduction == "mean":
            return g * (gy / N)
        if self.reduction == "sum":
            return g * gy
        return g * gy[:, None]


def cross_entropy(logits, target, reduction="mean"):
    """Cross-entropy of logits (N, K) against integer class labels target (N,).

    Labels outside [0, K) are an error on the CPU; on the GPU that check would cost a host sync per step, so it is skipped.
    """
    t = target.data if isinstance(target, Tensor) else target  # a raw array's .data is a memoryview / pointer
    xp = get_array_module(t)
    t = xp.asarray(t)
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

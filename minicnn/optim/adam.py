"""Adam (adaptive moments, bias-corrected) and AdamW (weight decay decoupled from the gradient)."""
from ..backend import get_array_module, kernels_for
from .optimizer import Optimizer


class Adam(Optimizer):
    _state_names = ("m", "v")
    decoupled = False

    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if eps <= 0 or weight_decay < 0:
            raise ValueError(f"eps must be positive and weight_decay not negative, got {eps} and {weight_decay}")
        self.betas, self.eps, self.weight_decay = (b1, b2), eps, weight_decay
        xp = get_array_module(self.flat_data)
        self.m, self.v = xp.zeros_like(self.flat_data), xp.zeros_like(self.flat_data)

    def _update(self):
        kernels_for(self.flat_data).adam_update(self.flat_data, self.flat_grad, self.m, self.v, self.lr,
                                               self.betas[0], self.betas[1], self.eps, self.step_count,
                                               self.weight_decay, self.decoupled)


class AdamW(Adam):
    """Adam whose weight decay shrinks the weights directly (p -= lr * wd * p) instead of adding wd * p to the gradient."""
    decoupled = True

    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)

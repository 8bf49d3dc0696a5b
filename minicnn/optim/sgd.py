"""Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay."""
from ..backend import get_array_module, kernels_for
from .optimizer import Optimizer


class SGD(Optimizer):
    _state_names = ("momentum_buffer",)

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"momentum and weight_decay must not be negative, got {momentum} and {weight_decay}")
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        self.momentum_buffer = get_array_module(self.flat_data).zeros_like(self.flat_data)

    def _update(self):
        kernels_for(self.flat_data).sgd_update(self.flat_data, self.flat_grad, self.momentum_buffer, self.lr,
                                              self.momentum, self.weight_decay, self.nesterov)

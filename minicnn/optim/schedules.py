"""Learning-rate schedules: call step() once per epoch (InverseTimeDecay, StepDecay) or once per batch (OneCycle)."""
import math

from .optimizer import check_state_keys, non_negative_integer, non_negative_number


class Schedule:
    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.count = 0
        optimizer.lr = self.lr_at(0)

    def lr_at(self, count):
        raise NotImplementedError

    def step(self):
        self.count += 1
        self.optimizer.lr = self.lr_at(self.count)
        return self.optimizer.lr

    def state_dict(self):
        return {"count": self.count, "base_lr": self.base_lr}

    def load_state_dict(self, state):
        """Restore count and base_lr from state_dict()'s output, both checked before either is set."""
        who = f"{type(self).__name__}.load_state_dict"
        check_state_keys(state, ("count", "base_lr"), who)
        count = non_negative_integer(state["count"], "count", who)
        base_lr = non_negative_number(state["base_lr"], "base_lr", who)
        self.count, self.base_lr = count, base_lr
        self.optimizer.lr = self.lr_at(self.count)


class InverseTimeDecay(Schedule):
    """The course's schedule: lr = lr0 / (1 + k * epoch), epoch counted from 0."""

    def __init__(self, optimizer, k):
        self.k = k
        super().__init__(optimizer)

    def lr_at(self, epoch):
        return self.base_lr / (1.0 + self.k * epoch)


class StepDecay(Schedule):
    """lr = lr0 * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        if step_size < 1:
            raise ValueError(f"step_size must be at least 1, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class OneCycle(Schedule):
    """Per batch: warm up from max_lr/div_factor to max_lr (cosine) over pct_start of the steps, then anneal
    (cosine) to max_lr/(div_factor*final_div_factor)."""

    def __init__(self, optimizer, max_lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
        if total_steps < 2:
            raise ValueError(f"total_steps must be at least 2, got {total_steps}")
        self.max_lr, self.total_steps = max_lr, total_steps
        self.warm = max(1, int(pct_start * total_steps))
        self.start, self.end = max_lr / div_factor, max_lr / (div_factor * final_div_factor)
        super().__init__(optimizer)

    @staticmethod
    def _cos(a, b, frac):
        return b + (a - b) * (1 + math.cos(math.pi * min(frac, 1.0))) / 2

    def lr_at(self, step):
        if step <= self.warm:
            return self._cos(self.start, self.max_lr, step / self.warm)
        return self._cos(self.max_lr, self.end, (step - self.warm) / max(1, self.total_steps - 1 - self.warm))

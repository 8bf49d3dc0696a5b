"""The optimizer base: all parameters live in one flat buffer (each Parameter a view into it), so one kernel updates the model.

    flat_data = [ conv1.weight | conv1.bias | bn1.weight | ... ]   p.data = a reshaped view of its slice
    flat_grad = [ same layout ]                                    p.grad = a view; backward adds into it
One update is one call of a kernel over the flat vectors (one launch on the GPU, not one per tensor).
Create the optimizer after moving the model to its device.
"""
import math
import numbers
from collections.abc import Mapping

import numpy as np

from ..backend import device_of, get_array_module, is_gpu_array, to_device
from ..functional.checks import type_name


class Optimizer:
    def __init__(self, params, lr):
        params = [p for p in params if p.requires_grad]
        if not params:
            raise ValueError("the optimizer got no parameters that require grad")
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        devices = {p.device for p in params}
        dtypes = {str(p.dtype) for p in params}
        if len(devices) > 1 or len(dtypes) > 1:
            raise ValueError(f"all parameters must share one device and dtype, got devices {sorted(devices)} "
                             f"and dtypes {sorted(dtypes)}")
        self.params, self.lr, self.step_count = params, lr, 0
        xp = get_array_module(params[0].data)
        total = sum(p.size for p in params)
        self.flat_data = xp.empty(total, dtype=params[0].dtype)
        self.flat_grad = xp.zeros(total, dtype=params[0].dtype)
        self._views = []
        offset = 0
        for p in params:
            n = p.size
            data_view = self.flat_data[offset:offset + n].reshape(p.shape)
            data_view[...] = p.data
            grad_view = self.flat_grad[offset:offset + n].reshape(p.shape)
            if p.grad is not None:
                grad_view[...] = p.grad
            p.data, p.grad = data_view, grad_view
            self._views.append((data_view, grad_view))
            offset += n

    def zero_grad(self):
        """Zero the flat gradient buffer (the per-parameter views stay in place)."""
        self._check_views()
        self.flat_grad.fill(0)

    def _check_views(self):
        for p, (data_view, grad_view) in zip(self.params, self._views):
            if p.data is not data_view:
                raise RuntimeError("a parameter's array was replaced after the optimizer was created "
                                   "(e.g. by model.to(device)); create the optimizer after moving the model")
            if p.grad is not grad_view:  # someone set p.grad = None or a new array: fold it back into the buffer
                grad_view[...] = 0 if p.grad is None else p.grad
                p.grad = grad_view

    def step(self):
        """Apply one update from the current gradients."""
        self._check_views()
        self.step_count += 1
        self._update()

    def _update(self):
        raise NotImplementedError

    # ---- checkpoints -------------------------------------------------------------------------
    _state_names = ()

    def state_dict(self):
        out = {"lr": self.lr, "step_count": self.step_count}
        for name in self._state_names:
            out[name] = to_device(getattr(self, name), "cpu").copy()
        return out

    def load_state_dict(self, state):
        """Restore lr, step_count and the state arrays from state_dict()'s output. Everything is checked first
        (a mapping with exactly this optimizer's keys, lr a finite number >= 0, step_count a non-negative integer,
        each array of the buffer's shape and a floating-point dtype): a refused state changes nothing."""
        who = f"{type(self).__name__}.load_state_dict"
        names = ("lr", "step_count") + tuple(self._state_names)
        check_state_keys(state, names, who)
        lr = non_negative_number(state["lr"], "lr", who)  # a schedule may have brought it to 0
        step_count = non_negative_integer(state["step_count"], "step_count", who)
        arrays = [(getattr(self, name), state_array(state[name], getattr(self, name), name, who))
                  for name in self._state_names]
        self.lr, self.step_count = lr, step_count
        for buf, value in arrays:
            buf[...] = value


def check_state_keys(state, names, who):
    """`state` must be a mapping with exactly the keys `names` (a state dict of another kind is named as such)."""
    if not isinstance(state, Mapping):
        raise TypeError(f"{who} expects a dict with keys {list(names)}, got {type_name(state)}")
    missing = [k for k in names if k not in state]
    unexpected = [k for k in state if k not in names]
    if missing or unexpected:
        found = [f"missing keys {missing}"] if missing else []
        found += [f"unexpected keys {unexpected}"] if unexpected else []
        raise ValueError(f"{who}: {', '.join(found)}; expected the keys {list(names)}")


def _scalar(value):
    """A Python or NumPy number, or a 0-d array's item (checkpoints may hold either); None for anything else."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return value


def non_negative_number(value, name, who):
    x = _scalar(value)
    if x is None:
        raise TypeError(f"{who}: {name} must be a number, got {value!r}")
    if not (math.isfinite(x) and x >= 0):
        raise ValueError(f"{who}: {name} must be a finite number not below 0, got {value!r}")
    return float(x)


def non_negative_integer(value, name, who):
    x = _scalar(value)
    if x is None or not float(x).is_integer():
        raise TypeError(f"{who}: {name} must be an integer, got {value!r}")
    if x < 0:
        raise ValueError(f"{who}: {name} must not be negative, got {value!r}")
    return int(x)


def state_array(value, buf, name, who):
    """`value` as an array for buffer `buf` (same shape, a floating-point dtype), on buf's device, not yet copied in."""
    if not (isinstance(value, np.ndarray) or is_gpu_array(value)):
        raise TypeError(f"{who}: {name} must be an array of shape {tuple(buf.shape)}, got {type_name(value)}")
    if tuple(value.shape) != tuple(buf.shape):
        raise ValueError(f"{who}: {name} has shape {tuple(value.shape)}, expected {tuple(buf.shape)} "
                         f"(the state of a model with another number of parameters?)")
    if value.dtype.kind != "f":
        raise TypeError(f"{who}: {name} has dtype {value.dtype}, expected a floating-point dtype ({buf.dtype})")
    return get_array_module(buf).asarray(to_device(value, device_of(buf)), dtype=buf.dtype)

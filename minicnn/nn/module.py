"""Modules: objects that own parameters (learned) and buffers (running statistics), and know train/eval mode."""
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from ..backend import get_array_module, is_gpu_array, to_device
from ..functional.checks import type_name
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor the optimizer updates: a leaf with requires_grad=True."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter" + super().__repr__()[len("Tensor"):]


class Module:
    """Base class: assign Parameters, buffers (register_buffer) and sub-Modules as attributes; define forward()."""

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_buffer_names", [])

    def __setattr__(self, name, value):
        if not hasattr(self, "_buffer_names"):
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() before setting attributes")
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """A named array saved in state_dict but not trained (e.g. batch norm's running mean)."""
        self._buffer_names.append(name)
        object.__setattr__(self, name, Tensor(array))

    def forward(self, *args):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- traversal ---------------------------------------------------------------------------
    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self):
        return [m for _, m in self.named_children()]

    def modules(self):
        """This module and every module inside it, depth first."""
        yield self
        for child in self.children():
            yield from child.modules()

    def named_parameters(self, prefix=""):
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        for name in self._buffer_names:
            yield prefix + name, getattr(self, name)
        for name, child in self.named_children():
            yield from child.named_buffers(prefix + name + ".")

    def num_parameters(self, trainable_only=False):
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # ---- modes and devices -------------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    @property
    def device(self):
        params = self.parameters()
        return params[0].device if params else "cpu"

    def to(self, device):
        """Move every parameter and buffer to 'cpu' or 'gpu' in place (the Parameter objects stay the same)."""
        for _, t in list(self.named_parameters()) + list(self.named_buffers()):
            t.data = to_device(t.data, device)
            if t.grad is not None:
                t.grad = to_device(t.grad, device)
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # ---- saving ------------------------------------------------------------------------------
    def state_dict(self):
        """name -> NumPy array copy (on the host) of every parameter and buffer; does not move the model."""
        out = OrderedDict()
        for name, t in list(self.named_parameters()) + list(self.named_buffers()):
            out[name] = np.array(to_device(t.data, "cpu"), copy=True)
        return out

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the existing parameters and buffers in place, on whatever device they live.

        Everything is checked before anything is written, so a refused state leaves the model as it was:
        `state` is a mapping; under `strict`, it names every parameter and buffer and nothing else; each
        value is an array (or a Tensor) of the model's shape with a dtype of the same kind (a float64 state
        loads into a float32 model, converted; integer arrays do not load into float tensors)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"load_state_dict expects a dict of name -> array, got {type_name(state)}")
        own = OrderedDict(list(self.named_parameters()) + list(self.named_buffers()))
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        staged = [(t, self._checked_value(name, state[name], t)) for name, t in own.items() if name in state]
        for t, value in staged:
            t.data[...] = value

    @staticmethod
    def _checked_value(name, value, t):
        """`value` as an array of t's dtype on t's device, ready to copy into t; an error naming `name` if not."""
        if isinstance(value, Tensor):
            value = value.data
        elif not (isinstance(value, np.ndarray) or is_gpu_array(value)):
            raise TypeError(f"load_state_dict: {name} is a {type_name(value)} in the state, "
                            f"expected an array of shape {tuple(t.shape)}")
        if tuple(value.shape) != tuple(t.shape):
            raise ValueError(f"load_state_dict: {name} has shape {tuple(value.shape)} in the state "
                             f"but {tuple(t.shape)} in the model")
        if value.dtype.kind != t.dtype.kind:
            raise TypeError(f"load_state_dict: {name} has dtype {value.dtype} in the state "
                            f"but {t.dtype} in the model")
        return get_array_module(t.data).asarray(to_device(value, t.device), dtype=t.dtype)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        kids = list(self.named_children())
        if not kids:
            return lines[0] + ")"
        for name, child in kids:
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"


class Sequential(Module):
    """Layers applied one after another; layers are stored as attributes '0', '1', ..."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a Module")
            setattr(self, str(i), layer)

    def __iter__(self):
        return iter(self.children())

    def __len__(self):
        return len(self.children())

    def __getitem__(self, i):
        return self.children()[i]

    def forward(self, x):
        for layer in self.children():
            x = layer(x)
        return x

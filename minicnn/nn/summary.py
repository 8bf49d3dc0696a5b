"""summary(): where the shapes shrink, where the parameters go, and how the receptive field grows layer by layer.

Receptive field of one output unit, walking the layers from the input:
    r_out = r_in + (k_eff - 1) * j_in      j_out = j_in * s
where k_eff = d * (k - 1) + 1 is the dilated kernel size, s the stride and j the "jump": the
distance in input pixels between two neighbouring units of the current layer. Start: r = j = 1.
Counting follows Keras: batch norm's running mean and variance are non-trainable parameters.
The last column names the algorithm each convolution runs with under the current configuration
(minicnn.config): "im2col" for the lesson path, or the fast one the backend picks for the layer's shape.
"""
from dataclasses import dataclass, field

import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..tensor import Tensor
from .layers import Conv2d


@dataclass
class Summary:
    rows: list = field(default_factory=list)   # (name, type, output shape, params, rf, jump, algorithm)
    trainable: int = 0
    non_trainable: int = 0

    @property
    def total(self):
        return self.trainable + self.non_trainable

    @property
    def receptive_field(self):
        return self.rows[-1][4] if self.rows else 1

    def __str__(self):
        head = ("Layer (type)", "Output shape", "Param #", "RF", "Jump", "Algorithm")
        body = [(f"{n} ({t})", str(s), f"{p:,}", str(r), str(j), a) for n, t, s, p, r, j, a in self.rows]
        widths = [max(len(row[i]) for row in [head] + body) for i in range(6)]
        line = lambda row: "  ".join(c.ljust(w) if i in (0, 5) else c.rjust(w)
                                     for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        rule = "=" * len(line(head))
        out = [rule, line(head), rule] + [line(r) for r in body] + [rule]
        out += [f"Total params: {self.total:,}", f"Trainable params: {self.trainable:,}",
                f"Non-trainable params: {self.non_trainable:,}", rule]
        return "\n".join(out)


def _leaf_modules(model):
    return [(name, m) for name, m in _named_modules(model, "") if not m.children()]


def _named_modules(module, prefix):
    yield prefix or type(module).__name__.lower(), module
    for name, child in module.named_children():
        yield from _named_modules(child, prefix + ("." if prefix else "") + name)


def _kernel_stride(m):
    """(k_eff, stride) along the height for layers that slide a window, else None."""
    if hasattr(m, "kernel_size") and hasattr(m, "stride"):
        k, s = m.kernel_size[0], m.stride[0]
        d = getattr(m, "dilation", (1, 1))[0]
        return d * (k - 1) + 1, s
    return None


def summary(model, input_shape, print_fn=print):
    """Run one zero image of `input_shape` (C, H, W) through `model` and tabulate every layer; returns a Summary."""
    leaves = _leaf_modules(model)
    shapes, algorithms = {}, {}
    originals = {}
    for name, m in leaves:
        originals[id(m)] = m.forward

        def hooked(*args, _m=m, _f=m.forward):
            y = _f(*args)
            shapes[id(_m)] = tuple(y.shape[1:])
            if isinstance(_m, Conv2d):
                algorithms[id(_m)] = F.conv2d_algorithm(args[0].shape, _m.weight.shape, _m.stride, _m.padding,
                                                        _m.dilation, _m.groups, _m.weight.device, _m.weight.dtype)
            return y
        object.__setattr__(m, "forward", hooked)
    was_training = model.training
    model.eval()
    try:
        params = model.parameters()
        dtype = params[0].dtype if params else np.float32
        with no_grad():
            x = Tensor(np.zeros((1,) + tuple(input_shape), dtype=dtype)).to(model.device)
            model(x)
    finally:
        for _, m in leaves:
            del m.__dict__["forward"]
        model.train(was_training)
    result = Summary()
    r, j = 1, 1
    for name, m in leaves:
        if id(m) not in shapes:
            continue
        ks = _kernel_stride(m)
        if ks is not None:
            r, j = r + (ks[0] - 1) * j, j * ks[1]
        count = sum(p.size for _, p in m.named_parameters()) + sum(b.size for _, b in m.named_buffers())
        result.rows.append((name, type(m).__name__, shapes[id(m)], count, r, j, algorithms.get(id(m), "")))
    for p in model.parameters():
        if p.requires_grad:
            result.trainable += p.size
        else:
            result.non_trainable += p.size
    result.non_trainable += sum(b.size for _, b in model.named_buffers())
    if print_fn is not None:
        print_fn(str(result))
    return result

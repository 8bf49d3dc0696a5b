"""Reverse-mode automatic differentiation: a Function records its inputs, backward walks the graph in reverse order.

Every differentiable operation is a small `Function` subclass whose `forward` and `backward`
work on raw arrays (NumPy on the CPU, CuPy on the GPU) and sit next to each other. The engine
below is the only place that knows about graphs: it records who made each tensor, sorts the
graph topologically without recursion, sums broadcast gradients back to shape and accumulates
gradients into the leaves.
"""
import contextlib
import sys

import numpy as np

from .backend import device_of, get_array_module, kernels_for

_grad_enabled = True


def is_grad_enabled():
    return _grad_enabled


@contextlib.contextmanager
def no_grad():
    """Inside this block no graph is recorded (evaluation, optimizer updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def sum_to(g, shape):
    """Undo broadcasting: sum gradient `g` over the axes that broadcasting added or stretched to reach it from `shape`."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1)
    g = g.sum(axis=axes, keepdims=True)
    if lead:
        g = g.reshape(g.shape[lead:])
    return g.reshape(shape)


class Function:
    """One differentiable operation. Subclasses implement forward(*arrays) and backward(grad_output).

    backward returns one gradient per input (a tuple, or a single array for one input);
    None means "no gradient for this input". Arrays needed by backward are kept on `self`.
    """

    inputs = None
    freed = False

    def __call__(self, *inputs):
        Tensor = _tensor_module().Tensor
        if all(isinstance(x, Tensor) for x in inputs):  # the usual case, every step of training: no conversions
            args = inputs
        else:
            like = next((x for x in inputs if isinstance(x, Tensor)), None)
            args = tuple(x if isinstance(x, Tensor) else _tensor_module().as_tensor(x, like=like) for x in inputs)
        arrays = [t.data for t in args]
        if len({type(a) for a in arrays}) > 1:  # array types differ: maybe devices too
            devices = [device_of(a) for a in arrays]
            if len(set(devices)) > 1:
                listed = ", ".join(f"input {i} on {d}" for i, d in enumerate(devices))
                raise RuntimeError(
                    f"{type(self).__name__}: expected all tensors on the same device, got {listed}; "
                    "move them with .to('cpu') or .to('gpu') first")
        out = self.forward(*arrays)
        if isinstance(out, np.generic):  # a full reduction gives a NumPy scalar: keep its dtype (float64 stays float64)
            out = np.asarray(out)
        needs = tuple(t.requires_grad for t in args)
        result = Tensor._wrap(out, _grad_enabled and any(needs))
        if result.requires_grad:
            self.inputs = args
            self.needs_input_grad = needs
            result._ctx = self
        return result

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError

    def release(self):
        """Drop the inputs and everything saved for backward: the graph through this node is freed."""
        needs = self.__dict__.get("needs_input_grad")
        self.__dict__.clear()
        self.freed = True
        self.inputs = None
        if needs is not None:
            self.needs_input_grad = needs


_tensor = None


def _tensor_module():
    """minicnn.tensor, imported on first use (it imports this module)."""
    global _tensor
    if _tensor is None:  # by its full name: the package also exports a function called `tensor`
        import importlib
        _tensor = importlib.import_module(__package__ + ".tensor")
    return _tensor


def backward(root, grad=None, retain_graph=False):
    """Back-propagate from tensor `root`, accumulating d(root)/d(leaf) into every leaf's `.grad`."""
    xp = get_array_module(root.data)
    if not root.requires_grad:
        raise RuntimeError("backward() called on a tensor that does not require grad "
                           "(no input of the computation had requires_grad=True)")
    if grad is None:
        if root.data.size != 1:
            raise RuntimeError(
                f"backward() without a gradient needs a scalar output, but the output has shape "
                f"{tuple(root.shape)}; pass grad= with that shape, or reduce it (e.g. .sum()) first")
        grad = xp.ones_like(root.data)
    else:
        from .tensor import Tensor
        if isinstance(grad, Tensor):  # not getattr(grad, "data"): a NumPy array's .data is a memoryview
            grad = grad.data
        if tuple(grad.shape) != tuple(root.shape):
            raise ValueError(f"grad has shape {tuple(grad.shape)} but the output has shape {tuple(root.shape)}")
    order = _topological_order(root)
    grads = {id(root): grad}
    into = ([], [])  # (existing .grad arrays, gradients to add into them): added in one call at the end
    for t in reversed(order):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        ctx = t._ctx
        if ctx is None or t._retains_grad:
            _accumulate(t, g, into)
        if ctx is None:
            continue
        gxs = ctx.backward(g)
        if not isinstance(gxs, tuple):
            gxs = (gxs,)
        for inp, gx, need in zip(ctx.inputs, gxs, ctx.needs_input_grad):
            if not need or gx is None:
                continue
            if gx.shape != inp.data.shape:
                gx = sum_to(gx, inp.data.shape)
            key = id(inp)
            grads[key] = grads[key] + gx if key in grads else gx
        gxs = gx = None   # held only by `grads` now: a leaf's gradient can become its .grad uncopied (_held_only_here)
        if not retain_graph:
            ctx.release()
    if into[0]:
        kernels_for(into[0][0]).accumulate_grads(*into)  # one launch on the GPU for every parameter


def _held_only_here(g):
    """True when g owns its memory and the only references to it are backward's loop variable, _accumulate's argument,
    this function's argument and getrefcount's: no view of it, no other tensor's gradient, not the caller's `grad`.
    Such a gradient (a Function's fresh output) can become .grad without a copy: on eip4's 26x26 layer, with x a
    leaf as in benchmarks/conv_bench.py, the copy of gx was a tenth of the backward."""
    return g.base is None and sys.getrefcount(g) <= 4


def _topological_order(root):
    """Tensors reachable from root, each after all tensors it depends on (iterative depth-first search)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        ctx = t._ctx
        if ctx is not None:
            if ctx.freed:
                raise RuntimeError(
                    "trying to backward through the graph a second time: its saved arrays were freed by the "
                    "first backward(); call backward(retain_graph=True) the first time if you need to")
            for inp in ctx.inputs:
                if inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    return order


def _accumulate(t, g, into):
    """Add gradient g into t.grad: when t has none yet, a copy, or for a leaf g itself if nothing else holds it (as
    PyTorch does; an intermediate's g goes on into its Function's backward); else in place (it may be a view into
    the optimizer's flat buffer), deferred to the end of backward through the lists `into`."""
    if g.dtype != t.data.dtype:
        g = g.astype(t.data.dtype)
    if t.grad is None:
        t.grad = g if t._ctx is None and _held_only_here(g) else get_array_module(g).array(g, copy=True)
    else:
        into[0].append(t.grad)
        into[1].append(g)

"""The optimizer base: all parameters live in one flat buffer (each Parameter a view into it), so one kernel updates the model.

    flat_data = [ conv1.weight | conv1.bias | bn1.weight | ... ]   p.data = a reshaped view of its slice
    flat_grad = [ same layout ]                                    p.grad = a view; backward adds into it
One update is one call of a kernel over the flat vectors (one launch on the GPU, not one per tensor).
Create the optimizer after moving the model to its device.
"""
from ..backend import device_of, get_array_module, to_device


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
        self.lr = float(state["lr"])
        self.step_count = int(state["step_count"])
        for name in self._state_names:
            buf = getattr(self, name)
            if tuple(state[name].shape) != tuple(buf.shape):
                raise ValueError(f"optimizer state {name} has shape {tuple(state[name].shape)}, expected {tuple(buf.shape)}")
            buf[...] = to_device(state[name], device_of(buf))

"""The Tensor: an array (NumPy or CuPy) plus what autograd needs: requires_grad, grad, and the Function that made it."""
import numpy as np

from . import autograd
from .backend import device_of, get_array_module, to_device

_FLOAT_KINDS = "f"


class Tensor:
    """A multi-dimensional array that remembers how it was computed.

    `data` is the raw array (numpy.ndarray on the CPU, cupy.ndarray on the GPU); `grad` is a raw
    array of the same shape, filled by `backward()` for tensors with requires_grad=True that no
    operation produced (leaves, such as parameters). Python numbers and lists become float32.
    """

    __array_priority__ = 1000  # numpy_array + tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        xp = get_array_module(data)
        if not isinstance(data, xp.ndarray):
            arr = np.asarray(data)
            if dtype is None and arr.dtype.kind == "f":
                dtype = np.float32
            data = arr
        if dtype is not None and data.dtype != dtype:
            data = data.astype(dtype)
        if requires_grad:
            _check_float(data)
        self.data = data
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None
        self._retains_grad = False

    @classmethod
    def _wrap(cls, data, requires_grad):
        """A tensor around the array an operation just returned: no conversion, only the float check."""
        if requires_grad:
            _check_float(data)
        t = object.__new__(cls)
        t.data, t.requires_grad, t.grad, t._ctx, t._retains_grad = data, requires_grad, None, None, False
        return t

    # ---- array facts -------------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)  # a tuple already, for NumPy and CuPy arrays
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: int(self.data.size))
    device = property(lambda self: device_of(self.data))
    is_leaf = property(lambda self: self._ctx is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='gpu'" if self.device == "gpu" else ""
        return f"Tensor({self.numpy()!r}{dev}{grad})".replace("\n", "\n       ")

    def numpy(self):
        """The data as a NumPy array (copied to the host when it lives on the GPU)."""
        return to_device(self.data, "cpu")

    def item(self):
        return self.numpy().item()

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def to(self, device):
        """This tensor on 'cpu' or 'gpu' (itself when already there); the copy is a new leaf."""
        data = to_device(self.data, device)
        if data is self.data:
            return self
        t = Tensor(data, requires_grad=self.requires_grad)
        if self.grad is not None:
            t.grad = to_device(self.grad, device)
        return t

    def retain_grad(self):
        """Keep .grad on this non-leaf tensor after backward (leaves always keep theirs)."""
        self._retains_grad = True
        return self

    def zero_grad(self):
        self.grad = None

    def backward(self, grad=None, retain_graph=False):
        """d(self)/d(leaf) into every leaf's .grad; grad is needed unless self holds one number."""
        autograd.backward(self, grad, retain_graph)

    # ---- operators, defined in minicnn.functional ------------------------------------------
    def __add__(self, other): return F().add(self, other)
    def __radd__(self, other): return F().add(other, self)
    def __sub__(self, other): return F().sub(self, other)
    def __rsub__(self, other): return F().sub(other, self)
    def __mul__(self, other): return F().mul(self, other)
    def __rmul__(self, other): return F().mul(other, self)
    def __truediv__(self, other): return F().div(self, other)
    def __rtruediv__(self, other): return F().div(other, self)
    def __neg__(self): return F().neg(self)
    def __pow__(self, exponent): return F().pow(self, exponent)
    def __matmul__(self, other): return F().matmul(self, other)
    def __rmatmul__(self, other): return F().matmul(other, self)
    def __getitem__(self, key): return F().getitem(self, key)

    def sum(self, axis=None, keepdims=False): return F().sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return F().mean(self, axis, keepdims)
    def reshape(self, *shape): return F().reshape(self, *shape)
    def transpose(self, *axes): return F().transpose(self, *axes)
    def flatten(self, start_dim=1): return F().flatten(self, start_dim)
    def exp(self): return F().exp(self)
    def log(self): return F().log(self)
    def relu(self): return F().relu(self)

    @property
    def T(self):
        return F().transpose(self)


def _check_float(data):
    if data.dtype.kind not in _FLOAT_KINDS:
        raise TypeError(f"only floating-point tensors can require grad, got dtype {data.dtype}")


def F():
    from . import functional
    return functional


def as_tensor(x, like=None):
    """x as a Tensor; Python numbers take the dtype and device of `like` (so 2 * float32 stays float32)."""
    if isinstance(x, Tensor):
        return x
    if like is not None and np.isscalar(x):
        xp = get_array_module(like.data)
        return Tensor(xp.asarray(x, dtype=like.dtype))
    return Tensor(x)


def tensor(data, requires_grad=False, dtype=None, device="cpu"):
    """Make a tensor from a list, number or array (floats default to float32)."""
    t = Tensor(data, requires_grad=requires_grad, dtype=dtype)
    return t.to(device) if device != "cpu" else t

"""Seeded randomness: one generator per device, reset by manual_seed, so runs repeat exactly."""
import numpy as np

from .backend import cupy_module, is_gpu_array

_seed = 0
_generators = {}


def manual_seed(seed):
    """Seed every default generator (dropout masks, weight initialisation, shuffling defaults)."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def new_generator(seed, device="cpu"):
    """A fresh generator on 'cpu' (numpy.random.Generator) or 'gpu' (cupy.random.Generator)."""
    if device == "gpu":
        return cupy_module().random.default_rng(seed)
    return np.random.default_rng(seed)


def default_generator(like=None):
    """The default generator of the device that array `like` lives on."""
    device = "gpu" if like is not None and is_gpu_array(like) else "cpu"
    if device not in _generators:
        _generators[device] = new_generator(_seed, device)
    return _generators[device]


def get_state():
    """The state of the CPU default generator (what a checkpoint needs to repeat the same dropout masks)."""
    return default_generator().bit_generator.state


def set_state(state):
    default_generator().bit_generator.state = state

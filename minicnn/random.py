"""Seeded randomness: one NumPy generator on the host, reset by manual_seed, so runs repeat exactly on any device.

Weights are drawn on the host and copied to their device; dropout draws only a 64-bit key per call
here and hashes it on the device (kernels/dropout.py). So one host generator serves the CPU and the
GPU alike, and its state -- all a checkpoint needs to repeat a run -- is a small dict.
"""
import contextlib

import numpy as np

_seed = 0
_generator = None   # created from _seed on first use
_observers = []     # callbacks of the open observing_keys blocks


def manual_seed(seed):
    """Seed the default generator (weight initialisation, dropout keys)."""
    global _seed, _generator
    _seed, _generator = int(seed), None


def default_generator():
    """The default numpy.random.Generator, created from the last manual_seed on first use."""
    global _generator
    if _generator is None:
        _generator = np.random.default_rng(_seed)
    return _generator


def draw_key(generator):
    """One 64-bit integer from a numpy.random.Generator (a dropout call's only draw: kernels/dropout.py)."""
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"dropout keys come from a numpy.random.Generator, got "
                        f"{type(generator).__module__}.{type(generator).__name__}")
    # the generator's next raw 64-bit output: the number generator.integers(0, 2**64, dtype=np.uint64) returns
    # (tests/test_norm.py checks), at a fifth of its host time -- a training step draws one key per dropout layer
    key = int(generator.bit_generator.random_raw())
    for observe in _observers:
        observe(generator, key)
    return key


@contextlib.contextmanager
def observing_keys(callback):
    """Inside this block, callback(generator, key) runs after every draw_key (a CUDA graph recording watches the
    draws of the step it records, to make the same draws before each replay: minicnn/cuda_graph.py)."""
    _observers.append(callback)
    try:
        yield
    finally:
        _observers.remove(callback)


def get_state():
    """The state of the default generator (what a checkpoint needs to repeat the same dropout masks)."""
    return default_generator().bit_generator.state


def set_state(state):
    default_generator().bit_generator.state = state

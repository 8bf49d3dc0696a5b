"""Fixtures shared by the tests; the helper functions live in support/ (helpers.py, cuda_host.py).

The tests mirror the layout: tests/test_*.py test the engine (minicnn/), tests/kernels/ the kernels (kernels/),
tests/kernels/cpu_fast/ the CPU fast path and tests/kernels/gpu/ the CUDA kernels (emulated on the host, and on
a GPU where there is one).
"""
import os
import signal
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's name, so each test is reproducible on its own."""
    seed = sum(map(ord, request.node.name)) % (2 ** 32)
    return np.random.default_rng(seed)


@pytest.fixture
def example():
    """examples/mnist.py as a module; the SIGINT handler its main() installs is undone."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
    try:
        import mnist
    finally:
        sys.path.pop(0)
    handler = signal.getsignal(signal.SIGINT)
    yield mnist
    signal.signal(signal.SIGINT, handler)

"""Fixtures shared by the tests; the helper functions live in helpers.py."""
import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's name, so each test is reproducible on its own."""
    seed = sum(map(ord, request.node.name)) % (2 ** 32)
    return np.random.default_rng(seed)

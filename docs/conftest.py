"""The lessons' code blocks run as doctests: pytest --doctest-glob="*.md" docs.

Each page sets its own NumPy print options and seeds (so a reader can copy its snippets into a fresh
Python); this fixture only puts the previous NumPy print options and minicnn's default random generator
back afterwards, so no page changes what the tests that run after it print or draw.
"""
import numpy as np
import pytest

import minicnn.random as mrandom


@pytest.fixture(autouse=True)
def _restore_global_state():
    options = np.get_printoptions()
    seed = mrandom._seed
    cpu_state = mrandom.get_state() if mrandom._generator is not None else None
    yield
    np.set_printoptions(**options)
    mrandom.manual_seed(seed)
    if cpu_state is not None:
        mrandom.set_state(cpu_state)

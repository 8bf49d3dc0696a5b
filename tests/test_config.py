"""minicnn.config: the user's choices as one frozen object, changed only inside `using` blocks."""
import dataclasses
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import minicnn.functional as F
from minicnn import Tensor, config
from minicnn.backend import kernels_for


def test_defaults():
    c = config.current()
    assert (c.conv, c.gemm, c.fuse) == ("auto", "gemm", True)
    assert c.kernels in config.CPU_KERNELS


def test_using_changes_the_configuration_inside_the_block_only_and_nests():
    before = config.current()
    with config.using(conv="im2col", fuse=False) as inside:
        assert config.current() is inside and (inside.conv, inside.fuse) == ("im2col", False)
        with config.using(conv="direct"):
            assert (config.current().conv, config.current().fuse) == ("direct", False)
        assert config.current().conv == "im2col"
    assert config.current() == before


def test_using_restores_the_configuration_after_an_error():
    before = config.current()
    with pytest.raises(RuntimeError):
        with config.using(conv="wide"):
            raise RuntimeError("boom")
    assert config.current() == before


def test_a_configuration_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.current().conv = "im2col"


@pytest.mark.parametrize("change, message", [
    (dict(conv="winograd"), "config: conv='winograd' is not one of auto, im2col, pointwise"),
    (dict(gemm="blas"), "config: gemm='blas' is not one of gemm, cupy"),
    (dict(kernels="c"), "config: kernels='c' is not one of numba, numpy"),
])
def test_bad_values_are_refused_naming_the_choices(change, message):
    with pytest.raises(ValueError, match=message):
        with config.using(**change):
            pass


def test_unknown_fields_are_refused():
    with pytest.raises(TypeError, match="config.using: unknown field.s. algorithm; the fields are conv, gemm, fuse"):
        with config.using(algorithm="im2col"):
            pass
    with pytest.raises(TypeError, match="fuse must be True or False, got 'no'"):
        config.Config(fuse="no")


def test_the_choice_is_per_thread():
    """A `using` block in one thread does not change what another thread sees."""
    seen = []
    with config.using(conv="im2col"):
        worker = threading.Thread(target=lambda: seen.append(config.current().conv))
        worker.start()
        worker.join()
    assert seen == ["auto"]


def test_kernels_choice_picks_the_cpu_backend():
    from minicnn.kernels import cpu, numpy_backend
    with config.using(kernels="numpy"):
        assert kernels_for(np.zeros(1)) is numpy_backend
    with config.using(kernels="numba"):
        assert kernels_for(np.zeros(1)) is cpu


def test_minicnn_kernels_environment_variable_sets_the_default():
    code = "from minicnn import config; print(config.current().kernels)"
    for value in ("numpy", "numba"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "MINICNN_KERNELS": value})
        assert out.stdout.strip() == value
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "MINICNN_KERNELS": "fortran"})
    assert bad.returncode != 0 and "MINICNN_KERNELS='fortran': choose one of numba, numpy" in bad.stderr


def test_without_numba_the_default_is_the_numpy_backend():
    code = "import sys; sys.modules['numba'] = None; from minicnn import config; print(config.current().kernels)"
    env = {k: v for k, v in os.environ.items() if k != "MINICNN_KERNELS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "numpy"


def test_the_configured_algorithm_is_the_one_that_runs(rng):
    x, w = rng.standard_normal((2, 8, 9, 9)), rng.standard_normal((16, 8, 3, 3))
    names = {}
    for conv in ("auto", "im2col", "direct", "wide"):
        with config.using(conv=conv, kernels="numba"):
            names[conv] = F.conv2d_algorithm(x.shape, w.shape, padding=1, dtype=x.dtype)
            y = F.conv2d(Tensor(x), Tensor(w), padding=1)
        np.testing.assert_allclose(y.data, F.conv2d_reference(x, w, padding=1), rtol=1e-10, atol=1e-12)
    assert names == {"auto": "direct", "im2col": "im2col", "direct": "direct", "wide": "wide"}


def test_set_num_threads_goes_through_the_backend():
    import numba
    from minicnn import backend
    before = numba.get_num_threads()
    try:
        assert backend.set_num_threads(1) == 1 == numba.get_num_threads()
        with config.using(kernels="numpy"):
            assert backend.set_num_threads(1) is None   # plain NumPy has no threads of its own
    finally:
        numba.set_num_threads(before)

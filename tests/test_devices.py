"""Devices: tensors and modules move between the CPU and a GPU, a mixed-device op names both devices, and asking for
a GPU without one is one clear error."""
import importlib

import numpy as np
import pytest

import minicnn.backend as backend
import minicnn.functional as F
from minicnn import Tensor, nn
from gpu_checks import GPU_REASON, cp, gpu_test, host, to_gpu  # noqa: F401


@pytest.mark.skipif(GPU_REASON is None, reason="a GPU works on this machine: the no-GPU error cannot be seen here")
def test_asking_for_the_gpu_without_one_raises_a_clear_error():
    for ask in (lambda: Tensor([1.0, 2.0]).to("gpu"), lambda: nn.Linear(2, 3).to("gpu"),
                lambda: importlib.import_module("minicnn.kernels.gpu")):
        with pytest.raises(RuntimeError) as info:
            ask()
        message = str(info.value)
        if backend.cupy_module() is None:
            assert "CuPy is not installed" in message, message
            assert ".[gpu]" in message and "gpu extra" in message, message
        else:
            assert "CUDA device" in message, message


@gpu_test
def test_tensor_to_gpu_and_back_round_trips():
    a = np.random.default_rng(14).standard_normal((3, 4)).astype(np.float32)
    t = Tensor(a, requires_grad=True)
    t.grad = np.ones_like(a)
    g = t.to("gpu")
    assert g.device == "gpu" and isinstance(g.data, cp.ndarray) and g.requires_grad and g.is_leaf
    assert isinstance(g.grad, cp.ndarray)
    assert g.to("gpu") is g and t.to("cpu") is t
    back = g.to("cpu")
    assert back.device == "cpu" and isinstance(back.data, np.ndarray)
    np.testing.assert_array_equal(back.data, a)
    np.testing.assert_array_equal(back.grad, np.ones_like(a))
    np.testing.assert_array_equal(g.numpy(), a)
    assert Tensor([1.0]).to("cuda").device == "gpu"


@gpu_test
def test_module_to_moves_parameters_and_buffers_in_place():
    from minicnn.models import eip4
    model = eip4()
    params = model.parameters()
    state = model.state_dict()
    assert model.to("gpu") is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(isinstance(p.data, cp.ndarray) for p in model.parameters())
    assert all(isinstance(b.data, cp.ndarray) for _, b in model.named_buffers())
    assert model.device == "gpu"
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    model.to("cpu")
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters()) and model.device == "cpu"


@gpu_test
def test_an_op_on_tensors_of_two_devices_raises_naming_both():
    a, b = Tensor(np.ones(3, np.float32)), Tensor(cp.ones(3, np.float32))
    for op in (lambda: a + b, lambda: b * a, lambda: F.conv2d(Tensor(cp.ones((1, 1, 3, 3), np.float32)),
                                                               Tensor(np.ones((1, 1, 2, 2), np.float32)))):
        with pytest.raises(RuntimeError) as info:
            op()
        message = str(info.value)
        assert "cpu" in message and "gpu" in message, message

"""The autograd engine: graph order, accumulation, broadcasting, no_grad, freed graphs, dtypes, error messages."""
import sys

import numpy as np
import pytest

import minicnn
import minicnn.functional as F
from minicnn import Tensor, no_grad
from minicnn.autograd import Function, sum_to


def leaf(values, dtype=np.float64):
    return Tensor(np.array(values, dtype=dtype), requires_grad=True)


def test_long_chain_backprops_without_recursion():
    # 5,000 ops is far deeper than Python's recursion limit (1,000 by default): a recursive walk would fail.
    assert sys.getrecursionlimit() < 5000
    x = leaf([1.0, 2.0])
    y = x
    for _ in range(2500):
        y = y * 1.0001
        y = y + 0.5
    F.sum(y).backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 2500] * 2, rtol=1e-12)


def test_node_is_processed_after_all_its_consumers():
    # a feeds b and c, and c also feeds d through b: every path's contribution must arrive before a's backward.
    x = leaf([3.0])
    a = x * x          # 9,      da/dx = 2x
    b = a * 2.0        # 2a
    c = a + b          # 3a
    d = c * b          # 6a^2,   dd/da = 12a
    d.backward(np.ones(1))
    np.testing.assert_allclose(x.grad, [12 * 9.0 * 2 * 3.0])


def test_gradients_accumulate_across_two_backward_calls():
    x = leaf([1.0, -2.0, 3.0])
    F.sum(x * x).backward()      # 2x
    F.sum(x * 3.0).backward()    # 3
    np.testing.assert_allclose(x.grad, 2 * x.data + 3.0)


def test_zero_grad_clears_the_accumulated_gradient():
    x = leaf([1.0, 2.0])
    F.sum(x * x).backward()
    x.zero_grad()
    F.sum(x * 5.0).backward()
    np.testing.assert_allclose(x.grad, [5.0, 5.0])


@pytest.mark.parametrize("shape_a, shape_b", [((3, 1), (1, 4)), ((5,), (2, 5)), ((2, 5), (5,)), ((), (2, 3)),
                                              ((4, 1, 3), (2, 1))])
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_broadcast_gradient_is_summed_back_to_each_input_shape(shape_a, shape_b, op, rng):
    a_np = rng.uniform(1.0, 2.0, shape_a)
    b_np = rng.uniform(1.0, 2.0, shape_b)
    a, b = Tensor(a_np, requires_grad=True), Tensor(b_np, requires_grad=True)
    out = getattr(F, op)(a, b)
    R = rng.standard_normal(out.shape)
    F.sum(out * R).backward()
    assert a.grad.shape == shape_a and b.grad.shape == shape_b
    # d out / d a and d out / d b, written out on the broadcast shape, then summed over the broadcast axes
    A, B = np.broadcast_arrays(a_np, b_np)
    da, db = {"add": (1, 1), "sub": (1, -1), "mul": (B, A), "div": (1 / B, -A / B ** 2)}[op]
    np.testing.assert_allclose(a.grad, sum_to(R * da * np.ones_like(A), shape_a), rtol=1e-12)
    np.testing.assert_allclose(b.grad, sum_to(R * db * np.ones_like(B), shape_b), rtol=1e-12)


def test_sum_to_undoes_broadcasting_by_summing():
    g = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(sum_to(g, (3, 1)), g.sum(axis=(0, 2)).reshape(3, 1))
    np.testing.assert_array_equal(sum_to(g, (4,)), g.sum(axis=(0, 1)))
    np.testing.assert_array_equal(sum_to(g, ()), g.sum())
    np.testing.assert_array_equal(sum_to(g, (1, 3, 4)), g.sum(axis=0, keepdims=True))


def test_no_grad_records_nothing_and_restores_the_mode():
    x = leaf([1.0, 2.0])
    with no_grad():
        assert not minicnn.is_grad_enabled()
        y = x * 2.0 + 1.0
    assert minicnn.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf and y._ctx is None
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert minicnn.is_grad_enabled(), "an exception inside no_grad() must not leave grad recording off"


def test_backward_of_non_scalar_without_grad_is_a_clear_error():
    y = leaf([1.0, 2.0]) * 2.0
    with pytest.raises(RuntimeError, match=r"scalar output.*shape \(2,\)"):
        y.backward()


def test_backward_with_grad_of_wrong_shape_is_an_error():
    y = leaf([1.0, 2.0]) * 2.0
    with pytest.raises(ValueError, match=r"grad has shape \(3,\) but the output has shape \(2,\)"):
        y.backward(np.ones(3))


def test_backward_with_explicit_grad_weights_the_output():
    x = leaf([1.0, 2.0, 3.0])
    (x * x).backward(np.array([1.0, 10.0, 100.0]))
    np.testing.assert_allclose(x.grad, [2.0, 40.0, 600.0])


def test_backward_on_tensor_that_needs_no_grad_is_an_error():
    y = Tensor(np.ones(2)) * 2.0
    with pytest.raises(RuntimeError, match="does not require grad"):
        F.sum(y).backward()


def test_second_backward_through_freed_graph_is_a_clear_error():
    x = leaf([1.0, 2.0])
    loss = F.sum(x * x)
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time.*retain_graph=True"):
        loss.backward()


def test_second_backward_through_a_shared_freed_subgraph_is_an_error():
    x = leaf([1.0, 2.0])
    h = x * x
    F.sum(h * 2.0).backward()
    with pytest.raises(RuntimeError, match="second time"):
        F.sum(h * 3.0).backward()   # new head, but h's node was freed by the first backward


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    loss = F.sum(x * x * x)
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * 3 * x.data ** 2)


def test_tensor_used_twice_gets_both_contributions():
    x = leaf([1.5, -2.0])
    F.sum(x * x).backward()
    np.testing.assert_allclose(x.grad, 2 * x.data)
    y = leaf([1.5, -2.0])
    F.sum(y + y + y).backward()
    np.testing.assert_allclose(y.grad, [3.0, 3.0])


def test_retain_grad_keeps_the_gradient_of_an_intermediate_tensor():
    x = leaf([1.0, 2.0])
    h = (x * 3.0).retain_grad()
    F.sum(h * h).backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)
    np.testing.assert_allclose(x.grad, 6 * h.data)


def test_input_without_requires_grad_gets_no_gradient():
    x, c = leaf([1.0, 2.0]), Tensor(np.array([3.0, 4.0]))
    F.sum(x * c).backward()
    assert c.grad is None
    np.testing.assert_allclose(x.grad, [3.0, 4.0])


@pytest.mark.parametrize("make", [lambda x: 2 * x, lambda x: x * 2, lambda x: x + 1.5, lambda x: 1.5 - x,
                                  lambda x: x / 3, lambda x: 3 / x, lambda x: x ** 2, lambda x: -x,
                                  lambda x: x * np.float64(2.0), lambda x: np.float64(2.0) * x])
def test_python_scalars_keep_float32(make):
    x = Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    y = make(x)
    assert isinstance(y, Tensor) and y.dtype == np.float32
    F.sum(y).backward()
    assert x.grad.dtype == np.float32


def test_python_lists_become_float32_and_float64_arrays_stay_float64():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert minicnn.tensor([[1.5]]).dtype == np.float32
    assert Tensor(np.zeros(2)).dtype == np.float64


@pytest.mark.parametrize("reduce", [F.sum, F.mean, lambda t: t[0, 1], lambda t: F.sum(t, axis=(0, 1))])
def test_float64_reductions_to_a_scalar_stay_float64(reduce):
    # NumPy returns a NumPy scalar for a full reduction; it must not be narrowed to float32 on its way into a Tensor.
    x = Tensor(np.array([[1.0, 2.0], [3.0, 1e-9]]), requires_grad=True)
    assert reduce(x).dtype == np.float64


def test_float64_loss_keeps_its_precision():
    x = Tensor(np.array([[1.0 + 1e-12, 1.0]]), requires_grad=True)
    loss = F.cross_entropy(x, np.array([0]))
    assert loss.dtype == np.float64
    expected = np.log(np.exp(1e-12) + 1.0) - 1e-12
    assert abs(loss.item() - expected) < 1e-15


def test_requires_grad_on_an_int_tensor_is_a_type_error():
    with pytest.raises(TypeError, match="floating-point.*int64"):
        Tensor(np.array([1, 2, 3]), requires_grad=True)
    with pytest.raises(TypeError, match="floating-point"):
        minicnn.tensor([1, 2], requires_grad=True)


def test_detach_cuts_the_graph():
    x = leaf([1.0, 2.0])
    d = (x * 2.0).detach()
    assert not d.requires_grad and d.is_leaf
    np.testing.assert_array_equal(d.data, [2.0, 4.0])


def test_a_fresh_leaf_gradient_becomes_grad_without_a_copy():
    """A Function's fresh output that nothing else holds is handed to the leaf, as PyTorch does (no copy of gx)."""
    made = []

    class Double(Function):
        def forward(self, x):
            return x * 2

        def backward(self, gy):
            g = gy * 2
            made.append(id(g))
            return g

    x = leaf([1.0, 2.0])
    Double()(x).backward(np.ones(2))
    assert id(x.grad) == made[0]
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])


def test_a_gradient_held_elsewhere_is_copied():
    """Shared by two leaves, passed in by the caller, or a read-only broadcast view: each .grad its own writable array."""
    a, b = leaf([1.0, 2.0, 3.0]), leaf([4.0, 5.0, 6.0])
    g = np.array([1.0, 2.0, 3.0])
    (a + b).backward(g)
    assert a.grad is not b.grad and a.grad is not g and b.grad is not g
    g[:] = 0
    a.grad += 1
    np.testing.assert_array_equal(b.grad, [1.0, 2.0, 3.0])
    x = leaf(np.ones((2, 3)))
    F.sum(F.reshape(x, 6)).backward()   # sum's backward broadcasts: a read-only view
    assert x.grad.flags.writeable and x.grad.flags.owndata
    x.grad += 1
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 2.0))


def test_a_retained_intermediate_gradient_is_copied():
    """An intermediate's gradient goes on into its Function's backward: its .grad must not be that same array."""
    seen = []

    class Record(Function):
        def forward(self, x):
            return x.copy()

        def backward(self, gy):
            seen.append(id(gy))
            return gy * 1.0

    x = leaf([1.0, -2.0])
    y = Record()(x)
    y.retain_grad()
    F.sum(y * 3.0).backward()
    assert id(y.grad) != seen[0]
    np.testing.assert_array_equal(y.grad, [3.0, 3.0])

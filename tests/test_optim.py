"""Optimizers on the flat parameter buffer, and the learning-rate schedules."""
import numpy as np
import pytest

from minicnn import nn, optim
from minicnn.nn import Parameter


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal((3, 4)).astype(np.float32)),
            Parameter(rng.standard_normal(5).astype(np.float32))]


def run(opt_factory, grads_seq, seed=0):
    params = make_params(seed)
    opt = opt_factory(params)
    for grads in grads_seq:
        opt.zero_grad()
        for p, g in zip(params, grads):
            p.grad += g
        opt.step()
    return [p.data.copy() for p in params], opt


def grad_sequence(steps=5, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
            for _ in range(steps)]


def adam_reference(params, grads_seq, lr, b1, b2, eps, wd=0.0, decoupled=False):
    params = [p.astype(np.float64) for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_seq, start=1):
        for i, g in enumerate(grads):
            g = g.astype(np.float64)
            if decoupled:
                params[i] = params[i] - lr * wd * params[i]
            else:
                g = g + wd * params[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            mhat, vhat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            params[i] = params[i] - lr * mhat / (np.sqrt(vhat) + eps)
    return params


@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_adam_and_adamw_match_the_update_rule(wd, decoupled):
    grads = grad_sequence()
    cls = optim.AdamW if decoupled else optim.Adam
    got, _ = run(lambda ps: cls(ps, lr=0.01, betas=(0.9, 0.99), eps=1e-7, weight_decay=wd), grads)
    want = adam_reference([p.data for p in make_params()], grads, 0.01, 0.9, 0.99, 1e-7, wd, decoupled)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.01), (0.9, True, 0.0)])
def test_sgd_matches_the_update_rule(momentum, nesterov, wd):
    grads = grad_sequence()
    got, _ = run(lambda ps: optim.SGD(ps, lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd), grads)
    params = [p.data.astype(np.float64) for p in make_params()]
    bufs = [np.zeros_like(p) for p in params]
    for step in grads:
        for i, g in enumerate(step):
            g = g + wd * params[i]
            if momentum:
                bufs[i] = momentum * bufs[i] + g
                g = g + momentum * bufs[i] if nesterov else bufs[i]
            params[i] = params[i] - 0.1 * g
    for g, w in zip(got, params):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_adam_matches_torch_when_installed():
    torch = pytest.importorskip("torch", reason="PyTorch not installed: skipping the comparison with torch.optim")
    grads = grad_sequence()
    got, _ = run(lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.05), grads)
    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for p in make_params()]
    topt = torch.optim.AdamW(tparams, lr=0.01, weight_decay=0.05)
    for step in grads:
        for p, g in zip(tparams, step):
            p.grad = torch.tensor(g)
        topt.step()
    for g, t in zip(got, tparams):
        np.testing.assert_allclose(g, t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_parameters_become_views_of_one_flat_buffer():
    params = make_params()
    before = [p.data.copy() for p in params]
    opt = optim.Adam(params)
    assert opt.flat_data.size == 12 + 5
    for p, b in zip(params, before):
        assert np.shares_memory(p.data, opt.flat_data) and np.array_equal(p.data, b)
        assert np.shares_memory(p.grad, opt.flat_grad)


def test_backward_accumulates_into_the_flat_gradient_buffer():
    layer = nn.Linear(3, 2)
    opt = optim.SGD(layer.parameters(), lr=0.1)
    x = np.ones((4, 3), np.float32)
    from minicnn import Tensor
    layer(Tensor(x)).sum().backward()
    np.testing.assert_allclose(opt.flat_grad[-2:], [4.0, 4.0])  # d sum / d bias = batch size
    opt.zero_grad()
    assert not opt.flat_grad.any() and np.shares_memory(layer.bias.grad, opt.flat_grad)


def test_a_gradient_reset_to_none_is_folded_back_into_the_buffer():
    params = make_params()
    opt = optim.SGD(params, lr=1.0)
    params[1].grad = None           # e.g. model.zero_grad() in PyTorch style
    params[0].grad = np.ones((3, 4), np.float32)  # a new array instead of the view
    before = params[0].data.copy()
    opt.step()
    np.testing.assert_allclose(params[0].data, before - 1.0)
    assert np.shares_memory(params[0].grad, opt.flat_grad)


def test_replacing_parameter_arrays_after_creating_the_optimizer_is_an_error():
    params = make_params()
    opt = optim.Adam(params)
    params[0].data = params[0].data.copy()
    with pytest.raises(RuntimeError, match="create the optimizer after moving the model"):
        opt.step()


def test_optimizer_state_round_trip_continues_identically():
    grads = grad_sequence(6)
    full, _ = run(lambda ps: optim.Adam(ps, lr=0.01), grads)
    first, opt = run(lambda ps: optim.Adam(ps, lr=0.01), grads[:3])
    state = opt.state_dict()
    params = make_params()
    for p, v in zip(params, first):
        p.data[...] = v
    opt2 = optim.Adam(params, lr=0.5)
    opt2.load_state_dict(state)
    assert opt2.lr == 0.01 and opt2.step_count == 3
    for step in grads[3:]:
        opt2.zero_grad()
        for p, g in zip(params, step):
            p.grad += g
        opt2.step()
    for p, f in zip(params, full):
        np.testing.assert_array_equal(p.data, f)


def test_optimizer_argument_errors():
    with pytest.raises(ValueError, match="no parameters"):
        optim.Adam([])
    with pytest.raises(ValueError, match="learning rate must be positive, got -1"):
        optim.SGD(make_params(), lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(make_params(), lr=0.1, nesterov=True)


def test_inverse_time_decay_gives_the_course_values():
    opt = optim.Adam(make_params(), lr=0.003)
    sched = optim.InverseTimeDecay(opt, 0.319)
    lrs = [opt.lr] + [sched.step() for _ in range(19)]
    np.testing.assert_allclose(lrs[:3], [0.003, 0.0022744503, 0.0018315018], rtol=0, atol=1e-10)  # course rounds to 1e-10
    np.testing.assert_allclose(lrs[19], 0.000424869, rtol=1e-6)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_step_decay_and_schedule_state():
    opt = optim.Adam(make_params(), lr=0.01)
    sched = optim.StepDecay(opt, step_size=10, gamma=0.1)
    lrs = [opt.lr] + [sched.step() for _ in range(12)]
    np.testing.assert_allclose(lrs[9], 0.01)
    np.testing.assert_allclose(lrs[10], 0.001)
    opt2 = optim.Adam(make_params(), lr=0.01)
    sched2 = optim.StepDecay(opt2, step_size=10, gamma=0.1)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.lr == opt.lr


def test_one_cycle_warms_up_to_the_peak_then_anneals():
    opt = optim.SGD(make_params(), lr=0.1)
    sched = optim.OneCycle(opt, max_lr=0.1, total_steps=100, pct_start=0.3, div_factor=25, final_div_factor=1e4)
    lrs = [opt.lr] + [sched.step() for _ in range(99)]
    np.testing.assert_allclose(lrs[0], 0.1 / 25)
    assert int(np.argmax(lrs)) == 30 and np.isclose(max(lrs), 0.1)
    np.testing.assert_allclose(lrs[-1], 0.1 / 25 / 1e4, rtol=1e-6)
    assert all(a <= b for a, b in zip(lrs[:30], lrs[1:31])) and all(a >= b for a, b in zip(lrs[30:], lrs[31:]))

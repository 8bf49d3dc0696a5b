"""CUDA graphs (minicnn/cuda_graph.py) on a GPU: a step recorded once and replayed trains like eager steps; the Trainer
with cuda_graph=True equals eager training bit for bit; the values a recording would freeze are named."""
import copy

import numpy as np
import pytest

import minicnn
import minicnn.functional as F
from minicnn import Tensor, config
from gpu_checks import TRAIN_BUFFER_ATOL, TRAIN_RTOL, assert_close, gpu_test, host, to_gpu


def _sgd_eip4_pair(seed):
    from minicnn import optim
    from minicnn.models import eip4
    minicnn.manual_seed(seed)
    eager = eip4(dropout=0.0).to("gpu")
    graphed = copy.deepcopy(eager)
    return [(m, optim.SGD(m.parameters(), lr=0.01, momentum=0.9)) for m in (eager, graphed)]


def _train_step(model, opt):
    def step(x, y):
        loss = F.cross_entropy(model(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.data
    return step


@gpu_test


def test_gpu_training_step_replayed_from_a_cuda_graph_trains_like_eager_steps():
    """eip4 without dropout, SGD with momentum at a constant rate, the whole step (update included) captured:
    nothing is frozen, so every replay must do what the same step run eagerly does. Both multiply with gemm.cu
    (config gemm="gemm"), so the two run the same kernels and only the replay mechanics differ. Checked: the
    loss of each replay, and how far each parameter moved during the replays -- within 5% of the eager move (a
    replay that did not update, or used a stale batch or gradient, is off by the whole move). (An earlier
    version compared eager cuBLAS products with the graph's gemm.cu at TRAIN_BUFFER_ATOL and failed once on an
    H200: 2 of 144 first-layer weights 1.3e-3 apart after 7 steps at lr 0.01, losses still equal.)"""
    from minicnn.cuda_graph import CapturedStep
    with config.using(gemm="gemm"):
        (eager, opt_e), (graphed, opt_g) = _sgd_eip4_pair(0)
        rng = np.random.default_rng(5)
        batches = [(to_gpu(rng.random((32, 1, 28, 28), dtype=np.float32)), to_gpu(rng.integers(0, 10, 32)))
                   for _ in range(7)]
        eager_step = _train_step(eager, opt_e)
        captured = CapturedStep(_train_step(graphed, opt_g), warmup=2, strict=True)
        for xb, yb in batches[:2]:  # the warm-up calls: eager steps on both sides
            eager_step(xb, yb)
            captured(xb, yb)
        assert captured.graph is None
        start = {n: host(p.data).copy() for n, p in eager.named_parameters()}
        losses = {"eager": [], "graph": []}
        for xb, yb in batches[2:]:  # the first of these is recorded and launched, the others replayed
            losses["eager"].append(float(host(eager_step(xb, yb))))
            losses["graph"].append(float(host(captured(xb, yb))))
        assert captured.graph is not None and captured.frozen == []
    np.testing.assert_allclose(losses["graph"], losses["eager"], rtol=TRAIN_RTOL, err_msg="losses of 5 graph steps")
    for (n, a), (_, b) in zip(graphed.named_parameters(), eager.named_parameters()):
        moved_eager, moved_graph = host(b.data) - start[n], host(a.data) - start[n]
        assert np.linalg.norm(moved_eager) > 0, f"parameter {n} did not move in 5 eager steps"
        gap = np.linalg.norm(moved_graph - moved_eager) / np.linalg.norm(moved_eager)
        assert gap < 0.05, f"parameter {n}: the replays moved it {gap:.1%} away from where the eager steps did"
    for (n, a), (_, b) in zip(graphed.named_buffers(), eager.named_buffers()):
        assert_close(a.data, b.data, TRAIN_RTOL, TRAIN_BUFFER_ATOL, f"buffer {n}")


@gpu_test
def test_trainer_with_cuda_graph_trains_exactly_like_eager_training():
    """The GPU default of examples/mnist.py: eip4 WITH dropout, Adam under a per-batch one-cycle schedule, random
    affine augmentation; every full batch after the first replayed from a CUDA graph, Adam eager, the smaller
    last batch of each epoch eager. The replays read their dropout keys from device slots written before each
    replay (drawn from the same generator in the same order as eager steps) and run the same kernels, so after
    two epochs the weights, batch-norm statistics, Adam's moments and the epochs' losses and accuracies equal
    eager training's bit for bit. A replay with a frozen key or learning rate would differ."""
    from minicnn import optim
    from minicnn.models import AFFINE, eip4
    from minicnn.training import Trainer
    rng = np.random.default_rng(11)
    x = to_gpu(rng.random((5 * 32 + 8, 1, 28, 28), dtype=np.float32))
    y = to_gpu(rng.integers(0, 10, len(x)))
    runs = []
    for graph in (False, True):
        minicnn.manual_seed(3)
        model = eip4(dropout=0.1).to("gpu")
        opt = optim.Adam(model.parameters(), lr=0.003)
        trainer = Trainer(model, opt, (x, y), (x[:64], y[:64]), batch_size=32, seed=0, augment=AFFINE,
                          batch_schedule=optim.OneCycle(opt, 0.003, 12), cuda_graph=graph)
        records = [trainer.train_epoch(show_progress=False) for _ in range(2)]
        runs.append((trainer, [{k: v for k, v in r.items() if k != "seconds"} for r in records]))
    (eager, eager_records), (graphed, graph_records) = runs
    assert eager._captured is None
    assert graphed._captured.graph is not None and graphed._captured.calls == 10 and graphed._captured.frozen == []
    assert graph_records == eager_records
    for (n, a), (_, b) in zip(list(graphed.model.named_parameters()) + list(graphed.model.named_buffers()),
                              list(eager.model.named_parameters()) + list(eager.model.named_buffers())):
        np.testing.assert_array_equal(host(a.data), host(b.data), err_msg=n)
    for name in ("m", "v"):
        np.testing.assert_array_equal(host(getattr(graphed.optimizer, name)), host(getattr(eager.optimizer, name)))
    assert graphed.optimizer.step_count == eager.optimizer.step_count == 12


@gpu_test
def test_cuda_graph_names_the_values_it_freezes():
    """Adam's step count is passed by value: captured with the update inside, it is listed in `frozen` (the
    dropout keys are not: they come from device slots), and strict=True refuses such a step."""
    from minicnn import optim
    from minicnn.cuda_graph import CapturedStep
    from minicnn.models import eip4
    minicnn.manual_seed(1)
    model = eip4(dropout=0.1).to("gpu")
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x, y = to_gpu(np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)), to_gpu(np.arange(16) % 10)
    captured = CapturedStep(_train_step(model, opt), warmup=1)
    for _ in range(3):
        loss = captured(x, y)
    assert captured.frozen == ["Adam step count"]
    assert np.isfinite(float(host(loss)))
    with pytest.raises(RuntimeError, match="Adam step count"):
        CapturedStep(_train_step(model, opt), warmup=0, strict=True)(x, y)

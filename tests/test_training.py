"""Training end to end on the committed MNIST subset: checkpoints, exact resume, an accuracy floor, the last
batch, a loss that is not finite, and when the progress bar's clock starts."""
import json
import os

import numpy as np
import pytest

import minicnn
from minicnn import optim
from minicnn.checkpoint import load_checkpoint, save_checkpoint
from minicnn.data import DataLoader, read_mnist_folder
from minicnn.data.loader import batch_bounds
from minicnn.models import eip4
from minicnn.training import NonFiniteLossError, Trainer, to_device_dataset

SUBSET = os.path.join(os.path.dirname(__file__), "data", "mnist_small")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def subset():
    (xtr, ytr), (xte, yte) = read_mnist_folder(SUBSET)
    return to_device_dataset(xtr, ytr, "cpu"), to_device_dataset(xte, yte, "cpu")


DATA = ["--data-dir", SUBSET, "--no-verify"]  # examples/mnist.py reads the committed subset as it is


def make_trainer(train, test, seed=0, n_train=None, bn_momentum=None, augment=None):
    minicnn.manual_seed(seed)
    model = eip4()
    if bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, minicnn.nn.BatchNorm2d):
                m.momentum = bn_momentum
    opt = optim.Adam(model.parameters(), lr=0.003, eps=1e-7)
    sched = optim.InverseTimeDecay(opt, 0.319)
    if n_train:
        train = (train[0][:n_train], train[1][:n_train])
    return Trainer(model, opt, train, test, batch_size=64, seed=seed, epoch_schedule=sched, augment=augment)


def test_short_real_training_beats_an_accuracy_floor(subset):
    """4,000 real digits, 3 epochs: a broken forward or backward pass cannot reach 90% on 1,000 test digits."""
    train, test = subset
    # Keras's slow batch-norm momentum (0.01) needs far more than these 190 steps to settle its running
    # statistics, so this short run uses PyTorch's 0.1; the network is otherwise the course's.
    trainer = make_trainer(train, test, bn_momentum=0.1)
    records = [trainer.train_epoch(show_progress=False) for _ in range(3)]
    assert records[-1]["loss"] < records[0]["loss"]
    assert records[-1]["test_accuracy"] >= 0.90, records


def test_resume_mid_epoch_ends_exactly_where_an_uninterrupted_run_does(subset, tmp_path):
    train, test = subset
    augment = dict(degrees=10.0, translate=0.1, scale=(0.9, 1.1))  # the augmentation generator must resume too
    straight = make_trainer(train, test, n_train=640, augment=augment)
    for _ in range(2):
        straight.train_epoch(show_progress=False)

    first = make_trainer(train, test, n_train=640, augment=augment)
    first.train_epoch(show_progress=False)
    calls = {"n": 0}
    original = first.train_step

    def stop_after_three(xb, yb):  # what Ctrl-C does: the batch finishes, then the loop stops
        calls["n"] += 1
        if calls["n"] == 3:
            first.stop_requested = True
        return original(xb, yb)
    first.train_step = stop_after_three
    assert first.train_epoch(show_progress=False) is None and first.batch == 3
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, {"trainer": first.state_dict()})

    minicnn.manual_seed(123)  # a different process state: everything must come from the checkpoint
    resumed = make_trainer(train, test, seed=5, n_train=640, augment=augment)
    resumed.load_state_dict(load_checkpoint(path)["trainer"])
    record = resumed.train_epoch(show_progress=False)
    assert record is not None and resumed.epoch == 2
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert resumed.history == [dict(h, seconds=r["seconds"]) for h, r in zip(straight.history, resumed.history)]
    np.testing.assert_array_equal(straight.optimizer.m, resumed.optimizer.m)
    assert straight.optimizer.lr == resumed.optimizer.lr


def test_example_script_trains_saves_and_resumes(example, tmp_path, capsys):
    save = str(tmp_path / "run.ckpt")
    args = DATA + ["--epochs", "1", "--train-limit", "256", "--save", save, "--no-progress"]
    assert example.main(args) == 0
    out = capsys.readouterr().out
    assert "Total params: 14,060" in out and "Epoch  1/1" in out and "final test accuracy" in out
    history = json.load(open(str(tmp_path / "run.history.json")))
    assert len(history) == 1 and 0.0 <= history[0]["test_accuracy"] <= 1.0
    assert os.path.exists(str(tmp_path / "run.best.ckpt"))
    state = load_checkpoint(save)
    assert state["trainer"]["epoch"] == 1 and state["args"]["epochs"] == 1
    # --resume of a finished run trains nothing and says so
    assert example.main(["--resume", save, "--no-progress"]) == 0
    assert "is finished: 1 of 1 epochs trained" in capsys.readouterr().out


def test_example_validation_split_holds_out_the_last_training_images(example, tmp_path, capsys, monkeypatch):
    """--validation N trains on all but the last N training images and evaluates on those N, never on the test set."""
    seen = {}
    original = Trainer.__init__

    def spy(self, model, optimizer, train_data, test_data, **kwargs):
        seen["train"], seen["eval"] = train_data, test_data
        original(self, model, optimizer, train_data, test_data, **kwargs)
    monkeypatch.setattr(Trainer, "__init__", spy)
    save = str(tmp_path / "val.ckpt")
    assert example.main(DATA + ["--model", "tiny", "--epochs", "1", "--validation", "500", "--save", save,
                                "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "train 3500 images, evaluated on 500 val images" in out and "val_acc" in out
    assert "final val accuracy" in out and "test_acc" not in out
    (xtr, ytr), _ = read_mnist_folder(SUBSET)
    np.testing.assert_array_equal(seen["eval"][1], ytr[-500:])
    np.testing.assert_array_equal(seen["train"][1], ytr[:-500])
    assert example.main(DATA + ["--validation", "4000", "--save", save]) == 2
    assert "--validation 4000: must be below the 4,000 training images" in capsys.readouterr().err


def test_ctrl_c_saves_and_resume_ends_where_an_uninterrupted_run_does(example, tmp_path, monkeypatch, capsys):
    """A real SIGINT in the middle of an epoch: the batch finishes, a checkpoint is saved, --resume completes it."""
    import signal
    common = DATA + ["--epochs", "2", "--train-limit", "384", "--no-progress"]
    straight = str(tmp_path / "straight.ckpt")
    assert example.main(common + ["--save", straight]) == 0

    calls = {"n": 0}
    original = Trainer.train_step

    def interrupt_at_batch_5(self, xb, yb):
        calls["n"] += 1
        if calls["n"] == 5:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C sends; the handler only sets a flag
        return original(self, xb, yb)
    monkeypatch.setattr(Trainer, "train_step", interrupt_at_batch_5)
    stopped = str(tmp_path / "stopped.ckpt")
    assert example.main(common + ["--save", stopped]) == 130
    state = load_checkpoint(stopped)["trainer"]
    assert (state["epoch"], state["batch"]) == (1, 2)  # 3 batches an epoch: stopped inside the second
    monkeypatch.setattr(Trainer, "train_step", original)
    assert example.main(["--resume", stopped, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "interrupted: finishing this batch" in out and "resumed from" in out
    a, b = load_checkpoint(straight)["trainer"], load_checkpoint(stopped)["trainer"]
    assert b["epoch"] == 2
    for name in a["model"]:
        np.testing.assert_array_equal(a["model"][name], b["model"][name], err_msg=name)
    assert [h["test_accuracy"] for h in a["history"]] == [h["test_accuracy"] for h in b["history"]]


def test_example_augment_switches_eip4_to_its_augmented_recipe(example):
    """--augment on eip4 drops dropout and uses a one-cycle schedule; an explicit --lr still wins."""
    data = (np.zeros((8, 1, 28, 28), np.float32), np.zeros(8, np.int64))
    dropouts = lambda model: {m.p for m in model.modules() if type(m).__name__ == "Dropout"}
    plain, recipe = example.build(example.parse_args([]), data, data)
    assert dropouts(plain.model) == {0.1} and recipe["schedule"] == "inverse_time" and recipe["lr"] == 0.003
    assert plain.batch_schedule is None
    augmented, recipe = example.build(example.parse_args(["--augment"]), data, data)
    assert dropouts(augmented.model) == {0.0} and recipe["schedule"] == "one_cycle" and recipe["lr"] == 0.01
    assert augmented.epoch_schedule is None and augmented.augment is not None
    _, recipe = example.build(example.parse_args(["--augment", "--lr", "0.005"]), data, data)
    assert recipe["lr"] == 0.005


def test_cuda_graph_training_on_the_cpu_is_a_clear_error(subset, example, capsys):
    """A CUDA graph records GPU launches: asked for with data on the CPU, the Trainer and the example refuse."""
    train, test = subset
    model = eip4()
    with pytest.raises(ValueError, match="cuda_graph=True needs the data and the model on the GPU"):
        Trainer(model, optim.Adam(model.parameters()), train, test, cuda_graph=True)
    assert example.main(["--cuda-graph", "--epochs", "1"]) == 2
    assert "--cuda-graph needs --device gpu" in capsys.readouterr().err


def test_a_step_that_cannot_be_recorded_trains_on_eagerly_with_a_warning(subset, monkeypatch):
    """If recording the step into a CUDA graph fails (an operation that reads a value on the host, say), the
    Trainer says why and goes on eagerly: the step is taken once, and the next steps do not try again."""
    import minicnn.cuda_graph

    class Unrecordable:
        graph = None

        def __init__(self, step, warmup=1, strict=False):
            Unrecordable.made = getattr(Unrecordable, "made", 0) + 1

        def __call__(self, *inputs):
            raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(minicnn.cuda_graph, "CapturedStep", Unrecordable)
    train, test = subset
    minicnn.manual_seed(0)
    model = eip4()
    opt = optim.Adam(model.parameters())
    trainer = Trainer(model, opt, (train[0][:64], train[1][:64]), test, batch_size=32)
    trainer.cuda_graph = True  # as on the GPU (the constructor refuses it for CPU data)
    with pytest.warns(UserWarning, match="could not be recorded into a CUDA graph .*not permitted.*goes on eagerly"):
        trainer.train_step(train[0][:32], train[1][:32])
    assert trainer.cuda_graph is False and opt.step_count == 1
    trainer.train_step(train[0][32:64], train[1][32:64])
    assert Unrecordable.made == 1 and opt.step_count == 2


# ---- the last batch -----------------------------------------------------------------------------------
def test_a_final_batch_of_one_image_joins_the_batch_before_it():
    assert batch_bounds(257, 128, merge_single=True) == [(0, 128), (128, 257)]
    assert batch_bounds(257, 128) == [(0, 128), (128, 256), (256, 257)]
    assert batch_bounds(258, 128, merge_single=True) == [(0, 128), (128, 256), (256, 258)]  # two images: kept
    assert batch_bounds(1, 128, merge_single=True) == [(0, 1)]          # nothing to join
    assert batch_bounds(3, 1, merge_single=True) == [(0, 1), (1, 2), (2, 3)]  # batch_size 1: every batch is one
    x, y = np.arange(257), np.arange(257)
    loader = DataLoader(x, y, 128, seed=3, merge_single=True)
    batches = list(loader.batches(0))
    assert len(loader) == 2 and [len(b) for b, _ in batches] == [128, 129]
    assert sorted(np.concatenate([b for b, _ in batches]).tolist()) == list(range(257))  # every image, once


def test_the_trainer_trains_an_epoch_whose_last_batch_would_be_one_image(subset):
    """eip4's last batch norm sees a 1x1 map: a batch of one image gives it one value per channel. 65 images
    in batches of 64 are one step of 65, and the epoch ends normally."""
    train, test = subset
    minicnn.manual_seed(0)
    model = eip4()
    trainer = Trainer(model, optim.Adam(model.parameters()), (train[0][:65], train[1][:65]),
                      (test[0][:20], test[1][:20]), batch_size=64)
    record = trainer.train_epoch(show_progress=False)
    assert len(trainer.loader) == 1 and trainer.optimizer.step_count == 1
    assert record["epoch"] == 1 and np.isfinite(record["loss"])


# ---- a loss that is not finite ---------------------------------------------------------------------------
def nan_pixel_trainer(subset, bad_image, **kwargs):
    train, test = subset
    x, y = train[0][:96].copy(), train[1][:96]
    x[bad_image, 0, 14, 14] = np.nan
    minicnn.manual_seed(0)
    model = eip4()
    trainer = Trainer(model, optim.Adam(model.parameters()), (x, y), (test[0][:20], test[1][:20]),
                      batch_size=32, **kwargs)
    bad_batch = next(i for i, (xb, _) in enumerate(trainer.loader.batches(0)) if np.isnan(xb).any()) + 1
    return trainer, bad_batch


@pytest.mark.parametrize("each_step", [True, False], ids=["every-step", "at-syncs"])
def test_one_nan_pixel_stops_training_naming_the_epoch_and_batch(subset, each_step):
    """On the CPU the loss is read after every step; on the GPU at the syncs and the epoch's end (tried here on
    the CPU by switching check_each_step off): either way the error names the first bad batch."""
    trainer, bad_batch = nan_pixel_trainer(subset, bad_image=40)
    trainer.check_each_step = each_step
    with pytest.raises(NonFiniteLossError, match=f"training loss is nan at epoch 1, batch {bad_batch} of 3") as info:
        trainer.train_epoch(show_progress=False)
    assert (info.value.epoch, info.value.batch, info.value.batches) == (1, bad_batch, 3)
    assert trainer.history == [] and trainer.epoch == 0  # no record of the epoch, nothing to save as finished
    if each_step:
        assert trainer.batch == bad_batch - 1 and trainer.optimizer.step_count == bad_batch


def test_stop_on_nonfinite_false_trains_on(subset):
    trainer, _ = nan_pixel_trainer(subset, bad_image=40, stop_on_nonfinite=False)
    record = trainer.train_epoch(show_progress=False)
    assert np.isnan(record["loss"]) and trainer.epoch == 1


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_huge_learning_rate_stops_at_the_first_nonfinite_loss(subset):
    train, test = subset
    minicnn.manual_seed(0)
    model = eip4()
    trainer = Trainer(model, optim.Adam(model.parameters(), lr=1e30), (train[0][:256], train[1][:256]),
                      (test[0][:20], test[1][:20]), batch_size=64)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train_epoch(show_progress=False)
    assert info.value.epoch == 1 and info.value.batch == 2  # the first step's loss is fine; its update is not


def test_a_mid_epoch_state_is_arrays_and_json_a_checkpoint_holds(subset, tmp_path):
    """Trainer.state_dict() after a stop mid-epoch (augmentation on: its generator state included) goes through
    save_checkpoint and comes back equal."""
    train, test = subset
    trainer = make_trainer(train, test, n_train=192, augment=dict(degrees=10.0, translate=0.1, scale=(0.9, 1.1)))
    original = trainer.train_step

    def stop_after_one(xb, yb):
        trainer.stop_requested = True
        return original(xb, yb)
    trainer.train_step = stop_after_one
    assert trainer.train_epoch(show_progress=False) is None
    state = trainer.state_dict()
    save_checkpoint(tmp_path / "mid.ckpt", state)
    back = load_checkpoint(tmp_path / "mid.ckpt")
    assert back["batch"] == 1 and back["sums"] == state["sums"] and back["aug_rng_state"] == state["aug_rng_state"]
    for name, value in state["model"].items():
        np.testing.assert_array_equal(back["model"][name], value)


# ---- the progress bar ---------------------------------------------------------------------------------------
def test_the_progress_bar_starts_after_the_first_step(subset, monkeypatch):
    """The first step of a run compiles kernels (or records a CUDA graph): the bar is created after it, counting
    it as done, so its rate and time left measure only the steps after it."""
    import minicnn.training as training
    train, test = subset
    trainer = make_trainer(train, test, n_train=192)
    steps, made = [], []
    original, real_progress = trainer.train_step, training.progress

    def counting_step(xb, yb):
        steps.append(1)
        return original(xb, yb)

    def recording_progress(**kwargs):
        made.append((len(steps), kwargs.get("initial"), kwargs.get("total")))
        return real_progress(**kwargs)
    monkeypatch.setattr(trainer, "train_step", counting_step)
    monkeypatch.setattr(training, "progress", recording_progress)
    trainer.train_epoch(show_progress=False)
    assert made == [(1, 1, 3)]


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True], ids=["eager", "cuda-graph"])
def test_on_the_gpu_the_first_nonfinite_batch_is_named_at_the_sync(subset, cuda_graph):
    """On the GPU the loss stays on the device (one value per batch) and is checked at the syncs and at the
    epoch's end: a NaN pixel in one image is still named by its batch, eager or replayed from a CUDA graph."""
    from gpu_checks import GPU_REASON, to_gpu
    if GPU_REASON is not None:
        pytest.skip(f"no GPU: {GPU_REASON}")
    train, test = subset
    x, y = train[0][:96].copy(), train[1][:96]
    x[40, 0, 14, 14] = np.nan
    minicnn.manual_seed(0)
    model = eip4().to("gpu")
    trainer = Trainer(model, optim.Adam(model.parameters()), (to_gpu(x), to_gpu(y)),
                      (to_gpu(test[0][:20]), to_gpu(test[1][:20])), batch_size=32, cuda_graph=cuda_graph)
    assert trainer.check_each_step is False
    bad_batch = next(i for i, (xb, _) in enumerate(trainer.loader.batches(0)) if bool(xb.sum() != xb.sum())) + 1
    with pytest.raises(NonFiniteLossError, match=f"at epoch 1, batch {bad_batch} of 3"):
        trainer.train_epoch(show_progress=False)

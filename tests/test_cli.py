"""examples/mnist.py as a user runs it: processes on the committed subset (--data-dir tests/data/mnist_small
--no-verify), a few hundred images each.

Every mistake is one line on stderr and exit status 2, found before any data loads or any step runs; a
crafted checkpoint runs nothing; a second run on the same path stops naming the first one's PID; a loss that
is not finite stops training, naming the epoch and batch, and writes no checkpoint; a final batch of one
image trains; --resume refuses flags that disagree with the run, extends it with --epochs, and says when it is
finished; --epochs 0 prints the network. The independent processes run side by side to keep the file short.
"""
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from minicnn.checkpoint import RunLock, load_checkpoint, save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "mnist.py")
SUBSET = os.path.join(ROOT, "tests", "data", "mnist_small")
QUICK = ["--data-dir", SUBSET, "--no-verify", "--validation", "100", "--no-progress"]  # 3,900 training images
Result = namedtuple("Result", "rc out err")


def mnist(args, cwd, env=None):
    """examples/mnist.py with `args` in a fresh process; (exit status, stdout, stderr)."""
    env = {**os.environ, "MINICNN_NO_PROGRESS": "1", **(env or {})}
    done = subprocess.run([sys.executable, SCRIPT, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    return Result(done.returncode, done.stdout, done.stderr)


def side_by_side(runs, cwd, workers=4):
    """{name: Result} of several independent runs, `workers` processes at a time."""
    with ThreadPoolExecutor(workers) as pool:
        futures = {name: pool.submit(mnist, args, cwd) for name, args in runs.items()}
        return {name: f.result() for name, f in futures.items()}


def assert_one_line_error(result, *fragments):
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.rc == 2, result
    assert "Traceback" not in result.err and len(lines) == 1, result.err
    assert lines[0].startswith("mnist.py: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def files_of(folder):
    """{name: bytes} of every file in folder (temporary files included)."""
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


# ---- one real run, and everything that starts from it ----------------------------------------------------
@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One epoch of eip4 on 257 images in batches of 128: 257 = 2 * 128 + 1, so the last image joins the
    second batch (a batch of one image would stop eip4's last batch norm, which sees a 1x1 map)."""
    folder = tmp_path_factory.mktemp("first")
    result = mnist(QUICK + ["--epochs", 1, "--train-limit", 257, "--batch-size", 128, "--save", folder / "run.ckpt"],
                   cwd=folder)
    return folder, result


@pytest.fixture(scope="module")
def runs(first, tmp_path_factory):
    """Every other process of this file, run side by side; {case: Result} and the paths they used."""
    base, result = first
    assert result.rc == 0, result
    tmp = tmp_path_factory.mktemp("cases")
    ckpt = base / "run.ckpt"
    a_file = tmp / "a_file"
    a_file.write_text("not a folder")
    marker = tmp / "pickle_ran"
    crafted = tmp / "crafted.ckpt"
    crafted.write_bytes(pickle.dumps(_Marker(str(marker))))
    damaged = tmp / "damaged.ckpt"
    damaged.write_bytes(ckpt.read_bytes()[:-200])
    foreign = tmp / "foreign.ckpt"
    save_checkpoint(foreign, {"weights": np.zeros(3, np.float32)})
    state = load_checkpoint(ckpt)  # a finite checkpoint whose learning rate blows up in its next epoch
    state["trainer"]["epoch_schedule"]["base_lr"] = 1e30
    save_checkpoint(tmp / "explodes.ckpt", state)
    state["trainer"]["model"].pop(next(iter(state["trainer"]["model"])))  # weights that are not eip4's
    save_checkpoint(tmp / "misfit.ckpt", state)
    for name in ("overwrite", "extend"):  # copies of the first run's files to write over
        shutil.copytree(base, tmp / name, ignore=shutil.ignore_patterns("*.lock"))
    stale = tmp / "extend" / f".run.ckpt.{2 ** 22 + 5}.0badc0de.tmp"  # left by a killed run (no such PID)
    stale.write_bytes(b"half a checkpoint")
    paths = dict(tmp=tmp, marker=marker, explodes=tmp / "explodes.ckpt", overwrite=tmp / "overwrite",
                 extend=tmp / "extend", locked=tmp / "locked.ckpt")
    new = ["--save", tmp / "new.ckpt"]
    cases = {
        "epochs -1": QUICK + ["--epochs", -1] + new,
        "batch-size 0": QUICK + ["--batch-size", 0] + new,
        "batch-size 1": QUICK + ["--batch-size", 1] + new,
        "lr nan": QUICK + ["--lr", "nan"] + new,
        "lr inf": QUICK + ["--lr", "inf"] + new,
        "lr 0": QUICK + ["--lr", 0] + new,
        "lr -1": QUICK + ["--lr=-1"] + new,
        "threads 0": QUICK + ["--threads", 0] + new,
        "seed -1": QUICK + ["--seed=-1"] + new,
        "train-limit 0": QUICK + ["--train-limit", 0] + new,
        "train-limit -5": QUICK + ["--train-limit=-5"] + new,
        "train-limit 3901": QUICK + ["--train-limit", 3901] + new,
        "validation 0": ["--data-dir", SUBSET, "--no-verify", "--validation", 0] + new,
        "validation 4000": ["--data-dir", SUBSET, "--no-verify", "--validation", 4000] + new,
        "epochs two": QUICK + ["--epochs", "two"] + new,
        "model vgg": QUICK + ["--model", "vgg"] + new,
        "cuda-graph on the cpu": QUICK + ["--cuda-graph"] + new,
        "no-verify without data-dir": ["--no-verify"] + new,
        "data-dir a file": ["--data-dir", a_file] + new,
        "data-dir under a file": ["--data-dir", a_file / "mnist"] + new,
        "save a folder": QUICK + ["--save", tmp],
        "save under a file": QUICK + ["--save", a_file / "runs" / "x.ckpt"],
        "resume missing": QUICK + ["--resume", tmp / "missing.ckpt"],
        "resume pickle": QUICK + ["--resume", crafted],
        "resume damaged": QUICK + ["--resume", damaged],
        "resume foreign": QUICK + ["--resume", foreign],
        "resume misfit": ["--resume", tmp / "misfit.ckpt", "--epochs", 2],
        "resume --augment": ["--resume", ckpt, "--augment"],
        "resume --lr": ["--resume", ckpt, "--lr", 0.01],
        "resume --model": ["--resume", ckpt, "--model", "tiny"],
        "resume --batch-size": ["--resume", ckpt, "--batch-size", 64],
        "resume --train-limit": ["--resume", ckpt, "--train-limit", 256],
        "resume --seed": ["--resume", ckpt, "--seed", 1],
        "resume --epochs 0": ["--resume", ckpt, "--epochs", 0],
        "locked": QUICK + ["--epochs", 1, "--save", paths["locked"]],
        # exit status 0 or 1
        "epochs 0 eip4": ["--epochs", 0, "--model", "eip4"],
        "epochs 0 compact": ["--epochs", 0, "--model", "compact"],
        "epochs 0 tiny": ["--epochs", 0, "--model", "tiny"],
        "finished": ["--resume", ckpt],
        "extend": ["--resume", paths["extend"] / "run.ckpt", "--epochs", 2, "--save", paths["extend"] / "run.ckpt"],
        "straight": QUICK + ["--epochs", 2, "--train-limit", 257, "--save", tmp / "straight.ckpt"],
        "lr 1e30": QUICK + ["--lr", 1e30, "--epochs", 2, "--train-limit", 1280,
                            "--save", paths["overwrite"] / "run.ckpt"],
        "explodes": ["--resume", paths["explodes"], "--epochs", 2, "--save", paths["explodes"]],
    }
    paths["before"] = {name: files_of(paths[name]) for name in ("overwrite",)}
    paths["before"]["explodes"] = paths["explodes"].read_bytes()
    with RunLock(paths["locked"]):  # a run of this process holds that path while the others start
        results = side_by_side(cases, cwd=tmp)
    return results, paths


class _Marker:
    """Unpickling it would create the marker file: a stand-in for a pickle that runs code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


MISTAKES = {
    "epochs -1": ["--epochs -1: must be at least 0"],
    "batch-size 0": ["--batch-size 0: must be at least 1"],
    "batch-size 1": ["--batch-size 1: batch norm in training mode", "1x1 map", "use at least 2"],
    "lr nan": ["--lr nan: must be a finite number above 0"],
    "lr inf": ["--lr inf: must be a finite number above 0"],
    "lr 0": ["--lr 0.0: must be a finite number above 0"],
    "lr -1": ["--lr -1.0: must be a finite number above 0"],
    "threads 0": ["--threads 0: must be at least 1"],
    "seed -1": ["--seed -1: must be at least 0"],
    "train-limit 0": ["--train-limit 0: must be at least 1"],
    "train-limit -5": ["--train-limit -5: must be at least 1"],
    "train-limit 3901": ["--train-limit 3901: the training set has 3,900 images"],
    "validation 0": ["--validation 0: must be at least 1"],
    "validation 4000": ["--validation 4000: must be below the 4,000 training images"],
    "epochs two": ["argument --epochs: invalid int value: 'two'"],
    "model vgg": ["argument --model: invalid choice: 'vgg'"],
    "cuda-graph on the cpu": ["--cuda-graph needs --device gpu"],
    "no-verify without data-dir": ["--no-verify reads --data-dir as it is"],
    "data-dir a file": ["a_file is a file, not a folder"],
    "data-dir under a file": ["mnist cannot be created"],
    "save a folder": ["is a folder; give a file path"],
    "save under a file": ["cannot write its lock file"],
    "resume missing": ["missing.ckpt: no such checkpoint file"],
    "resume pickle": ["crafted.ckpt is a pickle, not a minicnn checkpoint"],
    "resume damaged": ["damaged.ckpt is damaged"],
    "resume foreign": ["foreign.ckpt is a minicnn checkpoint, but not of a run of examples/mnist.py"],
    "resume misfit": ["misfit.ckpt does not fit this run: load_state_dict: missing keys"],
    "resume --augment": ["--augment conflicts with the run in", "(augment False)"],
    "resume --lr": ["--lr 0.01 conflicts with the run in", "(lr 0.003)"],
    "resume --model": ["--model tiny conflicts with the run in", "(model eip4)"],
    "resume --batch-size": ["--batch-size 64 conflicts with the run in", "(batch_size 128)"],
    "resume --train-limit": ["--train-limit 256 conflicts with the run in", "(train_limit 257)"],
    "resume --seed": ["--seed 1 conflicts with the run in", "(seed 0)"],
    "resume --epochs 0": ["--epochs 0: the run in", "has already trained 1 epoch(s)"],
    "locked": ["is being written by another run (PID {pid})"],
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_a_mistake_is_one_line_on_stderr_and_exit_status_2(runs, case):
    results, _ = runs
    result = results[case]
    assert_one_line_error(result, *[f.format(pid=os.getpid()) for f in MISTAKES[case]])
    assert "Epoch" not in result.out and "Total params" not in result.out  # nothing trained, nothing built


def test_a_crafted_pickle_runs_nothing_and_no_file_is_written(runs):
    results, paths = runs
    assert results["resume pickle"].rc == 2 and not paths["marker"].exists()
    assert not (paths["tmp"] / "new.ckpt").exists() and not (paths["tmp"] / "runs").exists()


def test_the_first_run_trains_a_final_batch_of_one_image_and_writes_the_set(first):
    folder, result = first
    assert result.rc == 0 and "Traceback" not in result.err, result
    assert "train 257 images" in result.out and "Epoch  1/1" in result.out
    state = load_checkpoint(folder / "run.ckpt")
    assert state["trainer"]["epoch"] == 1 and state["trainer"]["history"][0]["epoch"] == 1
    assert sorted(os.listdir(folder)) == ["run.best.ckpt", "run.ckpt", "run.history.json"]  # the lock is gone


@pytest.mark.parametrize("preset, params", [("eip4", "14,060"), ("compact", "7,768"), ("tiny", "3,872")])
def test_epochs_0_prints_the_network_and_the_recipe_and_writes_nothing(runs, preset, params):
    results, paths = runs
    result = results[f"epochs 0 {preset}"]
    assert result.rc == 0 and result.err == "", result
    assert f"Total params: {params}" in result.out and "--epochs 0: nothing trained" in result.out
    assert not (paths["tmp"] / "runs").exists()


def test_a_finished_run_says_so(runs):
    results, _ = runs
    result = results["finished"]
    assert result.rc == 0 and result.err == "", result
    assert "is finished: 1 of 1 epochs trained" in result.out and "--epochs N with N above 1" in result.out
    assert "Epoch" not in result.out


def test_epochs_extends_a_finished_run_as_if_it_had_been_planned(runs):
    """Inverse-time decay is per epoch: one epoch, then --resume --epochs 2, ends bit for bit where a 2-epoch run does."""
    results, paths = runs
    extended, straight = results["extend"], results["straight"]
    assert extended.rc == 0 and straight.rc == 0, (extended, straight)
    assert "resumed from" in extended.out and "epoch 2, batch 0" in extended.out and "Epoch  2/2" in extended.out
    assert sorted(os.listdir(paths["extend"])) == ["run.best.ckpt", "run.ckpt", "run.history.json"]  # stale temp gone
    a = load_checkpoint(paths["extend"] / "run.ckpt")
    b = load_checkpoint(paths["tmp"] / "straight.ckpt")
    assert a["recipe"]["epochs"] == 2 and a["trainer"]["epoch"] == 2
    assert [h["lr"] for h in a["trainer"]["history"]] == pytest.approx([0.003, 0.003 / 1.319])
    assert [h["lr"] for h in a["trainer"]["history"]] == [h["lr"] for h in b["trainer"]["history"]]
    for name, value in b["trainer"]["model"].items():
        np.testing.assert_array_equal(a["trainer"]["model"][name], value, err_msg=name)


def test_a_huge_learning_rate_stops_at_the_first_nonfinite_loss_and_writes_nothing(runs):
    results, paths = runs
    result = results["lr 1e30"]
    assert result.rc == 1 and "Traceback" not in result.err, result
    assert re.search(r"training stopped: the training loss is -?(nan|inf) at epoch 1, batch 2 of 10", result.err)
    assert "is left as it was" in result.err and "Epoch  1/" not in result.out
    assert files_of(paths["overwrite"]) == paths["before"]["overwrite"]  # the earlier run's set, byte for byte


def test_a_run_that_diverges_after_resuming_leaves_its_checkpoint_as_it_was(runs):
    results, paths = runs
    result = results["explodes"]
    assert result.rc == 1 and "Traceback" not in result.err, result
    assert re.search(r"the training loss is -?(nan|inf) at epoch 2, batch 2 of 2", result.err), result.err
    assert paths["explodes"].read_bytes() == paths["before"]["explodes"]
    written = [n for n in os.listdir(paths["tmp"]) if n.startswith("explodes.") or n.startswith(".explodes.")]
    assert written == ["explodes.ckpt"]  # no best, history, lock or temporary file beside it


# ---- in the process: decisions that need no training -------------------------------------------------------
def test_a_one_cycle_run_cannot_be_extended(example):
    """One-cycle's learning rate is laid out over the run's steps and has annealed at its end: --epochs on resume
    is refused with a message, and the same run without --epochs is finished."""
    args = example.parse_args(["--resume", "runs/tiny-seed0.ckpt", "--epochs", "20"])
    state = {"args": {"model": "tiny", "seed": 0, "save": "runs/tiny-seed0.ckpt"},
             "recipe": dict(epochs=15, batch_size=64, lr=0.01, schedule="one_cycle", augment=True),
             "trainer": {"epoch": 15, "batch": 0}}
    with pytest.raises(example.UsageError, match="one-cycle schedule laid out over its 15 epochs .* cannot be "
                                                 "extended or shortened; start a new run with --epochs 20"):
        example.plan_resume(args, state)
    recipe = example.plan_resume(example.parse_args(["--resume", "runs/tiny-seed0.ckpt"]), state)
    assert recipe["epochs"] == 15
    assert "is finished" in example.finished_line("runs/tiny-seed0.ckpt", state, recipe)


@pytest.mark.parametrize("flags, shown", [(["--seed", "0"], "--seed 0 conflicts"), (["--lr", "0.5"], "--lr 0.5 conflicts"),
                                          (["--no-augment"], "--no-augment conflicts")])
def test_a_flag_that_disagrees_with_the_checkpoint_is_named_with_its_value(example, flags, shown):
    args = example.parse_args(["--resume", "runs/eip4-seed1.ckpt"] + flags)
    state = {"args": {"model": "eip4", "seed": 1, "save": "runs/eip4-seed1.ckpt"},
             "recipe": dict(epochs=20, batch_size=128, lr=0.003, schedule="inverse_time", decay=0.319, augment=True),
             "trainer": {"epoch": 3, "batch": 0}}
    with pytest.raises(example.UsageError) as error:
        example.plan_resume(args, state)
    assert str(error.value).startswith(shown + " with the run in runs/eip4-seed1.ckpt ("), str(error.value)


def test_an_unwritable_data_folder_with_files_missing_is_refused(example, tmp_path, monkeypatch):
    """(Checked through os.access: the tests may run as root, who can write anywhere.)"""
    monkeypatch.setattr(example.os, "access", lambda path, mode: False)
    args = example.parse_args(["--data-dir", str(tmp_path)])
    with pytest.raises(example.UsageError, match="is not writable, and 4 MNIST file.s. would be downloaded"):
        example.check_data_dir(args)
    for name in example.MNIST_FILES:  # every file there: nothing to download, so reading is enough
        (tmp_path / (name + ".gz")).write_bytes(b"")
    example.check_data_dir(args)


def test_help_describes_every_option_and_each_preset_in_one_line(example):
    parser = example.make_parser()
    assert all(action.help for action in parser._actions), [a.dest for a in parser._actions if not a.help]
    text = parser.format_help()
    for preset, params in (("eip4", "14,060"), ("compact", "7,768"), ("tiny", "3,872")):
        line = next(line for line in text.splitlines() if line.strip().startswith(preset + " "))
        assert f"{params} parameters" in line and "epochs" in line, line
    assert "the course's network" in text and "exit status" in text


def test_the_example_uses_the_public_api_only():
    source = open(SCRIPT).read()
    assert "minicnn.kernels" not in source and not re.search(r"\b(trainer|model|optimizer|opt)\._[a-z]", source)


# ---- the first run compiles the kernels, and says so ---------------------------------------------------------
def test_the_compile_notice_is_one_line_with_the_time_and_the_cache_folder(example, monkeypatch, capsys):
    """The example's side of minicnn.backend.on_first_compile: what it prints when the backend calls back, and
    nothing when the backend compiles nothing ahead of use (the hook returns False)."""
    import minicnn.backend
    registered = []
    monkeypatch.setattr(minicnn.backend, "on_first_compile",
                        lambda callback, device="cpu": registered.append((callback, device)) or True)
    example.announce_first_compile("cpu")
    assert capsys.readouterr().out == ""  # nothing until the backend is about to compile
    (callback, device), = registered
    callback({"cache_dir": "/somewhere/numba-cache", "seconds": 41.6})
    out = capsys.readouterr().out
    assert device == "cpu" and out.count("\n") == 1
    assert "compiling the CPU kernels for the first time: about 42 s" in out and "/somewhere/numba-cache" in out
    monkeypatch.setattr(minicnn.backend, "on_first_compile", lambda callback, device="cpu": False)
    example.announce_first_compile("cpu")
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_the_first_run_says_it_compiles_before_any_step_and_the_second_does_not(tmp_path):
    """An empty Numba cache: one line says the kernels compile, about how long and where they are cached, before
    the progress bar shows anything (the bar starts after the first step: no time left computed from it).
    The second run finds them in the cache and says nothing."""
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MINICNN_NO_PROGRESS"}
    env.update(NUMBA_CACHE_DIR=str(cache), MINICNN_KERNELS="numba")

    def run(save):
        args = ["--data-dir", SUBSET, "--no-verify", "--epochs", 1, "--train-limit", 256, "--save", tmp_path / save]
        done = subprocess.run([sys.executable, SCRIPT, *map(str, args)], cwd=tmp_path, env=env, timeout=1800,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # one stream: in order
        assert done.returncode == 0, done.stdout
        return done.stdout
    cold = run("cold.ckpt")
    notice = cold.find("compiling the CPU kernels for the first time")
    assert notice >= 0 and str(cache) in cold[notice:].splitlines()[0], cold
    assert notice < cold.find("Epoch 1/1:") < cold.find("Epoch  1/1")  # before the bar, before the epoch's line
    assert "Epoch 1/1:   0%" not in cold  # the bar's first line already counts the first step
    warm = run("warm.ckpt")
    assert "Epoch  1/1" in warm and "compiling the CPU kernels" not in warm

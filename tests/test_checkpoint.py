"""Checkpoints: arrays and JSON only (no pickle), bit-exact round trips, damage detected, atomic and consistent
sets of files through kills at any moment, stale temporary files removed, and one run per path (the lock)."""
import collections
import io
import json
import os
import pickle
import shlex
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from minicnn import checkpoint
from minicnn.checkpoint import (CheckpointError, CheckpointLockedError, CheckpointNotFoundError, CheckpointSet,
                                RunLock, atomic_write, load_checkpoint, remove_stale_temps, save_checkpoint)

# run in a child process: the module loaded from its file (it needs only NumPy and the standard library)
CHILD = """
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("checkpoint", {module!r})
checkpoint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checkpoint)
{body}
"""


def run_child(body, *args):
    code = CHILD.format(module=checkpoint.__file__, body=body)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=60)


def dead_pid():
    """The PID of a process that has ended (and been waited for)."""
    return int(run_child("print(os.getpid())").stdout)


def realistic_state(rng):
    """What examples/mnist.py saves, in miniature, with every kind of value a checkpoint holds."""
    model = collections.OrderedDict([("conv1.weight", rng.standard_normal((8, 1, 3, 3)).astype(np.float32)),
                                     ("bn1.running_var", rng.random(8).astype(np.float32)),
                                     ("bn1.num_batches_tracked", np.array(937, np.int64)),
                                     ("fc.bias", np.zeros(10, np.float32))])
    pcg = np.random.default_rng(7)
    pcg.random(3)
    return {
        "trainer": {
            "model": model,
            "optimizer": {"lr": 0.003, "step_count": 1874, "m": rng.standard_normal(50).astype(np.float32)},
            "epoch_schedule": None,
            "epoch": 2, "batch": 0, "sums": [0.0, 0.0, 0],
            "aug_rng_state": pcg.bit_generator.state,                   # 128-bit ints
            "dropout_rng_states": [np.random.Generator(np.random.MT19937(3)).bit_generator.state],  # uint32 key
            "history": [{"epoch": 1, "loss": float("nan"), "accuracy": 0.98, "test_accuracy": float("inf")},
                        {"epoch": 2, "loss": -0.0, "accuracy": 1e-300, "test_accuracy": float("-inf")}],
        },
        "args": {"model": "eip4", "seed": 0, "resume": None, "augment": True, "size": (28, 28)},
        "extremes": [2 ** 200, -(2 ** 64), "été ☃", "", [], {}, [[{"deep": [None, False]}]]],
        "dtypes": [np.array([True, False]), np.arange(6, dtype=np.uint64).reshape(2, 3) * 2 ** 61,
                   np.array([1.5, -2], np.float16), np.array([1 + 2j], np.complex128), np.int8(-5), np.float32(0.1),
                   np.bool_(True), np.arange(12.0).reshape(3, 4)[:, ::2], np.asfortranarray(np.ones((2, 3))),
                   np.arange(4, dtype=">i4"), np.zeros((0, 3), np.float32), np.array(3.25)],
    }


def assert_same(a, b, where="state"):
    """a == b bit for bit: types, dict key order, array dtypes, shapes and bytes, nan as nan."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and b.flags.writeable, where
        assert a.dtype.newbyteorder("<") == b.dtype and a.shape == b.shape, where
        assert np.ascontiguousarray(a.astype(b.dtype)).tobytes() == b.tobytes(), where
    elif isinstance(a, np.generic):
        assert type(a) is type(b) and a.tobytes() == b.tobytes(), where
    elif isinstance(a, dict):
        assert type(b) is dict and list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert type(b) is float and (repr(a) == repr(b)), where  # nan, inf and -0.0 included
    else:
        assert type(a) is type(b) and a == b, where


# ---- the format --------------------------------------------------------------------------------------
def test_round_trip_is_bit_for_bit(tmp_path, rng):
    state = realistic_state(rng)
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert_same(state, loaded)
    # the generator states work: the same draws continue
    g = np.random.default_rng()
    g.bit_generator.state = loaded["trainer"]["aug_rng_state"]
    original = np.random.default_rng(7)
    original.random(3)
    assert g.random(5).tolist() == original.random(5).tolist()
    mt = np.random.Generator(np.random.MT19937())
    mt.bit_generator.state = loaded["trainer"]["dropout_rng_states"][0]
    assert mt.random(3).tolist() == np.random.Generator(np.random.MT19937(3)).random(3).tolist()


def test_the_file_holds_arrays_and_json_only(tmp_path, rng):
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, realistic_state(rng))
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert names[0] == "checkpoint.json" and all(n.endswith(".npy") for n in names[1:])
        header = json.loads(archive.read("checkpoint.json"))
        assert header["format"] == "minicnn-checkpoint" and header["version"] == 2 and len(header["sha256"]) == 64
        for name in names[1:]:
            data = archive.read(name)
            assert data.startswith(b"\x93NUMPY")
            f = io.BytesIO(data)
            assert np.lib.format.read_magic(f) == (1, 0)  # the .npy version every NumPy reads
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
            assert not dtype.hasobject and dtype.str[0] in "<|" and dtype.kind in "biufc", (name, dtype)
    with np.load(path, allow_pickle=False) as npz:  # NumPy itself reads every member without pickle
        assert len([npz[key] for key in npz.files]) == len(names)


def test_what_would_need_pickle_is_refused_at_save_and_nothing_is_written(tmp_path):
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, {"value": 1})
    before = path.read_bytes()

    class Weights:
        pass
    refused = [({"w": np.array([None, 1], dtype=object)}, r"state\['w'\] is a NumPy array of dtype object"),
               ({"w": np.array(["a"])}, "dtype <U1"),
               ({"w": np.zeros(2, np.longdouble)} if np.dtype(np.longdouble).itemsize > 8 else {"w": {1}},
                "state\\['w'\\]"),
               ({"layers": [{"w": Weights()}]}, r"state\['layers'\]\[0\]\['w'\] is a .*Weights"),
               ({3: 1}, "key 3"),
               ({"b": b"bytes"}, "bytes")]
    for state, message in refused:
        with pytest.raises(TypeError, match=message):
            save_checkpoint(path, state)
    loop = []
    loop.append(loop)
    with pytest.raises(TypeError, match="contains itself"):
        save_checkpoint(path, {"loop": loop})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["c.ckpt"]  # no temporary file either


def test_crafted_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "MARKER"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {shlex.quote(str(marker))}",)
    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps({"format": "minicnn-checkpoint-1", "trainer": Exploit()}, pickle.HIGHEST_PROTOCOL))
    with pytest.raises(CheckpointError, match=r"evil\.ckpt is a pickled checkpoint from an older minicnn; pickles "
                                              r"can run code when loaded, so they are not read: retrain"):
        load_checkpoint(bad)
    other = tmp_path / "other.ckpt"
    other.write_bytes(pickle.dumps([Exploit()], protocol=2))
    with pytest.raises(CheckpointError, match=r"other\.ckpt is a pickle, not a minicnn checkpoint"):
        load_checkpoint(other)
    assert not marker.exists()
    pickle.loads(bad.read_bytes())  # the file is a live exploit: unpickling it runs the command
    assert marker.exists()


def test_flipped_byte_in_an_array_is_a_checksum_error(tmp_path, rng):
    weights = rng.standard_normal(64).astype(np.float32)
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, {"w": weights, "epoch": 3})
    data = bytearray(path.read_bytes())
    at = bytes(data).find(weights.tobytes()) + 100
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"run\.ckpt is damaged: checksum mismatch"):
        load_checkpoint(path)


def rewrite_member(path, member, change):
    """Rewrite the zip with change(bytes) applied to one member: its zip CRC-32 is valid again."""
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in members:
            archive.writestr(info, change(data) if info.filename == member else data)


def test_sha256_catches_changes_that_the_zip_crc_does_not(tmp_path, rng):
    weights = rng.standard_normal(64).astype(np.float32)
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, {"w": weights, "epoch": 3})
    good = path.read_bytes()

    def flip(data):
        data = bytearray(data)
        data[-5] ^= 0x40
        return bytes(data)
    rewrite_member(path, "a0.npy", flip)
    with pytest.raises(CheckpointError, match="damaged: checksum mismatch"):
        load_checkpoint(path)
    path.write_bytes(good)
    rewrite_member(path, "checkpoint.json", lambda text: text.replace(b'"epoch": 3', b'"epoch": 4'))
    with pytest.raises(CheckpointError, match="damaged: checksum mismatch"):
        load_checkpoint(path)


def test_truncated_file_is_an_error(tmp_path, rng):
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, realistic_state(rng))
    data = path.read_bytes()
    cut = tmp_path / "cut.ckpt"
    for size in (len(data) - 1, len(data) - 22, len(data) // 2, 100, 10):
        cut.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=r"cut\.ckpt is damaged: truncated"):
            load_checkpoint(cut)


def test_foreign_missing_and_newer_files_are_clear_errors(tmp_path):
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(CheckpointNotFoundError, match=r"missing\.ckpt: no such checkpoint file") as caught:
        load_checkpoint(missing)
    assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, ValueError)
    cases = {"empty.ckpt": (b"", "is empty"), "text.ckpt": (b"not a checkpoint", "not a zip archive")}
    npy = io.BytesIO()
    np.save(npy, np.ones(3))
    cases["array.ckpt"] = (npy.getvalue(), "not a zip archive")
    npz = io.BytesIO()
    np.savez(npz, w=np.ones(3))
    cases["weights.npz"] = (npz.getvalue(), "without checkpoint.json")
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=f"{name} .*{message}"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)
    crafted = tmp_path / "crafted.ckpt"
    for header, message in [(b'"state": {"eval": "os.system"}, "set": null}', "header is malformed"),
                            (b'"state": ' + b"[" * 100000 + b"]" * 100000 + b', "set": null}', "not JSON")]:
        save_checkpoint(crafted, {"epoch": 1})
        rewrite_member(crafted, "checkpoint.json",
                       lambda text: b'{"format": "minicnn-checkpoint", "version": 2, "sha256": "0", ' + header)
        with pytest.raises(CheckpointError, match=f"crafted.ckpt is damaged: .*{message}"):
            load_checkpoint(crafted)
    newer = tmp_path / "newer.ckpt"
    save_checkpoint(newer, {"epoch": 1})
    rewrite_member(newer, "checkpoint.json", lambda text: text.replace(b'"version": 2', b'"version": 3'))
    with pytest.raises(CheckpointError, match=r"newer\.ckpt has checkpoint format version 3; this minicnn reads "
                                              r"version 2"):
        load_checkpoint(newer)


# ---- atomic writes and their temporary files --------------------------------------------------------
def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "c.json"
    atomic_write(path, lambda f: f.write("old"), mode="w")

    def write_half(f):
        f.write("ne")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, write_half, mode="w")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["c.json"]


def test_stale_temporary_files_are_removed_and_others_kept(tmp_path):
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, {"epoch": 1})
    # a run killed in the middle of a write: its temporary file stays behind
    killed = run_child("checkpoint.atomic_write(sys.argv[1], lambda f: (f.write(b'half'), os._exit(0)))", path)
    assert killed.returncode == 0, killed.stderr
    left = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".c.ckpt.")
    dead, live = dead_pid(), os.getppid()
    stale = left + [f".c.best.ckpt.{dead}.0123abcd.tmp", f".c.history.json.{dead}.deadbeef.tmp",
                    f".c.ckpt.{os.getpid()}.00000000.tmp"]  # this process's PID: not writing, so a leftover
    kept = [f".c.ckpt.{live}.11111111.tmp",             # a live run's write in progress
            f".other.ckpt.{dead}.0123abcd.tmp",         # another checkpoint's
            f".c.ckpt.5.ckpt.{dead}.0123abcd.tmp",      # the temporary file of "c.ckpt.5.ckpt"
            f".c.ckpt.{dead}.tmp", "c.ckpt.tmp", "notes.tmp", "c.best.ckpt", "c.history.json", "c.lock"]
    for name in stale[1:] + kept:
        (tmp_path / name).write_text("x")
    removed = remove_stale_temps(path)
    assert sorted(os.path.basename(p) for p in removed) == sorted(stale)
    assert sorted(os.listdir(tmp_path)) == sorted(kept + ["c.ckpt"])
    assert load_checkpoint(path) == {"epoch": 1}


# ---- the lock ----------------------------------------------------------------------------------------
LOCK_CHILD = """
lock = checkpoint.RunLock(sys.argv[1])
try:
    lock.acquire()
except checkpoint.CheckpointLockedError as exc:
    print(exc)
    sys.exit(3)
print("locked", os.getpid())
if sys.argv[2] == "die":
    os._exit(0)  # killed: the lock file stays behind
lock.release()
"""


def test_a_second_run_on_the_same_path_stops_naming_the_first(tmp_path):
    path = tmp_path / "eip4-seed0.ckpt"
    with RunLock(path) as lock:
        assert lock.file == str(tmp_path / "eip4-seed0.lock")
        assert json.loads((tmp_path / "eip4-seed0.lock").read_text())["pid"] == os.getpid()
        second = run_child(LOCK_CHILD, path, "release")
        assert second.returncode == 3, second.stdout + second.stderr
        assert second.stdout.strip() == (f"{path} is being written by another run (PID {os.getpid()}); wait for "
                                         f"it or choose another --save path")
        with pytest.raises(CheckpointLockedError, match="already locked by this process"):
            RunLock(path).acquire()
        other = run_child(LOCK_CHILD, tmp_path / "other.ckpt", "release")  # another path is free
        assert other.returncode == 0 and other.stdout.startswith("locked"), other.stderr
    assert not (tmp_path / "eip4-seed0.lock").exists()
    after = run_child(LOCK_CHILD, path, "release")
    assert after.returncode == 0 and after.stdout.startswith("locked"), after.stdout + after.stderr


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    path = tmp_path / "run.ckpt"
    killed = run_child(LOCK_CHILD, path, "die")
    assert killed.returncode == 0, killed.stderr
    pid = int(killed.stdout.split()[1])
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == pid  # the killed run's lock is still there
    with RunLock(path):
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run.lock").exists()
    (tmp_path / "run.lock").write_text("")  # names no run: not taken over blindly
    with pytest.raises(CheckpointLockedError, match="names no run"):
        RunLock(path).acquire()


# ---- the consistent set: last, best, history ---------------------------------------------------------
def epoch_state(run, step, epoch, batch, history):
    return {"run": run, "step": step, "epoch": epoch, "batch": batch, "history": [dict(h) for h in history],
            "weights": np.full(4, epoch * 10 + batch, np.float32)}


# (epoch, batch, test accuracy or None): a save after an epoch, or mid-epoch after Ctrl-C
PLAN = [(1, 5, None), (1, 0, 0.5), (2, 0, 0.7), (3, 0, 0.65), (4, 5, None), (4, 0, 0.8), (5, 0, 0.8), (6, 0, 0.75)]


def run_plan(ckpts, run, start=0):
    history = [{"epoch": h["epoch"], "acc": h["acc"]} for h in (load_checkpoint(ckpts.last)["history"]
                                                               if start else [])]
    for step in range(start, len(PLAN)):
        epoch, batch, acc = PLAN[step]
        if acc is not None:
            history.append({"epoch": epoch, "acc": acc})
        ckpts.save(epoch_state(run, step, epoch, batch, history), history, metric=acc, epoch=epoch)


def assert_consistent(path):
    """best.ckpt and history.json agree with the last checkpoint; no temporary file is left."""
    ckpts = CheckpointSet(path)
    last = load_checkpoint(ckpts.last)
    with open(ckpts.history) as f:
        assert json.load(f) == last["history"]
    accs = [h["acc"] for h in last["history"]]
    names = {"c.ckpt", "c.history.json"}
    if accs:
        best = load_checkpoint(ckpts.best)
        epoch = last["history"][accs.index(max(accs))]["epoch"]
        assert (best["run"], best["epoch"], best["batch"]) == (last["run"], epoch, 0)
        np.testing.assert_array_equal(best["weights"], np.full(4, epoch * 10, np.float32))
        names.add("c.best.ckpt")
    assert set(os.listdir(os.path.dirname(path))) == names
    return last


class Killed(BaseException):
    """The process dies here: nothing after it touches a file (not even the clean-up of a temporary file)."""


def test_a_kill_at_any_moment_leaves_a_consistent_set(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # about order, not power loss: a hundred runs, no disk waits
    reference = tmp_path / "reference" / "c.ckpt"
    run_plan(CheckpointSet(reference), "new")
    final = {name: load_checkpoint(reference.parent / name) for name in ("c.ckpt", "c.best.ckpt")}
    real = {"replace": os.replace, "unlink": os.unlink}

    def crash_after(points):
        calls = {"n": 0, "dead": False}

        def operation(name):
            def op(*args, **kwargs):
                if calls["dead"]:
                    raise Killed
                calls["n"] += 1
                if calls["n"] == points:
                    calls["dead"] = True
                    raise Killed  # before this rename or delete: the new temporary file stays
                result = real[name](*args, **kwargs)
                if calls["n"] == -points:
                    calls["dead"] = True
                    raise Killed  # just after it
                return result
            return op
        return calls, operation

    kills = 0
    for points in [p for n in range(1, 100) for p in (n, -n)]:
        path = tmp_path / f"kill{points}" / "c.ckpt"
        run_plan(CheckpointSet(path), "old")  # an earlier run on the same path, then a fresh run replacing it
        ckpts = CheckpointSet(path)
        ckpts.reconcile()
        calls, operation = crash_after(points)
        with monkeypatch.context() as patch:
            patch.setattr(os, "replace", operation("replace"))
            patch.setattr(os, "unlink", operation("unlink"))
            try:
                run_plan(ckpts, "new")
            except Killed:
                kills += 1
        if not calls["dead"]:
            break  # every file operation of the plan has had its kill
        resumed = CheckpointSet(path)
        resumed.reconcile()
        last = assert_consistent(str(path))
        if last["run"] == "new":  # resume where it stopped; a run killed before its first save starts again
            resumed.load()
            run_plan(resumed, "new", start=last["step"] + 1)
        else:
            run_plan(resumed, "new")
        assert_consistent(str(path))
        for name, expected in final.items():
            assert_same(expected, load_checkpoint(path.parent / name), f"{name} after kill {points}")
    assert kills > 30  # the plan's renames and deletes, each killed before and after


def test_reconcile_repairs_a_best_one_epoch_old_and_a_short_history(tmp_path):
    path = tmp_path / "c.ckpt"
    ckpts = CheckpointSet(path)
    history = [{"epoch": 1, "acc": 0.5}, {"epoch": 2, "acc": 0.7}]
    ckpts.save(epoch_state("r", 0, 1, 0, history[:1]), history[:1], metric=0.5, epoch=1)
    old_best, old_history = (tmp_path / "c.best.ckpt").read_bytes(), (tmp_path / "c.history.json").read_bytes()
    assert ckpts.save(epoch_state("r", 1, 2, 0, history), history, metric=0.7, epoch=2) is True
    (tmp_path / "c.best.ckpt").write_bytes(old_best)  # as if killed after the last checkpoint was written
    (tmp_path / "c.history.json").write_bytes(old_history)
    repaired = CheckpointSet(path).reconcile()
    assert repaired == [str(tmp_path / "c.best.ckpt"), str(tmp_path / "c.history.json")]
    assert load_checkpoint(tmp_path / "c.best.ckpt")["epoch"] == 2
    assert json.loads((tmp_path / "c.history.json").read_text()) == history
    assert CheckpointSet(path).reconcile() == []  # consistent now: nothing to do
    (tmp_path / "c.best.ckpt").write_bytes(b"garbage")
    assert CheckpointSet(path).reconcile() == [str(tmp_path / "c.best.ckpt")]


def test_a_resumed_run_carries_its_best_on(tmp_path):
    path = tmp_path / "c.ckpt"
    first = CheckpointSet(path)
    history = [{"epoch": 1, "acc": 0.9}]
    first.save({"epoch": 1}, history, metric=0.9)
    resumed = CheckpointSet(path)
    assert resumed.load() == {"epoch": 1} and (resumed.best_epoch, resumed.best_metric) == (1, 0.9)
    history.append({"epoch": 2, "acc": 0.8})
    assert resumed.save({"epoch": 2}, history, metric=0.8) is False
    assert load_checkpoint(tmp_path / "c.best.ckpt") == {"epoch": 1}
    history.append({"epoch": 3, "acc": float("nan")})
    assert resumed.save({"epoch": 3}, history, metric=float("nan")) is False  # nan never becomes the best
    diverged = CheckpointSet(tmp_path / "nan.ckpt")  # a nan first is no best either: the next number wins
    assert diverged.save({"e": 1}, [], metric=float("nan")) is False and diverged.best_epoch is None
    assert diverged.save({"e": 2}, [], metric=0.1, epoch=2) is True and diverged.best_epoch == 2
    from_best = CheckpointSet(tmp_path / "elsewhere.ckpt")  # resuming from a best checkpoint
    assert from_best.load(tmp_path / "c.best.ckpt") == {"epoch": 1} and from_best.best_epoch == 1
    lower = CheckpointSet(tmp_path / "loss.ckpt", higher_is_better=False)
    assert lower.save({"e": 1}, [], metric=0.3, epoch=1) and not lower.save({"e": 2}, [], metric=0.4, epoch=2)
    assert load_checkpoint(tmp_path / "loss.best.ckpt") == {"e": 1}


def test_a_fresh_run_replaces_the_whole_set(tmp_path):
    path = tmp_path / "c.ckpt"
    CheckpointSet(path).save({"run": "old"}, [{"epoch": 1}], metric=0.99)
    shutil.copy(path, tmp_path / "copy.ckpt")
    fresh = CheckpointSet(path)
    assert fresh.best_epoch is None
    fresh.save({"run": "new"}, [])  # interrupted before its first epoch ended: no best yet
    assert not (tmp_path / "c.best.ckpt").exists() and (tmp_path / "c.history.json").read_text() == "[]\n"
    assert load_checkpoint(tmp_path / "copy.ckpt") == {"run": "old"}

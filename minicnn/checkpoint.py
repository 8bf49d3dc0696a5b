"""Checkpoints that execute nothing: NumPy arrays and JSON in one zip, verified on load, written atomically, locked.

The file
--------
A checkpoint (`*.ckpt`) is a zip archive, like NumPy's `.npz`, with no pickle anywhere in it:

    checkpoint.json        the header: format name and version, the state as a JSON tree whose arrays are
                           references to members, and a SHA-256 checksum of the tree and of every array's
                           dtype, shape and bytes
    a0.npy, a1.npy, ...    the arrays, in NumPy's .npy format 1.0, little-endian

Loading reads the arrays with `allow_pickle=False`, recomputes the checksum and rebuilds the tree, so a file
from anywhere runs no code, and a flipped bit is an error instead of a silently wrong weight.
`unzip -p run.ckpt checkpoint.json` shows what a checkpoint holds. Any NumPy from 1.23 on reads the files.

What a state may hold: dicts with str keys (key order kept; an OrderedDict comes back as a plain dict),
lists, tuples (they come back as tuples), str, bool, None, int of any size (a PCG64 generator's 128-bit
state), float (nan, inf and -0.0 included), NumPy arrays and NumPy scalars of bool, integer (8-64 bit),
float16/32/64 or complex64/128 dtype. Arrays come back as writeable little-endian copies, scalars as
NumPy scalars of their dtype. Anything else (object arrays, string arrays, other classes, non-str keys) is
a TypeError at save, before any file is touched.

API
---
    save_checkpoint(path, state)          write one checkpoint atomically
    load_checkpoint(path) -> state        read and verify one; CheckpointError names the file and the problem
    atomic_write(path, write, mode="wb")  write(f) on a temporary file beside path, fsync, rename into place
    remove_stale_temps(path) -> [paths]   delete temporary files of a set left by killed runs
    CheckpointSet(path)                   the files of one run: last, best and history, kept consistent
    read_history(path) -> [records]       read a run's *.history.json (ValueError naming the file)
    RunLock(path)                         one run at a time saves to path (CheckpointLockedError otherwise)
    CheckpointError(ValueError)           every failure to read a checkpoint; its subclasses
    CheckpointNotFoundError               (also a FileNotFoundError) and CheckpointLockedError

A run's files
-------------
A run saving to `runs/eip4-seed0.ckpt` owns

    runs/eip4-seed0.ckpt           the LAST checkpoint: the single source of truth. Besides the state it
                                   holds the history and the best epoch's whole state, epoch and metric
    runs/eip4-seed0.best.ckpt      the best epoch's state (derived: rewritten from the last)
    runs/eip4-seed0.history.json   the per-epoch records as JSON (derived: rewritten from the last)
    runs/eip4-seed0.lock           the PID and host of the run writing them, while it runs

`CheckpointSet.save` writes the last checkpoint first, then the derived files, each atomically. A kill at
any moment leaves the old last checkpoint or the new one, and derived files that are at most one save
behind it; `CheckpointSet.reconcile()` at the start of the next run deletes the killed run's temporary
files and re-derives best and history wherever they disagree with the last checkpoint (best.ckpt's
checksum is recorded in the last checkpoint, so even a best from another run on the same path is caught).

Usage (examples/mnist.py)
-------------------------
    from minicnn.checkpoint import CheckpointSet, RunLock

    ckpts = CheckpointSet(args.save)          # paths: ckpts.last, ckpts.best, ckpts.history, ckpts.lock
    with RunLock(ckpts.last):                 # a second run saving there stops with CheckpointLockedError
        ckpts.reconcile()                     # killed runs' temp files gone; best and history match the last
        if args.resume:
            state = ckpts.load(args.resume)   # the state; also takes up that run's best so far
            trainer.load_state_dict(state["trainer"])
        ...
        state = {"trainer": trainer.state_dict(), "args": vars(args), "recipe": recipe}
        ckpts.save(state, trainer.history, metric=record["test_accuracy"], epoch=record["epoch"])
        ckpts.save(state, trainer.history)    # after Ctrl-C mid-epoch: no metric, the best stays
        print(ckpts.best_metric, ckpts.best_epoch)

`save` compares `metric` with the best so far (higher is better unless `CheckpointSet(path,
higher_is_better=False)`; nan never wins) and returns True when this save became the best. A run that
does not resume starts with no best: its first metric becomes the best, and its first save replaces the
whole set on that path. `load_checkpoint(ckpts.last)` and `load_checkpoint(ckpts.best)` return the state
passed to `save`, so readers such as examples/visualize.py need only `load_checkpoint`.
"""
import copy
import hashlib
import io
import json
import math
import os
import re
import secrets
import socket
import zipfile

import numpy as np

__all__ = ["CheckpointError", "CheckpointNotFoundError", "CheckpointLockedError", "save_checkpoint",
           "load_checkpoint", "atomic_write", "remove_stale_temps", "CheckpointSet", "RunLock"]

FORMAT = "minicnn-checkpoint"
VERSION = 2                 # version 1 was a pickle ("minicnn-checkpoint-1"); it is refused, never read
HEADER = "checkpoint.json"
OLD_FORMAT = b"minicnn-checkpoint-1"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
PICKLE_MAGIC = b"\x80"      # protocols 2 and later start with PROTO (0x80) and the protocol number
# dtypes written as they are (after conversion to little-endian): every NumPy from 1.23 on reads them
DTYPES = frozenset(np.dtype(t).newbyteorder("<").str for t in
                   ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"))
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # every member's timestamp: the same state gives the same bytes


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: missing, foreign, pickled, damaged or from a newer format."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No file at the checkpoint's path."""


class CheckpointLockedError(CheckpointError):
    """Another run is writing the checkpoints of this path."""


# ---- the tree: state <-> JSON nodes and arrays ---------------------------------------------------------
# A node is a JSON value: None, bool, int, str and finite floats stand for themselves, a JSON list for a
# list, and a JSON object is one of five tagged nodes: {"dict": {...}}, {"tuple": [...]}, {"float": "nan"}
# (or "inf", "-inf"), {"array": "a0", "dtype": "<f4", "shape": [3, 3]} (member a0.npy) or
# {"scalar": "a1", "dtype": "<i8"} (a NumPy scalar, stored as a 0-d array).

def _encode(value, arrays, where, active):
    """The node of `value`; its arrays are appended to `arrays` as (name, little-endian ndarray)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.generic, np.ndarray)):
        array = _plain_array(np.asarray(value), where)
        name = f"a{len(arrays)}"
        arrays.append((name, array))
        if isinstance(value, np.generic):
            return {"scalar": name, "dtype": array.dtype.str}
        return {"array": name, "dtype": array.dtype.str, "shape": list(array.shape)}
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else {"float": repr(float(value))}
    if isinstance(value, (dict, list, tuple)):
        if id(value) in active:
            raise TypeError(f"{where} contains itself; a checkpoint holds trees, not cycles")
        active.add(id(value))
        try:
            return _encode_container(value, arrays, where, active)
        finally:
            active.discard(id(value))
    raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}; a checkpoint holds dicts "
                    f"with str keys, lists, tuples, str, int, float, bool, None and NumPy arrays of numbers")


def _encode_container(value, arrays, where, active):
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has the key {key!r} ({type(key).__name__}); checkpoint dict keys are str")
            out[key] = _encode(item, arrays, f"{where}[{key!r}]", active)
        return {"dict": out}
    items = [_encode(item, arrays, f"{where}[{i}]", active) for i, item in enumerate(value)]
    return items if isinstance(value, list) else {"tuple": items}


def _plain_array(array, where):
    """`array` as little-endian data of a dtype every NumPy from 1.23 on reads; TypeError for any other."""
    if array.dtype.hasobject:
        raise TypeError(f"{where} is a NumPy array of dtype object; checkpoints hold arrays of numbers and bools "
                        f"only (reading object arrays would need pickle)")
    if array.dtype.kind not in "biufc" or array.dtype.newbyteorder("<").str not in DTYPES:
        raise TypeError(f"{where} is a NumPy array of dtype {array.dtype}; checkpoints hold bool, int8-int64, "
                        f"uint8-uint64, float16-float64, complex64 and complex128 arrays")
    return np.asarray(array, dtype=array.dtype.newbyteorder("<"))


TAGS = {"dict": {"dict"}, "tuple": {"tuple"}, "float": {"float"}, "array": {"array", "dtype", "shape"},
        "scalar": {"scalar", "dtype"}}


def _tag(node):
    """The tag of a JSON object node ("dict", "tuple", "float", "array" or "scalar"); ValueError otherwise."""
    for tag, keys in TAGS.items():
        if node.keys() == keys:
            return tag
    raise ValueError(f"unknown node {json.dumps(node)[:60]}")


def _references(node, out):
    """Member names of the arrays a node refers to, in the order they were written."""
    if isinstance(node, list):
        for item in node:
            _references(item, out)
    elif isinstance(node, dict):
        tag = _tag(node)
        if tag in ("array", "scalar"):
            name = node[tag]
            if not isinstance(name, str) or not re.fullmatch(r"a[0-9]+", name):
                raise ValueError(f"bad array reference {name!r}")
            if name not in out:
                out.append(name)
        elif tag == "dict":
            if not isinstance(node["dict"], dict):
                raise ValueError("a dict node that is not a JSON object")
            _references(list(node["dict"].values()), out)
        elif tag == "tuple":
            _references(node["tuple"], out)
    return out


def _decode(node, arrays):
    """The value of a node; `arrays` maps member names to the arrays read, whose dtype and shape it checks."""
    if isinstance(node, list):
        return [_decode(item, arrays) for item in node]
    if not isinstance(node, dict):
        return node
    tag = _tag(node)
    if tag == "dict":
        return {key: _decode(item, arrays) for key, item in node["dict"].items()}
    if tag == "tuple":
        return tuple(_decode(item, arrays) for item in node["tuple"])
    if tag == "float":
        if node["float"] not in ("nan", "inf", "-inf"):
            raise ValueError(f"bad float {node['float']!r}")
        return float(node["float"])
    array = arrays[node[tag]]
    if node["dtype"] != array.dtype.str or node.get("shape", []) != list(array.shape):
        raise ValueError(f"{node[tag]}.npy is not an array of dtype {node['dtype']}, shape {node.get('shape', [])}")
    return array if tag == "array" else array[()]


def _checksum(nodes, arrays):
    """SHA-256 over the tree (canonical JSON) and every array's dtype, shape and C-order bytes."""
    digest = hashlib.sha256(_canonical(nodes))
    for name, array in arrays:
        digest.update(_canonical([name, array.dtype.str, list(array.shape)]))
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _canonical(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


class _Payload:
    """A checkpoint ready to write: the encoded state, the CheckpointSet's bookkeeping, arrays and checksum."""

    def __init__(self, state, info=None):
        self.arrays = []
        nodes = [_encode(state, self.arrays, "state", set()), _encode(info, self.arrays, "set", set())]
        self.sha256 = _checksum(nodes, self.arrays)
        self.header = json.dumps({"format": FORMAT, "version": VERSION, "sha256": self.sha256,
                                  "state": nodes[0], "set": nodes[1]}, indent=1, allow_nan=False).encode("ascii")

    def write(self, file):
        with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr(_member(HEADER), self.header)
            for name, array in self.arrays:
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, array, version=(1, 0), allow_pickle=False)
                archive.writestr(_member(name + ".npy"), buffer.getvalue())


def _member(name):
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


# ---- reading -------------------------------------------------------------------------------------------
def _read(path):
    """(state, set bookkeeping or None, checksum) of a checkpoint file, verified; CheckpointError otherwise."""
    path = os.fspath(path)
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path}: no such checkpoint file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read: {exc.strerror}") from None
    with file:
        _check_kind(path, file.read(4096))
        file.seek(0)
        try:
            archive = zipfile.ZipFile(file)
        except zipfile.BadZipFile as exc:
            if "not a zip file" in str(exc):
                raise CheckpointError(f"{path} is damaged: truncated (its zip archive has no directory at "
                                      f"the end)") from None
            raise CheckpointError(f"{path} is damaged: {exc}") from None
        with archive:
            return _read_archive(path, archive)


def _check_kind(path, head):
    """Refuse, by their first bytes, files that are not a zip archive: pickles above all."""
    if not head:
        raise CheckpointError(f"{path} is empty, not a minicnn checkpoint")
    if head.startswith(PICKLE_MAGIC):
        if OLD_FORMAT in head:
            raise CheckpointError(f"{path} is a pickled checkpoint from an older minicnn; pickles can run code "
                                  f"when loaded, so they are not read: retrain, or convert it in a trusted "
                                  f"environment")
        raise CheckpointError(f"{path} is a pickle, not a minicnn checkpoint; pickles can run code when loaded, "
                              f"so they are not read")
    if not head.startswith(ZIP_MAGIC):
        raise CheckpointError(f"{path} is not a minicnn checkpoint (not a zip archive)")


def _read_archive(path, archive):
    if HEADER not in archive.namelist():
        raise CheckpointError(f"{path} is not a minicnn checkpoint (a zip archive without {HEADER})")
    try:
        header = json.loads(_read_member(path, archive, HEADER))
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path} is damaged: {HEADER} is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise CheckpointError(f"{path} is not a minicnn checkpoint (format {found!r})")
    if header.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {header.get('version')!r}; this minicnn "
                              f"reads version {VERSION} (was it written by a newer minicnn?)")
    try:
        nodes = [header["state"], header["set"]]
        names = _references(nodes, [])
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise CheckpointError(f"{path} is damaged: its header is malformed ({exc})") from None
    arrays = [(name, _read_array(path, archive, name)) for name in names]
    try:
        intact = _checksum(nodes, arrays) == header.get("sha256")
    except ValueError:  # a non-finite float written into the header by hand
        intact = False
    if not intact:
        raise CheckpointError(f"{path} is damaged: checksum mismatch")
    arrays = dict(arrays)
    try:
        state, info = _decode(nodes[0], arrays), _decode(nodes[1], arrays)
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise CheckpointError(f"{path} is damaged: its header is malformed ({exc})") from None
    return state, info, header["sha256"]


def _read_member(path, archive, member):
    try:
        return archive.read(member)
    except KeyError:
        raise CheckpointError(f"{path} is damaged: member {member} is missing") from None
    except zipfile.BadZipFile as exc:
        if "CRC" in str(exc):
            raise CheckpointError(f"{path} is damaged: checksum mismatch (CRC-32 of {member})") from None
        raise CheckpointError(f"{path} is damaged: {exc}") from None
    except (EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is damaged: member {member} is cut short ({exc})") from None


def _read_array(path, archive, name):
    data = _read_member(path, archive, name + ".npy")
    try:
        array = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except (ValueError, TypeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is damaged: member {name}.npy is not a readable array ({exc})") from None
    if array.dtype.str not in DTYPES:
        raise CheckpointError(f"{path} is damaged: member {name}.npy has dtype {array.dtype}")
    return array


# ---- one checkpoint ------------------------------------------------------------------------------------
def save_checkpoint(path, state):
    """Write `state` (see the module docstring for what it may hold) to `path` atomically."""
    payload = _Payload(state)  # TypeError for what a checkpoint cannot hold, before any file is opened
    atomic_write(path, payload.write)


def load_checkpoint(path):
    """The state saved at `path`, verified against its checksum; CheckpointError names the file and problem."""
    return _read(path)[0]


# ---- atomic writes and their temporary files -----------------------------------------------------------
def atomic_write(path, write, mode="wb"):
    """Call write(file) on a temporary file beside `path`, fsync it, rename it into place and fsync the folder:
    a killed process leaves the old file or the new one, never half of one. mode "w" writes UTF-8 text.

    The temporary file is `.<name>.<pid>.<8 hex digits>.tmp` in the same folder; a kill before the rename
    leaves it behind, for remove_stale_temps."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    """Make a rename in `folder` durable (POSIX; where folders cannot be opened, the rename stands as it is)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(path):
    """Delete the temporary files that killed runs left beside the checkpoint set of `path` (the last
    checkpoint's path); returns their paths.

    Only names of atomic_write's pattern for the set's own files (last, best, history) are candidates, and
    of those only the ones whose writer is gone: its PID is not running on this machine, or is this process's
    own (a leftover of an earlier process with the same PID). Call it before this process writes there."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    names = [os.path.basename(p) for p in _set_paths(path)[:3]]
    try:
        entries = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    removed = []
    for entry in entries:
        pid = _temp_writer(entry, names)
        if pid is not None and (pid == os.getpid() or not _pid_alive(pid)):
            try:
                os.unlink(os.path.join(folder, entry))
            except FileNotFoundError:
                continue
            removed.append(os.path.join(folder, entry))
    return removed


def _temp_writer(entry, names):
    """The PID in a temporary file name `.<name>.<pid>.<hex>.tmp` of one of `names`; None for any other file."""
    for name in names:
        prefix = f".{name}."
        if entry.startswith(prefix) and entry.endswith(".tmp"):
            match = re.fullmatch(r"([0-9]+)\.[0-9a-f]{8}", entry[len(prefix):-len(".tmp")])
            if match:
                return int(match.group(1))
    return None


def _pid_alive(pid):
    """Whether process `pid` runs on this machine (where that cannot be asked, it is assumed to)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no PID is that large
        return False
    except OSError:  # PermissionError: it runs, as another user
        return True
    return True


def _set_paths(path):
    """(last, best, history, lock) of the checkpoint set whose last checkpoint is `path`."""
    path = os.fspath(path)
    stem = path[:-len(".ckpt")] if path.endswith(".ckpt") else path
    return path, stem + ".best.ckpt", stem + ".history.json", stem + ".lock"


# ---- a run's consistent set: last, best, history -------------------------------------------------------
class CheckpointSet:
    """The checkpoint files of one run, kept consistent through kills: the last checkpoint holds the truth
    (state, history, best state with its epoch and metric); best.ckpt and history.json are derived from it."""

    def __init__(self, path, higher_is_better=True):
        self.last, self.best, self.history, self.lock = _set_paths(path)
        self.higher_is_better = higher_is_better
        self._best = None          # {"epoch", "metric", "sha256", "state"} of the best so far, or None
        self._best_on_disk = None  # checksum of the best.ckpt known to be on disk

    @property
    def best_epoch(self):
        return None if self._best is None else self._best["epoch"]

    @property
    def best_metric(self):
        return None if self._best is None else self._best["metric"]

    def save(self, state, history, metric=None, epoch=None):
        """Write the last checkpoint (holding `state`, `history` and the best so far), then best.ckpt when the
        best changed, then history.json; True when `metric` (this epoch's) made this save the best.

        history: the per-epoch records (a list of JSON-able dicts) for history.json. epoch: the number
        recorded with a new best (default len(history)). No metric (a save mid-epoch) keeps the best."""
        history = list(history)
        history_text = _history_text(history)  # TypeError before any file is written
        best = self._best
        if metric is not None and self._better(float(metric)):
            best_state = copy.deepcopy(state)
            epoch = len(history) if epoch is None else int(epoch)
            payload = _Payload(best_state, _best_info(epoch, float(metric)))
            best = {"epoch": epoch, "metric": float(metric), "sha256": payload.sha256, "state": best_state}
        last = _Payload(state, {"role": "last", "history": history, "best": best})
        atomic_write(self.last, last.write)  # the commit: what follows is derived from this file
        became_best, self._best = best is not self._best, best
        self._derive(history_text)
        return became_best

    def load(self, path=None):
        """The state of the last checkpoint (or of the checkpoint at `path`); its best so far becomes this
        set's, so the next saves carry it on."""
        state, info, sha256 = _read(path or self.last)
        role = info.get("role") if isinstance(info, dict) else None
        if role == "last":
            self._best = info["best"]
        elif role == "best":  # resuming from a best checkpoint: it is the best so far
            self._best = {"epoch": info["epoch"], "metric": info["metric"], "sha256": sha256,
                          "state": copy.deepcopy(state)}
        else:
            self._best = None
        return state

    def reconcile(self):
        """Delete temporary files of killed runs and re-derive best.ckpt and history.json from the last
        checkpoint where they disagree with it; returns the paths removed or rewritten.

        Call it at the start of a run, holding the RunLock. CheckpointError when the last checkpoint itself
        cannot be read. It does not change which best this object carries on (load does)."""
        done = remove_stale_temps(self.last)
        if not os.path.exists(self.last):
            return done
        _, info, _ = _read(self.last)
        if not (isinstance(info, dict) and info.get("role") == "last"):
            return done  # written by save_checkpoint: nothing is derived from it
        best = info["best"]
        if best is None:
            if _remove(self.best):
                done.append(self.best)
        elif _checksum_of(self.best) != best["sha256"]:
            self._write_best(best)
            done.append(self.best)
        else:
            self._best_on_disk = best["sha256"]
        text = _history_text(info["history"])
        if _text_of(self.history) != text:
            atomic_write(self.history, lambda f: f.write(text), mode="w")
            done.append(self.history)
        return done

    # ---- internals -----------------------------------------------------------------------------------
    def _better(self, metric):
        if math.isnan(metric):
            return False
        if self._best is None or math.isnan(self._best["metric"]):
            return True
        return metric > self._best["metric"] if self.higher_is_better else metric < self._best["metric"]

    def _derive(self, history_text):
        """best.ckpt and history.json from the best and history just written into the last checkpoint."""
        if self._best is None:
            _remove(self.best)
            self._best_on_disk = None
        elif self._best_on_disk != self._best["sha256"]:
            self._write_best(self._best)
        atomic_write(self.history, lambda f: f.write(history_text), mode="w")

    def _write_best(self, best):
        atomic_write(self.best, _Payload(best["state"], _best_info(best["epoch"], best["metric"])).write)
        self._best_on_disk = best["sha256"]


def _best_info(epoch, metric):
    return {"role": "best", "epoch": epoch, "metric": metric}


def read_history(path):
    """The per-epoch records of a run's *.history.json (CheckpointSet writes it): a list of dicts, each with its
    "epoch". ValueError, one line naming the file, when it is missing or unreadable, not JSON, or not such a list."""
    try:
        with open(path, encoding="utf-8") as f:
            history = json.load(f)
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON ({exc})") from None
    if not (isinstance(history, list) and all(isinstance(h, dict) and "epoch" in h for h in history)):
        raise ValueError(f"{path} is not the history of a run (a list of epoch records, each with its epoch)")
    return history


def _history_text(history):
    try:
        return json.dumps(history, indent=1) + "\n"
    except (TypeError, ValueError) as exc:
        raise TypeError(f"history must be a list of JSON records: {exc}") from None


def _checksum_of(path):
    """The checksum of the checkpoint at `path`, verified; None when it is missing or unreadable."""
    try:
        return _read(path)[2]
    except CheckpointError:
        return None


def _text_of(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _remove(path):
    """Delete `path` if it exists; whether it did."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    _fsync_folder(os.path.dirname(os.path.abspath(path)))
    return True


# ---- one run at a time ---------------------------------------------------------------------------------
_held_locks = set()  # lock files this process holds


class RunLock:
    """`with RunLock(path):` -- only one run writes the checkpoints of `path` at a time.

    The lock is a file beside the checkpoint (runs/x.ckpt -> runs/x.lock), created atomically (O_CREAT |
    O_EXCL) and holding the PID and host of its run; a second run stops with CheckpointLockedError naming
    that PID. A lock whose run is gone (its PID no longer runs on this host) is stale and taken over, so a
    killed run does not block the next. Released (the file deleted) when the with-block ends."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.file = _set_paths(self.path)[3]
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def acquire(self):
        """Take the lock; CheckpointLockedError when another live run holds it."""
        os.makedirs(os.path.dirname(os.path.abspath(self.file)), exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(10):  # each pass either takes the lock, raises, or removes a stale or vanished one
            try:
                fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale(me)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            _held_locks.add(os.path.abspath(self.file))
            return self
        raise CheckpointLockedError(f"{self.path}: its lock file {self.file} keeps changing; is another run "
                                    f"starting there?")

    def release(self):
        """Give the lock back (delete its file if it is still this run's); nothing when not held."""
        if not self.held:
            return
        self.held = False
        _held_locks.discard(os.path.abspath(self.file))
        owner = _lock_owner(self.file)
        if owner is not None and owner[0] == os.getpid() and owner[1] == socket.gethostname():
            _remove(self.file)

    def _take_over_if_stale(self, me):
        """Remove the existing lock file if its run is gone; raise CheckpointLockedError if it lives."""
        try:
            with open(self.file, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return  # released meanwhile: try again
        owner = _parse_lock(text)
        if owner is None:
            raise CheckpointLockedError(f"{self.path} is locked by {self.file}, which names no run; delete that "
                                        f"file if no run is writing {self.path}")
        pid, host = owner
        if host == me["host"] and pid == me["pid"] and os.path.abspath(self.file) in _held_locks:
            raise CheckpointLockedError(f"{self.path} is already locked by this process (PID {pid})")
        stale = host == me["host"] and (pid == me["pid"] or not _pid_alive(pid))
        if not stale:
            where = "" if host == me["host"] else f" on {host}"
            raise CheckpointLockedError(f"{self.path} is being written by another run (PID {pid}{where}); wait "
                                        f"for it or choose another --save path")
        with open(self.file, encoding="utf-8") as f:  # not taken over by another run since it was read
            if f.read() != text:
                return
        _remove(self.file)


def _lock_owner(path):
    try:
        with open(path, encoding="utf-8") as f:
            return _parse_lock(f.read())
    except OSError:
        return None


def _parse_lock(text):
    """(pid, host) from a lock file's text, or None when it holds no such pair."""
    try:
        owner = json.loads(text)
        pid, host = owner["pid"], owner["host"]
    except (ValueError, TypeError, KeyError):
        return None
    if isinstance(pid, bool) or not isinstance(pid, int) or not isinstance(host, str):
        return None
    return pid, host

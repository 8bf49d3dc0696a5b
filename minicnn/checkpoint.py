"""Checkpoints that survive a crash: everything needed to resume, written to a temporary file and renamed into place.

A checkpoint is a pickled dict of NumPy arrays and plain values (weights, batch-norm statistics,
optimizer and schedule state, random-generator states, history). Load only files you trust:
unpickling can run code, as with any pickle-based format (PyTorch's included).
"""
import os
import pickle
import tempfile

FORMAT = "minicnn-checkpoint-1"


def atomic_write(path, write, mode="wb"):
    """Call write(file) on a temporary file beside `path`, then rename it into place: a killed process leaves
    the old file or the new one, never half of one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path, state):
    """Write dict `state` to `path` atomically."""
    atomic_write(path, lambda f: pickle.dump({"format": FORMAT, **state}, f, protocol=pickle.HIGHEST_PROTOCOL))


def load_checkpoint(path):
    """Read a checkpoint written by save_checkpoint; a foreign or damaged file is a clear error."""
    try:
        with open(path, "rb") as f:
            state = pickle.load(f)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path} is not a readable minicnn checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a minicnn checkpoint (format {state.get('format') if isinstance(state, dict) else None!r})")
    return state

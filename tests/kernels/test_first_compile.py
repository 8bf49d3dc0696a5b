"""kernels/cpu.py's on_first_compile: a notice just before minicnn's first Numba compilation in a process (a cache
miss), never when every kernel comes from Numba's disk cache. Each case runs in a fresh Python with its own
NUMBA_CACHE_DIR."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba")

# Registers the notice, then a listener of its own that logs every compilation's start: Numba calls listeners in the
# order they were registered, so the log shows whether the notice came before the first compilation.
SCRIPT = r"""
import json
import numpy as np
from numba.core import event
from minicnn.kernels import cpu

log = []
cpu.on_first_compile(lambda info: log.append(["notice", info]))
cpu.on_first_compile(lambda info: log.append(["second notice", info]))

class Compiles(event.Listener):
    def on_start(self, ev):
        log.append(["compile", ev.data["dispatcher"].py_func.__module__])
    def on_end(self, ev):
        pass

event.register("numba:compile", Compiles())
cpu.relu_forward(np.ones(8, np.float32))
cpu.relu_forward(np.ones(8, np.float64))   # a second cache miss: no second notice
print(json.dumps(log))
"""


def run(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), MINICNN_KERNELS="numba")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_notice_comes_once_before_the_first_compilation_and_not_when_the_cache_is_warm(tmp_path):
    cold = run(tmp_path)
    notices = [entry for entry in cold if entry[0] != "compile"]
    assert [kind for kind, _ in notices] == ["notice", "second notice"]   # each callback once
    assert cold[:2] == notices and cold[2][0] == "compile"                # before any compilation
    assert any(entry[1].startswith("minicnn.kernels") for entry in cold if entry[0] == "compile")
    info = notices[0][1]
    assert info["cache_dir"] == str(tmp_path) and info["seconds"] > 0
    warm = run(tmp_path)
    assert warm == []   # everything loaded from the cache: no compilation, no notice


def test_cache_dir_is_numbas_choice(tmp_path, monkeypatch):
    """NUMBA_CACHE_DIR when set; else the kernels' folder (Numba writes a __pycache__ beside each source), or Numba's
    user-wide cache folder when that is read-only."""
    import numba
    from minicnn.kernels import cpu
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    assert cpu.cache_dir() == str(tmp_path)
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    kernels_folder = os.path.dirname(os.path.abspath(cpu.__file__))
    monkeypatch.setattr(cpu.os, "access", lambda path, mode: True)
    assert cpu.cache_dir() == kernels_folder
    monkeypatch.setattr(cpu.os, "access", lambda path, mode: False)
    assert cpu.cache_dir().rstrip(os.sep).endswith("numba") and cpu.cache_dir() != kernels_folder

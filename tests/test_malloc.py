"""minicnn/_malloc.py: glibc's thresholds raised at import, unless the user opts out or set glibc's own tunables."""
import os
import subprocess
import sys

import pytest

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def applied_in_a_fresh_process(**env):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("MINICNN_SYSTEM_MALLOC", "GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    clean.update(env)
    clean["PYTHONPATH"] = ROOT + os.pathsep + clean.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", "import minicnn, minicnn._malloc as m; print(m._applied)"],
                         env=clean, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


@linux_only
def test_import_raises_the_thresholds():
    # True with glibc; a Linux without glibc (musl) has no mallopt and leaves malloc alone
    import ctypes
    has_mallopt = hasattr(ctypes.CDLL(None), "mallopt")
    assert applied_in_a_fresh_process() == str(has_mallopt)


@linux_only
@pytest.mark.parametrize("env", [{"MINICNN_SYSTEM_MALLOC": "1"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"},
                                 {"MALLOC_TRIM_THRESHOLD_": "4096"}])
def test_the_user_can_keep_the_system_malloc(env):
    assert applied_in_a_fresh_process(**env) == "False"

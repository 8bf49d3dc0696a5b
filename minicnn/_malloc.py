"""Keep freed memory in the process: a training step allocates and frees the same large arrays every time.

glibc's malloc hands large blocks back to the operating system when they are freed (blocks above the
mmap threshold are unmapped; free space above the trim threshold at the top of the heap is trimmed).
The next step then allocates them again, and the kernel maps in fresh zeroed pages one page fault at
a time: a 5.5 MB activation costs ~1,400 faults before the first value is written, more than the
ReLU that writes it. Raising both thresholds keeps blocks up to MMAP_THRESHOLD in the heap and the
heap's free space in the process, so the pages are reused warm. Measured on eip4 (benchmarks/README.md).
The process's resident memory then stays at its peak instead of shrinking between steps.

Linux with glibc only; elsewhere, or with MINICNN_SYSTEM_MALLOC=1, or when the user set glibc's own
tunables (GLIBC_TUNABLES, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_), nothing is changed.
"""
import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1          # mallopt parameter numbers, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2 ** 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 2 ** 30

_applied = None


def keep_freed_memory():
    """Apply the two thresholds once; returns True when they were set."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply():
    if not sys.platform.startswith("linux") or os.environ.get("MINICNN_SYSTEM_MALLOC") == "1":
        return False
    if any(os.environ.get(v) for v in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))

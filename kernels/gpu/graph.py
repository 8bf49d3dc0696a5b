"""What a CUDA graph needs from the kernels: while a step is recorded, per-step host values are read from device memory.

A replay repeats every kernel argument as recorded. Dropout keys change at every step, so dropout.cu and
batchnorm.cu take the key as key + *key_offset: eagerly, key_offset points to a zero; while
minicnn/cuda_graph.py records a step inside `recording(slots)`, the kernels get key 0 and the key's device
slot (`slots.slot(key)`), and the host writes each step's keys into the slots before a replay. Host values
that change from step to step but have no slot (the optimizer's step count, a key drawn outside the
recording) are frozen by a recording; `recording` yields the list of their names.
"""
import contextlib

import numpy as np

from .runtime import cp

frozen_scalars = []

# Dropout keys change at every step, so dropout.cu and batchnorm.cu take the key as key + *key_offset. Eagerly,
# key_offset points to _ZERO_KEY. While minicnn/cuda_graph.py captures a step it sets `key_slots` to an object
# whose slot(key) returns a one-value device array, and the kernels get key 0 and that slot: the host writes
# the step's keys into the slots before each replay, so replays draw fresh masks exactly as eager steps do.
_key_slots = None
_ZERO_KEY = cp.zeros(1, dtype=np.uint64)


def _capturing():
    """Is the current stream being captured into a CUDA graph? (Never the legacy default stream, ptr 0.)"""
    stream = cp.cuda.get_current_stream()
    return stream.ptr != 0 and stream.is_capturing()

def _key_args(p, key):
    """The kernel arguments (key, key_offset) of a dropout key: (key, a zero) eagerly; while a CUDA graph is
    captured, (0, the key's slot) from `key_slots`, or the key frozen (listed in frozen_scalars) without them."""
    if p > 0 and _capturing():
        slot = _key_slots.slot(key) if _key_slots is not None else None
        if slot is not None:
            return np.uint64(0), slot
        frozen_scalars.append("dropout key")
    return np.uint64(key), _ZERO_KEY



@contextlib.contextmanager
def recording(slots):
    """While a step is recorded: dropout keys are read from `slots` (an object with slot(key) -> a one-value device
    array, or None); yields the list that collects the names of host values the recording freezes."""
    global _key_slots
    frozen_scalars.clear()
    _key_slots = slots
    try:
        yield frozen_scalars
    finally:
        _key_slots = None

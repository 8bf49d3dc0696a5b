"""CUDA graphs: record the kernel launches of one training step once, then replay them all with one call.

Eager execution makes one Python call and one kernel launch per operation; for a small network on a
big GPU each launch costs the host more time than the GPU spends on it, so the host sets the pace.
A CUDA graph is a recording of a stream's launches (kernels, copies, memsets, with their arguments and
buffers); `graph.launch()` replays the whole recording at once.

    step = CapturedStep(forward_backward, warmup=1)   # nothing runs yet
    loss, correct = step(xb, yb)   # every call is one real step on its own inputs:
                                   # eager for the first `warmup` calls, recorded at the next, replayed after

How (CuPy stream capture):
  1. warm-up: the first `warmup` calls run `step` eagerly, so every kernel is compiled and every lazily
     created buffer exists before the recording;
  2. capture: the next call copies its inputs into STATIC input buffers and runs `step` once on a stream
     in capture mode: the Python code runs, but no kernel does -- each launch is recorded. Its buffers come
     from a memory pool of its own that nothing else uses afterwards, so the addresses baked into the
     graph stay valid and private. Then the graph is launched once: that call's step is done;
  3. replay: each later call copies its inputs into the static buffers, writes the step's dropout keys
     (below) and launches the graph; it returns the outputs of the capture call (the same arrays, refreshed).
GEMMs: CuPy refuses to record cuBLAS calls, so while capturing, the backend multiplies with its own tiled
kernel (kernels/gemm.cu) -- the kernel eager steps use by default too.

Per-step host values. A replay repeats every kernel argument as recorded, but eager training passes a
few values that change at every step:
  - dropout keys: minicnn.random.draw_key is watched during the capture (random.observing_keys), and the
    kernels read each key from a device slot (key + *key_offset: kernels/dropout.cu, batchnorm.cu;
    kernels/gpu/graph.py). Before every replay the
    host draws from the same generators in the same order as the eager step would, and writes the keys
    into the slots: the replays draw exactly the masks eager steps would draw;
  - the optimizer's step count and learning rate (Adam's bias corrections, schedules): keep the
    optimizer's `step()` OUTSIDE the captured function, as `minicnn.training.Trainer` does (one eager
    launch per step). If it is inside, `frozen` names the frozen values and `strict=True` refuses.
So a captured forward + backward followed by an eager `optimizer.step()` trains exactly like eager
steps, mask for mask (tests/test_gpu.py checks the weights after several steps, bit for bit).
"""
import numpy as np

from . import random as mrandom
from .backend import kernels_for, require_gpu

MAX_KEYS = 256  # dropout keys one captured step may draw (eip4: 7)


class _KeySlots:
    """The dropout keys a captured step reads from device memory: slot i holds the i-th key drawn while recording."""

    def __init__(self, cp):
        self.values = cp.zeros(MAX_KEYS, dtype=np.uint64)
        self.generators, self.keys = [], []

    def drawn(self, generator, key):
        """minicnn.random.draw_key's observer during the capture."""
        if len(self.keys) == MAX_KEYS:
            raise RuntimeError(f"a captured step may draw at most {MAX_KEYS} dropout keys")
        self.generators.append(generator)
        self.keys.append(key)

    def slot(self, key):
        """The one-value device array a kernel reads `key` from (kernels/gpu/graph.py asks while capturing), or None
        for a key that was not drawn during the capture (the kernel then gets it by value: frozen)."""
        for i in range(len(self.keys) - 1, -1, -1):
            if self.keys[i] == key:
                return self.values[i:i + 1]
        return None

    def write(self, keys):
        """Put `keys` into the slots on the current stream: one fill per key (a launch with the key as its
        argument, so nothing is read from host memory later)."""
        for i, key in enumerate(keys):
            self.values[i:i + 1].fill(np.uint64(key))


class CapturedStep:
    """`step(*inputs) -> outputs`: eager for the first `warmup` calls, then recorded once into a CUDA graph and
    replayed at every call (GPU only). Inputs keep the shapes and dtypes of the capture call."""

    def __init__(self, step, warmup=1, strict=False):
        self._cp = require_gpu()
        if warmup < 0:
            raise ValueError(f"warmup must be a non-negative number of eager calls, got {warmup}")
        self._step, self.warmup, self.strict = step, warmup, strict
        self.calls = 0
        self.graph = self.inputs = self.outputs = None
        self.frozen = []

    def __call__(self, *inputs):
        """One step on `inputs`; returns its outputs (on a replay, the capture call's arrays, refreshed).

        Captures and replays run on the graph's own stream, ordered after the caller's earlier work and
        before its later work (two events), so the caller sees the results as it would an eager step's."""
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            return self._step(*inputs)
        cp = self._cp
        caller = cp.cuda.get_current_stream()
        if self.graph is None:
            self._capture(inputs, caller)
            keys = self._slots.keys
        else:
            keys = [mrandom.draw_key(g) for g in self._slots.generators]  # the draws an eager step would make
        self.stream.wait_event(caller.record())
        with self.stream:
            self._copy_in(inputs)
            self._slots.write(keys)
            self.graph.launch(stream=self.stream)
        caller.wait_event(self.stream.record())
        return self.outputs

    def _capture(self, inputs, caller):
        cp = self._cp
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.inputs = tuple(cp.empty_like(a) for a in inputs)  # the static inputs the graph reads
        self._slots = _KeySlots(cp)
        self._pool = cp.cuda.MemoryPool()  # the graph's private memory, alive as long as the graph
        self.stream.wait_event(caller.record())
        kernels = kernels_for(self.inputs[0])
        with kernels.recording(self._slots) as frozen, mrandom.observing_keys(self._slots.drawn):
            with self.stream, cp.cuda.using_allocator(self._pool.malloc):
                self.stream.begin_capture()
                try:
                    self.outputs = self._step(*self.inputs)
                finally:
                    graph = self.stream.end_capture()  # also on an error: leave the stream usable
        self.graph = graph
        self.frozen = sorted(set(frozen))
        if self.strict and self.frozen:
            raise RuntimeError(f"this step passes host values that a CUDA graph would freeze: {', '.join(self.frozen)}; "
                               "its replays would not train like eager steps (see minicnn/cuda_graph.py)")

    def _copy_in(self, inputs):
        if len(inputs) != len(self.inputs):
            raise ValueError(f"the captured step takes {len(self.inputs)} inputs, got {len(inputs)}")
        for buf, a in zip(self.inputs, inputs):
            if tuple(a.shape) != tuple(buf.shape) or a.dtype != buf.dtype:
                raise ValueError(f"a CUDA graph replays fixed shapes: expected {tuple(buf.shape)} {buf.dtype}, "
                                 f"got {tuple(a.shape)} {a.dtype} (run that step eagerly, e.g. an epoch's last batch)")
            buf[...] = a

    def synchronize(self):
        if self.graph is not None:
            self.stream.synchronize()

"""CUDA graphs: record the kernel launches of one training step once, then replay them all with one call.

Eager execution makes one Python call and one kernel launch per operation; for a small network on a
big GPU each launch costs the host more time than the GPU spends on it, so the host sets the pace.
A CUDA graph is a recording of a stream's launches (kernels, copies, memsets, with their arguments and
buffers); `graph.launch()` replays the whole recording at once.

    step = CapturedStep(train_step, x_example, y_example)   # warm-up runs, then one capture
    loss = step(xb, yb)       # copy xb, yb into the static inputs, replay; returns the static outputs

How the recording is made (CuPy stream capture):
  1. warm-up: `warmup` eager calls on the example inputs, so every kernel is compiled and every lazily
     created buffer (optimizer state, ...) exists. THESE ARE REAL TRAINING STEPS;
  2. capture: one call of `train_step` on a stream in capture mode: nothing runs, every launch is
     recorded. Its buffers come from a memory pool of its own that nothing else uses afterwards, so
     the addresses baked into the graph stay valid and private;
  3. replay: the new batch is copied into the STATIC input buffers the graph reads, then the graph is
     launched; the outputs (e.g. the loss) are the arrays returned at capture time, refreshed.
GEMMs: CuPy refuses to record cuBLAS calls, so while capturing, the backend multiplies with its own
tiled kernel (kernels/gemm.cu) instead.

What a replay cannot change: every scalar the host passed to a kernel is frozen at its captured
value. `frozen` lists those of them that eager training changes at every step (kernels/gpu.py
records them): "dropout key" (the same dropout mask at every replay) and "Adam step count" (Adam's
bias corrections stay those of the captured step). The learning rate is frozen as well: capture
again when a schedule changes it. So a captured step is an exact training step for a network
without dropout trained by SGD (which has no step count); otherwise the timing is representative --
the same kernels on the same data -- but the training is not the eager one, and `strict=True`
refuses to capture such a step.
"""
from .backend import require_gpu


class CapturedStep:
    """`step(*inputs) -> outputs` recorded once into a CUDA graph and replayed on every call (GPU only)."""

    def __init__(self, step, *example_inputs, warmup=3, strict=False):
        cp = require_gpu()
        from minicnn.kernels import gpu as K
        self._cp = cp
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.inputs = tuple(cp.empty_like(a) for a in example_inputs)  # the static inputs the graph reads
        self._pool = cp.cuda.MemoryPool()  # the graph's private memory, alive as long as the graph
        with self.stream:
            self._copy_in(example_inputs)
            for _ in range(warmup):
                step(*self.inputs)
            self.stream.synchronize()
            K.frozen_scalars.clear()
            with cp.cuda.using_allocator(self._pool.malloc):
                self.stream.begin_capture()
                try:
                    self.outputs = step(*self.inputs)
                except BaseException:
                    self.stream.end_capture()  # leave the stream usable, then report the real error
                    raise
                self.graph = self.stream.end_capture()
        self.frozen = sorted(set(K.frozen_scalars))
        if strict and self.frozen:
            raise RuntimeError(f"this step passes host scalars that a CUDA graph would freeze: {', '.join(self.frozen)}; "
                               "its replays would not train like eager steps (see minicnn/cuda_graph.py)")

    def _copy_in(self, inputs):
        if len(inputs) != len(self.inputs):
            raise ValueError(f"the captured step takes {len(self.inputs)} inputs, got {len(inputs)}")
        for buf, a in zip(self.inputs, inputs):
            if tuple(a.shape) != tuple(buf.shape) or a.dtype != buf.dtype:
                raise ValueError(f"a CUDA graph replays fixed shapes: expected {tuple(buf.shape)} {buf.dtype}, "
                                 f"got {tuple(a.shape)} {a.dtype} (e.g. drop the last, smaller batch)")
            buf[...] = a

    def __call__(self, *inputs):
        """Copy `inputs` into the static buffers and replay the step; returns the captured outputs.

        The replay runs on the graph's own stream, ordered after the caller's earlier work and before
        its later work (two events), so the caller sees the results as it would an eager step's."""
        caller = self._cp.cuda.get_current_stream()
        self.stream.wait_event(caller.record())
        with self.stream:
            self._copy_in(inputs)
            self.graph.launch(stream=self.stream)
        caller.wait_event(self.stream.record())
        return self.outputs

    def synchronize(self):
        self.stream.synchronize()

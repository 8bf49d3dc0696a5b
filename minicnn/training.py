"""The training loop as one object: epochs of mini-batches, evaluation, and a state that resumes mid-epoch exactly.

Everything that decides what happens next lives in `Trainer.state_dict()`: weights and batch-norm
statistics, optimizer moments, the schedule, the epoch and batch reached, the running sums of the
epoch so far, and the random generators (dropout masks, augmentation). So a run stopped after any
batch and resumed from its checkpoint takes exactly the steps an uninterrupted run would.
Loss and accuracy are summed on the device; the host reads them to print and to check that the loss
is a finite number (NonFiniteLossError otherwise).
"""
import math
import time
import warnings

import numpy as np

from . import functional as F
from . import random as mrandom
from .autograd import no_grad
from .backend import get_array_module, to_device
from .data.augment import random_affine
from .data.loader import DataLoader, epoch_seed, to_float_images
from .nn.fuse import fuse
from .progress import progress
from .tensor import Tensor


class NonFiniteLossError(RuntimeError):
    """Training produced a loss that is not a finite number (nan or inf); epoch and batch count from 1."""

    def __init__(self, epoch, batch, batches, loss):
        self.epoch, self.batch, self.batches, self.loss = epoch, batch, batches, loss
        super().__init__(f"the training loss is {loss} at epoch {epoch}, batch {batch} of {batches} (a learning "
                         f"rate too high for the network, or a NaN or inf in the data)")


class Trainer:
    """Trains `model` with `optimizer` on train_data = (x, y), evaluating on test_data after each epoch.

    The last batch: when the training set leaves a final batch of a single image (batch_size > 1), that
    image joins the batch before it, which then holds batch_size + 1 images (DataLoader(merge_single=True)).
    Batch norm in training mode normalises each channel over the batch, and eip4's last batch norm sees a
    1x1 map: one image would give it one value per channel and nothing to normalise. Every image is used
    in every epoch; len(trainer.loader) is the number of steps per epoch.

    A loss that is not finite stops training (stop_on_nonfinite=True, the default) with NonFiniteLossError
    naming the epoch and the batch where it first appeared; the model and optimizer then hold the bad
    values, so continue from a checkpoint, not from this state. On the CPU the loss is read after every
    step (check_each_step: reading a 0-d array costs well under a microsecond, far below 1% of a step).
    On the GPU reading it would wait for the step to finish, so each step's loss is kept on the device and
    checked at the syncs the progress display makes anyway (about once a second) and at the end of the epoch:
    the error still names the first bad batch, a few steps after it ran. stop_on_nonfinite=False trains on.

    The progress bar is created after the epoch's first step: a first step slowed by compiling kernels
    (or recording a CUDA graph) is not in its rate or time left.

    cuda_graph=True (GPU only): every full batch's forward and backward after the first is replayed from a CUDA
    graph captured once (minicnn/cuda_graph.py); the optimizer step stays eager. Same arithmetic and the same
    dropout masks as eager steps, at a fraction of the host time. A step that cannot be recorded (one that
    reads a device value on the host, say) gives a warning, and training goes on eagerly."""

    def __init__(self, model, optimizer, train_data, test_data, batch_size=128, seed=0,
                 epoch_schedule=None, batch_schedule=None, augment=None, cuda_graph=False, stop_on_nonfinite=True):
        if cuda_graph and get_array_module(train_data[0]) is np:
            raise ValueError("cuda_graph=True needs the data and the model on the GPU (a CUDA graph is a GPU recording)")
        self.cuda_graph, self._captured = cuda_graph, None
        self.model, self.optimizer = model, optimizer
        self.run_model = fuse(model)   # the same layers, ReLU -> BatchNorm2d -> Dropout fused in training (nn/fuse.py)
        self.epoch_schedule, self.batch_schedule = epoch_schedule, batch_schedule
        self.x_test, self.y_test = test_data
        self.loader = DataLoader(*train_data, batch_size=batch_size, shuffle=True, seed=seed, merge_single=True)
        self.seed, self.augment = seed, augment
        self.stop_on_nonfinite = bool(stop_on_nonfinite)
        self.check_each_step = get_array_module(train_data[0]) is np  # else at the syncs (see the class docstring)
        self.epoch, self.batch = 0, 0           # completed epochs; completed batches of the current epoch
        self.sums = [0.0, 0.0, 0]               # loss * n, correct, n of the current epoch so far
        self.aug_rng_state = None
        self.history = []
        self.stop_requested = False

    # ---- one epoch ---------------------------------------------------------------------------
    def _augment_rng(self):
        rng = np.random.default_rng(epoch_seed(self.seed + 1, self.epoch))
        if self.aug_rng_state is not None:
            rng.bit_generator.state = self.aug_rng_state
        return rng

    def forward_backward(self, xb, yb):
        """Forward, loss and backward (gradients into the optimizer's buffer); returns the loss and the number of
        correct predictions as device scalars. What a CUDA graph records (the update stays outside)."""
        out = self.run_model(Tensor(xb))
        loss = F.cross_entropy(out, yb)
        self.optimizer.zero_grad()
        loss.backward()
        return loss.data, (out.data.argmax(axis=1) == yb).sum()

    def train_step(self, xb, yb):
        """Forward, loss, backward, update; returns the loss and number of correct predictions as device scalars."""
        loss = None
        if self.cuda_graph and len(yb) == self.loader.batch_size:  # a smaller last batch runs eagerly
            if self._captured is None:
                from .cuda_graph import CapturedStep
                self._captured = CapturedStep(self.forward_backward, warmup=1, strict=True)
            try:
                loss, ok = self._captured(xb, yb)
            except Exception as exc:  # a step that cannot be recorded (e.g. it reads a value on the host)
                if self._captured.graph is not None:
                    raise  # the recording worked: this is a real error
                warnings.warn(f"training step could not be recorded into a CUDA graph ({type(exc).__name__}: {exc}); "
                              "training goes on eagerly (pass cuda_graph=False, or --no-cuda-graph, to skip trying)")
                self.cuda_graph, self._captured = False, None
        if loss is None:
            loss, ok = self.forward_backward(xb, yb)
        self.optimizer.step()
        if self.batch_schedule is not None:
            self.batch_schedule.step()
        return loss, ok

    def train_epoch(self, epochs_total=None, show_progress=True):
        """Train until the end of the epoch (or until stop_requested); returns the epoch's record, or None if stopped.
        NonFiniteLossError when the loss stops being a finite number (see the class docstring)."""
        self.model.train()
        start = time.perf_counter()
        rng = self._augment_rng() if self.augment else None
        xp = get_array_module(self.loader.x)
        loss_sum, correct, count = xp.asarray(self.sums[0]), xp.asarray(self.sums[1]), self.sums[2]
        total = len(self.loader)
        watch = _LossWatch(self, xp, total) if self.stop_on_nonfinite else None
        desc = f"Epoch {self.epoch + 1}" + (f"/{epochs_total}" if epochs_total else "")
        bar = None
        last_print = time.perf_counter()
        for i, (xb, yb) in enumerate(self.loader.batches(self.epoch)):
            if i < self.batch:
                continue
            if rng is not None:
                xb = random_affine(xb, rng, **self.augment)
            loss, ok = self.train_step(xb, yb)
            if watch is not None:
                watch.step(i, loss)
            n = len(yb)
            loss_sum, correct, count = loss_sum + loss * n, correct + ok, count + n
            self.batch = i + 1
            if bar is None:  # its clock starts after the first step (compiling, recording a graph)
                bar = progress(total=total, initial=self.batch, desc=desc, unit="batch",
                               disable=not show_progress, leave=False)
            else:
                bar.update(1)
            if time.perf_counter() - last_print > 1.0:  # on the GPU, the epoch's only host sync (about once a second)
                mean_loss = float(loss_sum) / count
                if watch is not None:
                    watch.sync(mean_loss, self.batch)
                bar.set_postfix_str(f"loss {mean_loss:.4f} acc {float(correct) / count:.4f}")
                last_print = time.perf_counter()
            if self.stop_requested:
                if watch is not None:
                    watch.sync(float(loss_sum), self.batch)
                self.sums = [float(loss_sum), float(correct), int(count)]
                self.aug_rng_state = rng.bit_generator.state if rng is not None else None
                bar.close()
                return None
        if bar is not None:
            bar.close()
        if watch is not None:
            watch.sync(float(loss_sum), self.batch)
        test_loss, test_acc = self.evaluate(self.x_test, self.y_test)
        record = {"epoch": self.epoch + 1, "loss": float(loss_sum) / count, "accuracy": float(correct) / count,
                  "test_loss": test_loss, "test_accuracy": test_acc, "lr": float(self.optimizer.lr),
                  "seconds": time.perf_counter() - start}
        self.history.append(record)
        self.epoch, self.batch, self.sums, self.aug_rng_state = self.epoch + 1, 0, [0.0, 0.0, 0], None
        if self.epoch_schedule is not None:
            self.epoch_schedule.step()
        return record

    def evaluate(self, x, y, batch_size=1000):
        """(mean loss, accuracy) over (x, y) in eval mode: batch norm uses its running statistics."""
        was_training = self.model.training
        self.model.eval()
        xp = get_array_module(x)
        loss_sum, correct = xp.asarray(0.0), xp.asarray(0)
        with no_grad():
            for s in range(0, len(x), batch_size):
                xb, yb = x[s:s + batch_size], y[s:s + batch_size]
                out = self.model(Tensor(xb))
                loss_sum = loss_sum + F.cross_entropy(out, yb, reduction="sum").data
                correct = correct + (out.data.argmax(axis=1) == yb).sum()
        self.model.train(was_training)
        return float(loss_sum) / len(x), float(correct) / len(x)

    # ---- checkpoints -------------------------------------------------------------------------
    def state_dict(self):
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch_schedule": self.epoch_schedule.state_dict() if self.epoch_schedule else None,
            "batch_schedule": self.batch_schedule.state_dict() if self.batch_schedule else None,
            "epoch": self.epoch, "batch": self.batch, "sums": list(self.sums),
            "aug_rng_state": self.aug_rng_state,
            "rng_state": mrandom.get_state(),
            "dropout_rng_states": [g.bit_generator.state for g in self._layer_generators()],
            "history": list(self.history), "seed": self.seed,
        }

    def load_state_dict(self, state):
        self._captured = None  # recorded again at the next step (loading writes in place, but to be safe)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.epoch_schedule is not None and state["epoch_schedule"] is not None:
            self.epoch_schedule.load_state_dict(state["epoch_schedule"])
        if self.batch_schedule is not None and state["batch_schedule"] is not None:
            self.batch_schedule.load_state_dict(state["batch_schedule"])
        self.epoch, self.batch, self.sums = state["epoch"], state["batch"], list(state["sums"])
        self.aug_rng_state = state["aug_rng_state"]
        mrandom.set_state(state["rng_state"])
        for g, s in zip(self._layer_generators(), state["dropout_rng_states"]):
            g.bit_generator.state = s
        self.history, self.seed = list(state["history"]), state["seed"]
        self.loader.seed = self.seed

    def _layer_generators(self):
        return [m.generator for m in self.model.modules() if getattr(m, "generator", None) is not None]


class _LossWatch:
    """Stops an epoch at its first non-finite loss: read after every step where that is cheap (the CPU), else
    kept on the device one value per batch and checked at the syncs the loop makes anyway."""

    def __init__(self, trainer, xp, total):
        self.trainer, self.total = trainer, total
        self.each_step = trainer.check_each_step
        self.losses = None if self.each_step else xp.zeros(total, dtype=xp.float64)
        self.checked = trainer.batch  # batches before this one are known to be finite

    def step(self, i, loss):
        if self.each_step:
            value = float(loss)
            if not math.isfinite(value):
                raise self.error(i, value)
        else:
            self.losses[i] = loss  # one small device copy: no wait for the step to finish

    def sync(self, loss_sum, done):
        """Called with the epoch's loss sum (a host float) after `done` batches: raises at the first bad batch."""
        if not self.each_step and not math.isfinite(loss_sum):
            window = self.losses[self.checked:done]
            window = window.get() if hasattr(window, "get") else np.asarray(window)
            bad = np.flatnonzero(~np.isfinite(window))
            i = self.checked + int(bad[0]) if len(bad) else done - 1
            raise self.error(i, float(window[i - self.checked]))
        self.checked = done

    def error(self, i, value):
        return NonFiniteLossError(self.trainer.epoch + 1, i + 1, self.total, value)


def to_device_dataset(x_uint8, y, device):
    """uint8 images (N, 28, 28) and labels -> float32 (N, 1, 28, 28) in [0, 1] and int64 labels, on `device`."""
    return to_device(to_float_images(x_uint8), device), to_device(y.astype(np.int64), device)

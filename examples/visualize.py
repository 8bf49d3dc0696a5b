"""Draw every figure of the lessons in docs/ from a trained checkpoint (needs matplotlib: the `viz` extra).

    python examples/visualize.py --checkpoint runs/eip4-seed0.best.ckpt          # into runs/figures
    python examples/visualize.py --checkpoint runs/eip4-seed0.best.ckpt \\
        --history runs/eip4-seed0.history.json --out docs/images                  # the lessons' own figures

The figures go to runs/figures unless --out names another folder: docs/images is rewritten only when
asked for. A missing or unreadable checkpoint, history or data folder is one line on stderr, exit status 2.

Each figure is one PNG with a fixed name (FIGURES below), referenced by the lessons as images/NAME.png:

    kernels_on_digit.png   classic 3x3 kernels (Sobel, blur, sharpen) applied with conv2d to one digit   (lesson 2)
    learned_filters.png    the 16 learned first-layer filters beside the classic kernels                  (lesson 2)
    feature_maps.png       one digit through every convolution layer (after its ReLU)                     (lesson 2)
    misclassified.png      test digits the model gets wrong, with its prediction and confidence           (lesson 8)
    training_curves.png    loss, accuracy and learning rate per epoch, train against test                 (lesson 8)
    im2col_matrix.png      the im2col matrix of a 4x4 input and the one matrix product that convolves it  (lesson 3)
    receptive_field.png    effective receptive field: |d unit / d pixel| over a digit, for several layers (lesson 7)

The single digit comes from the committed subset (tests/data/mnist_small, test image --digit), so the
pictures match the numbers printed in the lessons. Misclassified digits come from the full MNIST test set
(load_mnist(), or --data-dir FOLDER read as it is), falling back to the committed subset with a note.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import minicnn.functional as F  # noqa: E402
from minicnn import Tensor, no_grad, nn  # noqa: E402
from minicnn.checkpoint import CheckpointError, load_checkpoint, read_history  # noqa: E402
from minicnn.data import load_mnist, read_mnist_folder  # noqa: E402
from minicnn.models import get_model  # noqa: E402
from minicnn.nn import summary  # noqa: E402
from minicnn.training import to_device_dataset  # noqa: E402

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
except ImportError:  # reported by main() with the install hint
    plt = None

FIGURES = ("kernels_on_digit.png", "learned_filters.png", "feature_maps.png", "misclassified.png",
           "training_curves.png", "im2col_matrix.png", "receptive_field.png")
SUBSET = os.path.join(ROOT, "tests", "data", "mnist_small")
DPI = 110

# The classic hand-made kernels, written for minicnn's conv2d, which is a cross-correlation (no flip):
# Sobel x is positive where the image gets brighter from left to right.
CLASSIC_KERNELS = {
    "Sobel x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32),
    "Sobel y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32),
    "box blur": np.full((3, 3), 1 / 9, np.float32),
    "Gaussian blur": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 16,
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32),
}
# The made-up kernel of lessons 1 and 3: no symmetry, so correlation and convolution differ.
LESSON_KERNEL = np.array([[1, 2, 0], [0, 1, -1], [2, 0, 1]], np.float32)
DIVISORS = {"box blur": 9, "Gaussian blur": 16}  # written as fractions in the pictures


def kernel_text(name, v):
    d = DIVISORS.get(name)
    return f"{int(round(v * d))}/{d}" if d else f"{v:g}"


class UsageError(Exception):
    """A mistake in the command line or its files: one line on stderr, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see --help)")


# ---- loading -----------------------------------------------------------------------------------
def load_model(checkpoint):
    """(model in eval mode, checkpoint dict) from a checkpoint written by examples/mnist.py; CheckpointError
    for a file that is missing, not a checkpoint, damaged, or not of an examples/mnist.py run."""
    state = load_checkpoint(checkpoint)
    trainer = state.get("trainer") if isinstance(state, dict) else None
    if not (isinstance(trainer, dict) and isinstance(trainer.get("model"), dict)):
        raise CheckpointError(f"{checkpoint} is a minicnn checkpoint, but not of a run of examples/mnist.py "
                              f"(it has no trainer state)")
    name = (state.get("args") or {}).get("model") or "eip4"
    model_args = (state.get("recipe") or {}).get("model_args") or {}
    try:
        model = get_model(name, **model_args)
        model.load_state_dict(trainer["model"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{checkpoint}: its weights do not fit the {name} preset ({exc})") from None
    return model.eval(), state


def describe_checkpoint(checkpoint, state):
    """One line saying which model drew a figure: file, model, epochs trained, its last test accuracy."""
    name = (state.get("args") or {}).get("model", "eip4")
    hist = state["trainer"].get("history") or []
    text = f"drawn from {os.path.basename(checkpoint)} ({name}"
    if hist:
        text += f", after epoch {hist[-1]['epoch']}, test accuracy {hist[-1]['test_accuracy']:.2%}"
    return text + ")"


def load_history(path, state):
    """Per-epoch records: the history json when given (or found beside the checkpoint), else the checkpoint's own."""
    if path:
        try:
            return read_history(path)
        except ValueError as exc:   # missing, unreadable, not JSON, or not a run's history: one line naming it
            raise UsageError(f"--history {exc}") from None
    return list(state["trainer"].get("history", []))


def default_history_path(checkpoint):
    """runs/eip4-seed0.best.ckpt and runs/eip4-seed0.ckpt -> runs/eip4-seed0.history.json (if it exists)."""
    stem = checkpoint
    for suffix in (".best.ckpt", ".ckpt"):
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
            break
    path = stem + ".history.json"
    return path if os.path.isfile(path) else None


def load_test_set(data_dir):
    """(x_test uint8, y_test, description): --data-dir read as it is, else the full MNIST, else the committed subset."""
    if data_dir:
        try:
            _, (x, y) = read_mnist_folder(data_dir)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--data-dir {data_dir}: {exc}") from None
        return x, y, f"test images from {data_dir}"
    try:
        _, (x, y) = load_mnist()
        return x, y, "MNIST test set"
    except Exception as exc:  # no cache and no network: still draw the figure, from the digits in the repository
        print(f"note: the full MNIST test set is unavailable ({type(exc).__name__}: {exc}); "
              f"using the committed subset {os.path.relpath(SUBSET, ROOT)} instead", file=sys.stderr)
        _, (x, y) = read_mnist_folder(SUBSET)
        return x, y, "committed 1,000-digit test subset"


def subset_digit(index):
    """(image float32 (1, 1, 28, 28) in [0, 1], label) of test image `index` of the committed subset."""
    _, (x, y) = read_mnist_folder(SUBSET)
    xf, _ = to_device_dataset(x[index:index + 1], y[index:index + 1], "cpu")
    return xf, int(y[index])


# ---- model helpers -----------------------------------------------------------------------------
def layer_outputs(model, x):
    """Outputs of every layer of a Sequential for input x (raw array), without a graph."""
    outs = []
    with no_grad():
        h = Tensor(x)
        for layer in model:
            h = layer(h)
            outs.append(h.numpy())
    return outs


def conv_indices(model):
    return [i for i, m in enumerate(model) if isinstance(m, nn.Conv2d)]


def after_activation(model, i):
    """The index of the ReLU right after layer i if there is one, else i (what the next layer is fed)."""
    return i + 1 if i + 1 < len(model) and isinstance(model[i + 1], nn.ReLU) else i


def predict(model, x_uint8, batch_size=1000):
    """(predicted labels, softmax probabilities) for uint8 images, in eval mode."""
    model.eval()
    probs = []
    with no_grad():
        for s in range(0, len(x_uint8), batch_size):
            xb, _ = to_device_dataset(x_uint8[s:s + batch_size], np.zeros(len(x_uint8[s:s + batch_size])), "cpu")
            probs.append(F.softmax(model(Tensor(xb)), axis=1).numpy())
    p = np.concatenate(probs)
    return p.argmax(axis=1), p


def rf_geometry(model, upto):
    """(rf, jump, offset) of the units after layer `upto`: unit u covers input rows offset + u*jump ... + rf - 1."""
    r, j, o = 1, 1, 0
    for m in list(model)[:upto + 1]:
        if hasattr(m, "kernel_size") and hasattr(m, "stride"):
            k, s = m.kernel_size[0], m.stride[0]
            d = getattr(m, "dilation", (1, 1))[0]
            p = getattr(m, "padding", (0, 0))[0]
            o -= p * j
            r, j = r + (d * (k - 1)) * j, j * s
    return r, j, o


def unit_gradients(model, x, upto):
    """|d unit / d x| per image, for one unit after layer `upto`: the centre position, and the channel that is most
    active there for that image (for the last layer, the logit of the predicted class). Returns (grads, (oh, ow))."""
    model.eval()
    xt = Tensor(x.astype(np.float32), requires_grad=True)
    h = xt
    for layer in list(model)[:upto + 1]:
        h = layer(h)
    if h.ndim == 2:  # logits (N, classes)
        pos = None
        mask = np.zeros(h.shape, np.float32)
        mask[np.arange(len(x)), h.data.argmax(axis=1)] = 1
        target = (h * Tensor(mask)).sum()
    else:
        oh, ow = (h.shape[2] - 1) // 2, (h.shape[3] - 1) // 2
        pos = (oh, ow)
        centre = h[:, :, oh, ow]
        mask = np.zeros(centre.shape, np.float32)
        mask[np.arange(len(x)), centre.data.argmax(axis=1)] = 1
        target = (centre * Tensor(mask)).sum()
    target.backward()
    return np.abs(xt.grad[:, 0]), pos


# ---- figures -----------------------------------------------------------------------------------
def _save(fig, out, name, source=None):
    """Write the figure; `source` (which checkpoint drew it) goes in small print at the bottom."""
    if source:
        fig.text(0.5, 0.0, source, fontsize=8, color="gray", ha="center", va="top")
    path = os.path.join(out, name)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _colorbar(fig, im, ax, label=None):
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if label:
        cb.set_label(label)
    cb.ax.tick_params(labelsize=7)
    return cb


def _no_ticks(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def fig_kernels_on_digit(img, label, out):
    """The digit and the five classic kernels applied to it with conv2d (padding 1 keeps 28x28)."""
    fig, axes = plt.subplots(2, 6, figsize=(18, 6.2), gridspec_kw=dict(height_ratios=[1, 3], wspace=0.45))
    axes[0, 0].axis("off")
    axes[0, 0].text(0.5, 0.5, "kernel\n(3x3 weights)", ha="center", va="center", fontsize=11)
    im = axes[1, 0].imshow(img[0, 0], cmap="gray_r", vmin=0, vmax=1)
    axes[1, 0].set_title(f"input: a {label} (28x28)")
    _colorbar(fig, im, axes[1, 0], "pixel value")
    _no_ticks(axes[1, 0])
    x = Tensor(img)
    for col, (name, k) in enumerate(CLASSIC_KERNELS.items(), start=1):
        ax = axes[0, col]
        ax.imshow(k, cmap="coolwarm", vmin=-np.abs(k).max(), vmax=np.abs(k).max())
        for (r, c), v in np.ndenumerate(k):
            ax.text(c, r, kernel_text(name, v), ha="center", va="center", fontsize=9)
        ax.set_title(name)
        _no_ticks(ax)
        y = F.conv2d(x, Tensor(k[None, None]), padding=1).numpy()[0, 0]
        ax = axes[1, col]
        if y.min() < 0:  # a signed response: white = 0, red positive, blue negative
            m = np.abs(y).max()
            im = ax.imshow(y, cmap="coolwarm", vmin=-m, vmax=m)
        else:
            im = ax.imshow(y, cmap="gray_r")
        ax.set_title(f"conv2d(digit, {name})\nrange [{y.min():.2f}, {y.max():.2f}]", fontsize=10)
        _colorbar(fig, im, ax)
        _no_ticks(ax)
    fig.suptitle("Classic kernels applied with minicnn's conv2d (cross-correlation, padding 1): "
                 "red = positive, blue = negative", fontsize=13)
    return _save(fig, out, "kernels_on_digit.png")


def fig_learned_filters(model, out, source=None):
    """The first convolution's filters (one input channel) beside the classic kernels."""
    first = model[conv_indices(model)[0]]
    w = first.weight.numpy()[:, 0]
    n = len(w)
    cols = 8
    rows = -(-n // cols)
    fig = plt.figure(figsize=(15, 3.0 + 1.9 * rows))
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 0.9 * rows])
    ax_top = top.subplots(1, len(CLASSIC_KERNELS))
    for ax, (name, k) in zip(ax_top, CLASSIC_KERNELS.items()):
        m = np.abs(k).max()
        ax.imshow(k, cmap="coolwarm", vmin=-m, vmax=m)
        for (r, c), v in np.ndenumerate(k):
            ax.text(c, r, kernel_text(name, v), ha="center", va="center", fontsize=9)
        ax.set_title(name, fontsize=10)
        _no_ticks(ax)
    top.suptitle("Classic kernels (hand-made; each drawn on its own scale)", fontsize=12, y=1.0)
    top.subplots_adjust(top=0.8)
    ax_bottom = np.atleast_2d(bottom.subplots(rows, cols))
    m = np.abs(w).max()
    for i, ax in enumerate(ax_bottom.flat):
        _no_ticks(ax)
        if i >= n:
            ax.axis("off")
            continue
        im = ax.imshow(w[i], cmap="coolwarm", vmin=-m, vmax=m)
        for (r, c), v in np.ndenumerate(w[i]):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6.5)
        ax.set_title(f"filter {i}  (bias {first.bias.numpy()[i]:+.2f})" if first.bias is not None else f"filter {i}",
                     fontsize=8)
    cb = bottom.colorbar(im, ax=ax_bottom, fraction=0.02, pad=0.01)
    cb.set_label("weight")
    bottom.suptitle(f"Learned first-layer filters of the trained model ({n} x 3x3, one shared colour scale)",
                    fontsize=12)
    return _save(fig, out, "learned_filters.png", source)


def _mosaic(fmap, slots, size=24, gap=3):
    """Channels (C, H, W) side by side, each enlarged (nearest neighbour) to about `size` pixels, NaN in the gaps."""
    C, H, W = fmap.shape
    rep = max(1, size // H)
    tiles = np.repeat(np.repeat(fmap, rep, axis=1), rep, axis=2)
    h, w = H * rep, W * rep
    out = np.full((h, slots * (w + gap) - gap), np.nan, np.float32)
    for c in range(min(C, slots)):
        out[:, c * (w + gap):c * (w + gap) + w] = tiles[c]
    return out, w + gap


def fig_feature_maps(model, img, label, out, max_channels=16, source=None):
    """One row per convolution layer with a spatial output: every channel after that layer's ReLU."""
    outs = layer_outputs(model, img)
    rows = [(i, after_activation(model, i)) for i in conv_indices(model) if outs[i].ndim == 4 and outs[i].shape[2] > 1]
    s = summary(model, img.shape[1:], print_fn=None)
    fig, axes = plt.subplots(len(rows), 2, figsize=(17, 1.25 * len(rows) + 0.8), squeeze=False,
                             gridspec_kw=dict(width_ratios=[1, max_channels], wspace=0.02))
    fig.subplots_adjust(top=0.92, bottom=0.03)
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    for r, (i, a) in enumerate(rows):
        fmap = outs[a][0]
        C, H, W = fmap.shape
        ax = axes[r, 0]
        _no_ticks(ax)
        for spine in ax.spines.values():
            spine.set_visible(r == 0)
        if r == 0:
            ax.imshow(img[0, 0], cmap="gray_r")
            ax.set_title(f"input ({label})", fontsize=9)
        m = model[i]
        ax.set_ylabel(f"layer {i}: conv {m.kernel_size[0]}x{m.kernel_size[1]}\n{m.in_channels} -> {m.out_channels} ch, "
                      f"{H}x{W}\nRF {s.rows[a][4]}", fontsize=9, rotation=0, ha="right", va="center")
        ax = axes[r, 1]
        mosaic, step = _mosaic(fmap, max_channels)
        vmax = float(fmap.max()) if fmap.max() > 0 else 1.0
        im = ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_yticks([])
        ax.set_xticks([c * step + (step - 3) / 2 for c in range(C)])
        ax.set_xticklabels([f"ch {c}" for c in range(C)], fontsize=7)
        ax.tick_params(length=0, pad=1)
        for spine in ax.spines.values():
            spine.set_visible(False)
        cb = fig.colorbar(im, ax=ax, fraction=0.012, pad=0.005)
        cb.ax.tick_params(labelsize=6)
    fig.suptitle("Feature maps of one digit after each convolution and its ReLU (eval mode; one colour scale per "
                 "row: dark = 0, yellow = the row's maximum)", fontsize=12, y=0.995)
    return _save(fig, out, "feature_maps.png", source)


def fig_misclassified(model, x, y, description, out, max_shown=32, source=None):
    """The first `max_shown` misclassified test digits, labelled with the truth and the prediction (confidence)."""
    pred, prob = predict(model, x)
    wrong = np.flatnonzero(pred != y)
    shown = wrong[:max_shown]
    cols = 8
    rows = max(1, -(-len(shown) // cols))
    cell_w, cell_h = 28 + 8, 28 + 22  # pixels per digit, with room for two lines of label above it
    mosaic = np.zeros((rows * cell_h, cols * cell_w), np.float32)
    fig, ax = plt.subplots(figsize=(cols * 1.55, rows * 2.1 + 0.4))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.92)
    for k, i in enumerate(shown):
        r, c = divmod(k, cols)
        top, left = r * cell_h + cell_h - 28 - 1, c * cell_w + 4
        mosaic[top:top + 28, left:left + 28] = x[i] / 255.0
        ax.text(left + 14, top - 1.5, f"#{i}: true {y[i]}\npred {pred[i]} ({prob[i, pred[i]]:.0%})",
                ha="center", va="bottom", fontsize=9, color="firebrick")
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if not len(shown):
        ax.text(mosaic.shape[1] / 2, mosaic.shape[0] / 2, "no misclassified digits", ha="center", va="center")
    acc = 1 - len(wrong) / len(y)
    ax.set_title(f"Misclassified: {len(wrong):,} of {len(y):,} digits of the {description} "
                 f"(accuracy {acc:.2%}); the first {len(shown)} shown", fontsize=12)
    return _save(fig, out, "misclassified.png", source)


def fig_training_curves(history, out, source=None):
    """Loss, accuracy and learning rate per epoch: train (averaged over the epoch) against test (end of epoch)."""
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(16, 4.6))
    if not history:
        for ax in (ax_loss, ax_acc, ax_lr):
            ax.text(0.5, 0.5, "no history", ha="center", va="center")
        return _save(fig, out, "training_curves.png")
    ep = [h["epoch"] for h in history]
    ax_loss.plot(ep, [h["loss"] for h in history], "o-", label="train (mean over the epoch, dropout on)")
    ax_loss.plot(ep, [h["test_loss"] for h in history], "s-", label="test (after the epoch, eval mode)")
    ax_loss.set_title("Cross-entropy loss")
    ax_loss.set_ylabel("loss")
    acc_tr = [100 * h["accuracy"] for h in history]
    acc_te = [100 * h["test_accuracy"] for h in history]
    ax_acc.plot(ep, acc_tr, "o-", label="train (mean over the epoch, dropout on)")
    ax_acc.plot(ep, acc_te, "s-", label="test (after the epoch, eval mode)")
    best = int(np.argmax(acc_te))
    ax_acc.annotate(f"best test {acc_te[best]:.2f}% (epoch {ep[best]})", (ep[best], acc_te[best]),
                    xytext=(0.35, 0.25), textcoords="axes fraction", arrowprops=dict(arrowstyle="->"), fontsize=9)
    ax_acc.set_title("Accuracy")
    ax_acc.set_ylabel("accuracy (%)")
    ax_lr.plot(ep, [h["lr"] for h in history], "o-", color="gray")
    ax_lr.set_title("Learning rate used in the epoch")
    ax_lr.set_ylabel("learning rate")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.set_xticks(ep if len(ep) <= 20 else ep[::max(1, len(ep) // 10)])
    ax_loss.legend(fontsize=8)
    ax_acc.legend(fontsize=8, loc="best")
    fig.suptitle(f"Training history: {len(history)} epoch(s)", fontsize=12)
    fig.tight_layout()
    return _save(fig, out, "training_curves.png", source)


def im2col_matrix(image, KH, KW):
    """The im2col matrix of one 2-D image (stride 1, no padding): column j is window j unrolled, row-major."""
    windows = np.lib.stride_tricks.sliding_window_view(image, (KH, KW))  # (OH, OW, KH, KW)
    return windows.reshape(-1, KH * KW).T.copy()


def fig_im2col(out):
    """A 4x4 input whose pixel values are their own indices, its 9x4 im2col matrix, and y = w @ col."""
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    k = LESSON_KERNEL
    col = im2col_matrix(x[0, 0], 3, 3)
    y = k.reshape(1, 9) @ col
    colors = ["tab:red", "tab:blue", "tab:green", "tab:orange"]
    fig = plt.figure(figsize=(18, 6.6))
    gs = fig.add_gridspec(2, 4, width_ratios=[4, 4.6, 1.8, 2.2], height_ratios=[1, 1], wspace=0.55, hspace=0.45)
    ax = fig.add_subplot(gs[:, 0])
    ax.imshow(x[0, 0], cmap="Greys", alpha=0.25)
    for (r, c), v in np.ndenumerate(x[0, 0]):
        ax.text(c, r, f"{v:g}", ha="center", va="center", fontsize=13)
    for j, (oh, ow) in enumerate(np.ndindex(2, 2)):
        ax.add_patch(Rectangle((ow - 0.45 + 0.06 * j, oh - 0.45 + 0.06 * j), 2.9 - 0.12 * j, 2.9 - 0.12 * j,
                               fill=False, lw=2.5, ec=colors[j]))
    ax.set_xticks(range(4))
    ax.set_yticks(range(4))
    ax.set_xlabel("w (column)")
    ax.set_ylabel("h (row)")
    ax.set_title("input x (1x1x4x4): value = pixel index\nthe four 3x3 windows, one per output", pad=12)
    ax = fig.add_subplot(gs[:, 1])
    ax.imshow(col, cmap="Greys", alpha=0.25, aspect="auto")
    for (r, c), v in np.ndenumerate(col):
        ax.text(c, r, f"{v:g}", ha="center", va="center", fontsize=12, color=colors[c])
    ax.set_xticks(range(4))
    ax.set_xticklabels([f"(oh,ow)\n=({oh},{ow})" for oh, ow in np.ndindex(2, 2)])
    for t, c in zip(ax.get_xticklabels(), colors):
        t.set_color(c)
    ax.set_yticks(range(9))
    ax.set_yticklabels([f"(kh,kw)=({kh},{kw})" for kh, kw in np.ndindex(3, 3)])
    ax.set_title("col = im2col(x, 3, 3), read as a (C*KH*KW) x (N*OH*OW) = 9x4 matrix\n"
                 "column j = window j unrolled; row = kernel offset (kh, kw)")
    ax = fig.add_subplot(gs[0, 2:])
    m = np.abs(k).max()
    ax.imshow(k.reshape(1, 9), cmap="coolwarm", vmin=-m, vmax=m, aspect="auto")
    for c, v in enumerate(k.reshape(-1)):
        ax.text(c, 0, f"{v:g}", ha="center", va="center", fontsize=12)
    ax.set_yticks([])
    ax.set_xticks(range(9))
    ax.set_xticklabels([f"{kh},{kw}" for kh, kw in np.ndindex(3, 3)], fontsize=8)
    ax.set_xlabel("(kh, kw)")
    ax.set_title("weights w (1x1x3x3) as a 1x9 row")
    ax = fig.add_subplot(gs[1, 2])
    ax.imshow(y, cmap="Greys", alpha=0.2, aspect="auto")
    for c, v in enumerate(y[0]):
        ax.text(c, 0, f"{v:g}", ha="center", va="center", fontsize=12, color=colors[c])
    ax.set_yticks([])
    ax.set_xticks(range(4))
    ax.set_xticklabels([f"{oh},{ow}" for oh, ow in np.ndindex(2, 2)], fontsize=8)
    ax.set_title("w @ col (1x9 @ 9x4)", fontsize=10)
    ax = fig.add_subplot(gs[1, 3])
    ax.imshow(y.reshape(2, 2), cmap="Greys", alpha=0.2)
    for (r, c), v in np.ndenumerate(y.reshape(2, 2)):
        ax.text(c, r, f"{v:g}", ha="center", va="center", fontsize=13, color=colors[2 * r + c])
    ax.set_xticks(range(2))
    ax.set_yticks(range(2))
    ax.set_title("reshaped: y (1x1x2x2)", fontsize=10)
    fig.suptitle("im2col turns convolution into one matrix product: every output is (row of weights) . (its column)",
                 fontsize=13)
    return _save(fig, out, "im2col_matrix.png")


def fig_receptive_field(model, img, label, out, x_many=None, source=None):
    """|d unit / d pixel| for a central unit of several layers: over one digit (top), averaged over many (bottom)."""
    s = summary(model, img.shape[1:], print_fn=None)
    convs = conv_indices(model)
    picks = [after_activation(model, i) for i in convs if s.rows[i][2][-1] > 1 and s.rows[i][4] > 3]
    picks = [p for k, p in enumerate(picks) if k % 2 == 0 or k == len(picks) - 1][:4] + [len(model) - 1]
    rows = [("this digit", img)] + ([(f"mean over {len(x_many)} test digits", x_many)] if x_many is not None else [])
    fig, axes = plt.subplots(len(rows), len(picks), figsize=(3.6 * len(picks) + 1, 3.8 * len(rows) + 0.6),
                             squeeze=False)
    fig.subplots_adjust(left=0.03, bottom=0.03, top=0.86)
    for c, upto in enumerate(picks):
        rf, jump, offset = rf_geometry(model, upto)
        for r, (name, x) in enumerate(rows):
            g, pos = unit_gradients(model, x, upto)
            g = g.mean(axis=0)
            g = g / g.max() if g.max() > 0 else g
            ax = axes[r, c]
            im = ax.imshow(g, cmap="magma", vmin=0, vmax=1)
            if len(x) == 1:
                ax.contour(x[0, 0], levels=[0.5], colors="cyan", linewidths=0.8)
            if pos is not None:
                top, left = offset + pos[0] * jump, offset + pos[1] * jump
                what = f"unit at ({pos[0]},{pos[1]}) of {s.rows[upto][2][1]}x{s.rows[upto][2][2]}"
            else:
                top, left = offset, offset
                what = "logit of the predicted class"
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), rf, rf, fill=False, ec="lime", lw=1.5, ls="--"))
            ax.set_xlim(-0.5, 27.5)
            ax.set_ylim(27.5, -0.5)
            _no_ticks(ax)
            if r == 0:
                ax.set_title(f"after layer {upto} ({type(model[upto]).__name__}): {what}\n"
                             f"theoretical RF {rf}x{rf} (dashed)", fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=10)
    cb = fig.colorbar(im, ax=axes, fraction=0.015, pad=0.01)
    cb.set_label("|d unit / d pixel|, scaled to max 1")
    fig.suptitle(f"Effective receptive field: the gradient of one unit with respect to the input image "
                 f"(digit {label} outlined in cyan; unit = most active channel at the centre)", fontsize=12)
    return _save(fig, out, "receptive_field.png", source)


# ---- command line ------------------------------------------------------------------------------
def parse_args(argv=None):
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint written by examples/mnist.py (e.g. *.best.ckpt)")
    p.add_argument("--history", help="history json (default: the *.history.json beside the checkpoint, "
                                     "else the history stored in the checkpoint)")
    p.add_argument("--out", default=os.path.join("runs", "figures"),
                   help="folder for the PNGs (default runs/figures; --out docs/images rewrites the lessons' figures)")
    p.add_argument("--data-dir", help="a folder with the four MNIST files, read without checksums, for the "
                                      "misclassified digits (default: load_mnist(), else the committed subset)")
    p.add_argument("--digit", type=int, default=2, help="index of the test digit of the committed subset used for "
                                                        "the single-digit figures (default 2, a 4)")
    p.add_argument("--rf-digits", type=int, default=200, help="test digits averaged in the receptive-field figure")
    p.add_argument("--max-test", type=int, help="use only the first N test digits for misclassified.png (quick previews)")
    return p.parse_args(argv)


def check_args(args):
    """The numbers and folders, before anything is loaded or drawn."""
    for flag, value, low in (("--rf-digits", args.rf_digits, 1), ("--max-test", args.max_test, 1)):
        if value is not None and value < low:
            raise UsageError(f"{flag} {value}: must be at least {low}")
    _, (_, y) = read_mnist_folder(SUBSET)
    if not 0 <= args.digit < len(y):
        raise UsageError(f"--digit {args.digit}: the committed subset has test digits 0 to {len(y) - 1}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a file, not a folder")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {args.out} cannot be created: {exc.strerror}") from None
    if not os.access(args.out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {args.out} is not writable")


def main(argv=None):
    try:
        args = parse_args(argv)
        if plt is None:
            raise UsageError("examples/visualize.py needs matplotlib: pip install 'minicnn[viz]' (or pip install matplotlib)")
        model, state = load_model(args.checkpoint)
        history = load_history(args.history or default_history_path(args.checkpoint), state)
        check_args(args)
        x_test, y_test, description = load_test_set(args.data_dir)
    except (UsageError, CheckpointError) as exc:
        print(f"visualize.py: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    img, label = subset_digit(args.digit)
    if args.max_test:
        x_test, y_test = x_test[:args.max_test], y_test[:args.max_test]
        description += f" (first {len(y_test):,})"
    _, (xs, ys) = read_mnist_folder(SUBSET)
    x_many, _ = to_device_dataset(xs[:args.rf_digits], ys[:args.rf_digits], "cpu")
    source = describe_checkpoint(args.checkpoint, state)
    written = [
        fig_kernels_on_digit(img, label, args.out),
        fig_learned_filters(model, args.out, source=source),
        fig_feature_maps(model, img, label, args.out, source=source),
        fig_misclassified(model, x_test, y_test, description, args.out, source=source),
        fig_training_curves(history, args.out, source=f"history of the run of {os.path.basename(args.checkpoint)}"),
        fig_im2col(args.out),
        fig_receptive_field(model, img, label, args.out, x_many, source=source),
    ]
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Mini-batches: shuffle once per epoch with a seeded generator, so epoch e always sees the same batches."""
import numpy as np

from ..backend import get_array_module

__all__ = ["batch_bounds", "iterate_batches", "DataLoader", "epoch_seed", "to_float_images"]


def epoch_seed(seed, epoch):
    """A 64-bit integer seed that depends only on (seed, epoch): the shuffle of epoch e is reproducible on resume."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0])


def _make_rng(xp, seed):
    """A generator on the arrays' device: `seed` may be None, an int, or already a generator."""
    if hasattr(seed, "random"):  # numpy Generator / RandomState, cupy Generator / RandomState
        return seed
    if xp is np:
        return np.random.default_rng(seed)
    return xp.random.default_rng(seed)


def _permutation(xp, n, rng):
    if hasattr(rng, "permutation"):
        perm = rng.permutation(n)
    else:  # e.g. cupy.random.Generator, which has no permutation(): argsort of uniform numbers is one
        perm = xp.argsort(rng.random(n))
    if get_array_module(perm) is not xp:  # a NumPy generator used with CuPy arrays, or the reverse
        perm = xp.asarray(perm) if xp is not np else perm.get()
    return perm


def _check(x, y, batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if y is not None and len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")


def batch_bounds(n, batch_size, drop_last=False, merge_single=False):
    """(start, stop) of each batch of `n` items: `batch_size` each, the last one smaller unless drop_last
    (then it is skipped). merge_single=True: a final batch of one item (batch_size > 1) joins the previous
    batch, which then holds batch_size + 1 items (batch norm in training mode cannot normalise one image)."""
    stop = n - n % batch_size if drop_last else n
    starts = list(range(0, stop, batch_size))
    if merge_single and batch_size > 1 and len(starts) > 1 and stop - starts[-1] == 1:
        starts.pop()
    return [(start, starts[i + 1] if i + 1 < len(starts) else stop) for i, start in enumerate(starts)]


def iterate_batches(x, y, batch_size, shuffle=True, seed=None, drop_last=False, merge_single=False):
    """Yield (xb, yb) slices of `batch_size` along axis 0; shuffled with `seed` (int, None or a generator).

    Works for NumPy and CuPy arrays (the permutation is made on the arrays' device). y may be None
    (then yb is None). drop_last=True skips a final incomplete batch; merge_single=True adds a final
    batch of one item to the batch before it (batch_bounds).
    """
    _check(x, y, batch_size)
    xp = get_array_module(x, y) if y is not None else get_array_module(x)
    order = _permutation(xp, len(x), _make_rng(xp, seed)) if shuffle else None
    for start, stop in batch_bounds(len(x), batch_size, drop_last, merge_single):
        index = slice(start, stop) if order is None else order[start:stop]
        yield x[index], (None if y is None else y[index])


class DataLoader:
    """Batches of (x, y) epoch after epoch; the order of epoch e depends only on (seed, e).

    `epoch` counts completed passes: it goes up by one when an iteration runs to the end. Set it
    (or use load_state_dict) to resume a run: the next pass then yields exactly the batches an
    uninterrupted run would have seen in that epoch. drop_last and merge_single: what happens to a final
    batch smaller than batch_size (batch_bounds).
    """

    def __init__(self, x, y, batch_size, shuffle=True, seed=0, drop_last=False, merge_single=False):
        _check(x, y, batch_size)
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        # no seed given: draw one now, so every epoch of this loader is still reproducible from .seed
        self.seed = int(np.random.SeedSequence().entropy % (1 << 63)) if seed is None else int(seed)
        self.drop_last, self.merge_single = drop_last, merge_single
        self.epoch = 0

    def __len__(self):
        return len(batch_bounds(len(self.x), self.batch_size, self.drop_last, self.merge_single))

    def batches(self, epoch):
        """The batches of a given epoch, without touching the `epoch` counter."""
        return iterate_batches(self.x, self.y, self.batch_size, shuffle=self.shuffle,
                               seed=epoch_seed(self.seed, epoch), drop_last=self.drop_last,
                               merge_single=self.merge_single)

    def __iter__(self):
        yield from self.batches(self.epoch)
        self.epoch += 1

    def state_dict(self):
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state):
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])


def to_float_images(x):
    """uint8 images (N, H, W) or (N, C, H, W) -> float32 (N, 1, H, W) / (N, C, H, W) scaled to [0, 1]."""
    xp = get_array_module(x)
    if x.dtype != np.uint8:
        raise TypeError(f"to_float_images expects uint8 images, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim != 4:
        raise ValueError(f"to_float_images expects shape (N, H, W) or (N, C, H, W), got {x.shape}")
    return x.astype(xp.float32) / xp.float32(255.0)

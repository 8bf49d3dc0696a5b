"""Regenerate tests/data/mnist_small/: a class-balanced, seeded subset of MNIST (4,000 train, 1,000 test) as gzipped IDX.

Usage (from the repository root):
    PYTHONPATH=. python tests/data/make_mnist_small.py [--data-dir FOLDER] [--out tests/data/mnist_small]

The full files are read (and checked against their SHA-256) with minicnn.data.load_mnist from
FOLDER (default: the minicnn cache, downloading when missing). The output is byte-for-byte
reproducible: same seed, sorted indices, gzip with mtime=0.
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from minicnn.data import load_mnist, write_idx  # noqa: E402

N_TRAIN, N_TEST, SEED = 4000, 1000, 0


def balanced_subset(labels, n, rng, num_classes=10):
    """Indices of n samples, as equal as possible across classes (a class short of samples gives all it has)."""
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    want = np.zeros(num_classes, dtype=np.int64)
    remaining = n
    open_classes = [c for c in range(num_classes) if len(by_class[c]) > 0]
    while remaining > 0 and open_classes:
        share, extra = divmod(remaining, len(open_classes))
        for k, c in enumerate(open_classes):
            take = min(share + (1 if k < extra else 0), len(by_class[c]) - want[c])
            want[c] += take
            remaining -= take
        open_classes = [c for c in open_classes if want[c] < len(by_class[c])]
    picked = [rng.choice(by_class[c], size=int(want[c]), replace=False) for c in range(num_classes)]
    return np.sort(np.concatenate(picked))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder with the four full MNIST files (default: the cache)")
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "mnist_small"))
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir)
    os.makedirs(args.out, exist_ok=True)
    for split, x, y, n in (("train", x_train, y_train, N_TRAIN), ("t10k", x_test, y_test, N_TEST)):
        index = balanced_subset(y, n, np.random.default_rng(SEED))
        write_idx(os.path.join(args.out, f"{split}-images-idx3-ubyte.gz"), x[index], compress=True)
        write_idx(os.path.join(args.out, f"{split}-labels-idx1-ubyte.gz"), y[index], compress=True)
        print(f"{split}: {len(index)} images, per class {np.bincount(y[index], minlength=10).tolist()}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

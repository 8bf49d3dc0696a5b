"""Print the README's results table from the histories examples/mnist.py wrote: one row per preset.

    python examples/results_table.py runs/compact-seed{0,1,2}.history.json runs/tiny-seed{0,1,2}.history.json

A file named PRESET-seedS.history.json (or PRESET-augment-seedS...) is one run of PRESET with seed S;
the row reports the final epoch's test accuracy of each seed, their mean, and the mean seconds per
epoch over all epochs of those runs.
"""
import argparse
import os
import re
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minicnn.checkpoint import read_history  # noqa: E402
from minicnn.models import get_model  # noqa: E402
from minicnn.nn import summary  # noqa: E402

NAME = re.compile(r"^(?P<preset>[a-z0-9]+)(?P<augment>-augment)?-seed(?P<seed>\d+)\.history\.json$")


def parse_name(path):
    """'runs/eip4-augment-seed2.history.json' -> ('eip4', True, 2)."""
    m = NAME.match(os.path.basename(path))
    if m is None:
        raise ValueError(f"{path}: expected a name like PRESET-seedS.history.json or PRESET-augment-seedS.history.json")
    return m["preset"], m["augment"] is not None, int(m["seed"])


def finished_history(path):
    """The per-epoch records of one run, its last with a test accuracy; ValueError (one line) for a missing,
    unreadable or foreign file."""
    history = read_history(path)
    if not (history and all(k in history[-1] for k in ("test_accuracy", "seconds"))):
        raise ValueError(f"{path} is not the history of a run of examples/mnist.py (a non-empty list of epoch records)")
    return history


def rows(paths):
    runs = defaultdict(dict)
    for path in paths:
        preset, augment, seed = parse_name(path)
        runs[(preset, augment)][seed] = finished_history(path)
    for (preset, augment), by_seed in runs.items():
        s = summary(get_model(preset), (1, 28, 28), print_fn=None)
        finals = {seed: h[-1]["test_accuracy"] for seed, h in sorted(by_seed.items())}
        epochs = sorted({len(h) for h in by_seed.values()})
        seconds = [e["seconds"] for h in by_seed.values() for e in h]
        yield dict(preset=preset + (" --augment" if augment else ""), keras=s.total, torch=s.trainable,
                   epochs="/".join(map(str, epochs)), finals=finals,
                   mean=sum(finals.values()) / len(finals), seconds=sum(seconds) / len(seconds))


def markdown(table):
    out = ["| preset | params (Keras) | params (PyTorch) | epochs | final test accuracy per seed | mean | s/epoch as run |",
           "|---|---:|---:|---:|---|---:|---:|"]
    for r in table:
        per_seed = ", ".join(f"{100 * a:.2f}% (seed {s})" for s, a in r["finals"].items())
        out.append(f"| `{r['preset']}` | {r['keras']:,} | {r['torch']:,} | {r['epochs']} | {per_seed} | "
                   f"**{100 * r['mean']:.2f}%** | {r['seconds']:.1f} |")
    return "\n".join(out)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv=None):
    """Print the table; a mistake (a file missing, unreadable, or named unlike a run) is one line, exit status 2."""
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("histories", nargs="+", help="PRESET[-augment]-seedS.history.json files")
    args = p.parse_args(argv)
    try:
        table = list(rows(args.histories))
    except ValueError as e:
        print(f"{p.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())

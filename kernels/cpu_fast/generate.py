"""Write (or check) the generated register tiles of the CPU fast path from their generators.

    python -m minicnn.kernels.cpu_fast.generate            # rewrite kernels/cpu_fast/generated/*.py
    python -m minicnn.kernels.cpu_fast.generate --check    # exit 1, naming the files, if any differs (CI)

Numba caches a compiled kernel on disk and checks only the file that defines it. A regenerated tile is a new
text in generated/, so its cache entry is compiled again; the chunk loops call the tiles by address
(simd.KernelAddress) and hold none of their code, so theirs stay valid.
"""
import argparse
import os
import sys

from . import direct, direct_grad, lanes

GENERATED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "generated")
FILES = {"direct_tile.py": direct.tile_source, "lanes_tiles.py": lanes.tile_source, "grad_tile.py": direct_grad.tile_source}


def stale():
    """Names of the generated files whose text differs from what their generator writes now."""
    out = []
    for name, source in FILES.items():
        with open(os.path.join(GENERATED, name), encoding="utf-8") as f:
            if f.read() != source():
                out.append(name)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if a generated file is stale")
    if parser.parse_args(argv).check:
        bad = stale()
        for name in bad:
            print(f"kernels/cpu_fast/generated/{name} is out of date: run python -m minicnn.kernels.cpu_fast.generate",
                  file=sys.stderr)
        return 1 if bad else 0
    for name, source in FILES.items():
        with open(os.path.join(GENERATED, name), "w", encoding="utf-8") as f:
            f.write(source())
        print(f"wrote kernels/cpu_fast/generated/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

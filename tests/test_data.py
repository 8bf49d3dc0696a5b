"""Tests of minicnn.data: IDX parsing, verified MNIST loading through local sources, batching. Never uses the network."""
import gzip
import hashlib
import os

import numpy as np
import pytest

from minicnn.data import (MNIST_FILES, DataLoader, LocalFolderSource, UrlSource, default_data_dir,
                          iterate_batches, load_mnist, parse_idx, read_idx, read_mnist_folder,
                          to_float_images, write_idx)
from minicnn.data.idx import idx_bytes

SMALL = os.path.join(os.path.dirname(__file__), "data", "mnist_small")


@pytest.fixture(autouse=True)
def _no_progress(monkeypatch):
    monkeypatch.setenv("MINICNN_NO_PROGRESS", "1")


def fake_mnist(folder, compress=False, n_train=6, n_test=4, seed=0):
    """Write four tiny MNIST-shaped IDX files; return (arrays by name, SHA-256 table of the raw bytes)."""
    rng = np.random.default_rng(seed)
    arrays = {
        MNIST_FILES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        MNIST_FILES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        MNIST_FILES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        MNIST_FILES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    os.makedirs(folder, exist_ok=True)
    for name, a in arrays.items():
        write_idx(os.path.join(folder, name + (".gz" if compress else "")), a, compress=compress)
    sums = {name: hashlib.sha256(idx_bytes(a)).hexdigest() for name, a in arrays.items()}
    return arrays, sums


def assert_loaded(result, arrays):
    (xt, yt), (xs, ys) = result
    for got, name in zip((xt, yt, xs, ys), MNIST_FILES):
        np.testing.assert_array_equal(got, arrays[name])
        assert got.dtype == np.uint8


# ---------------------------------------------------------------- IDX parsing

def test_raw_and_gzip_parse_to_the_same_array_whatever_the_file_name(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "raw.gz", a)  # raw bytes despite the .gz name
    write_idx(tmp_path / "zipped", a, compress=True)  # gzip without the .gz name
    np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "zipped"), a)
    assert (tmp_path / "zipped").read_bytes()[:2] == b"\x1f\x8b"


def test_wrong_magic_number_names_file_and_value(tmp_path):
    data = bytearray(idx_bytes(np.zeros(5, dtype=np.uint8)))
    data[2] = 0x09  # type code 0x09 (signed byte) instead of 0x08
    path = tmp_path / "labels"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"labels.*0x00000901"):
        read_idx(path)


def test_images_file_where_labels_expected_is_rejected():
    data = idx_bytes(np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(ValueError, match="3 dimension"):
        parse_idx(data, "some-labels", expected_ndim=1)


def test_truncated_and_overlong_files_report_the_lengths(tmp_path):
    data = idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))  # 16 + 2352 bytes
    (tmp_path / "short").write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"short.*2358 bytes.*2368 bytes.*truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(data + b"\0")
    with pytest.raises(ValueError, match="trailing"):
        read_idx(tmp_path / "long")


def test_truncated_gzip_is_a_value_error(tmp_path):
    zipped = gzip.compress(idx_bytes(np.ones((4, 28, 28), dtype=np.uint8)))
    (tmp_path / "cut.gz").write_bytes(zipped[: len(zipped) // 2])
    with pytest.raises(ValueError, match=r"cut\.gz.*truncated or corrupt"):
        read_idx(tmp_path / "cut.gz")


# ---------------------------------------------------------------- load_mnist with local sources

def test_download_through_local_folder_then_cached(tmp_path):
    arrays, sums = fake_mnist(tmp_path / "src")
    cache = tmp_path / "cache"
    assert_loaded(load_mnist(cache, sources=[LocalFolderSource(tmp_path / "src")], checksums=sums), arrays)
    assert sorted(os.listdir(cache)) == sorted(MNIST_FILES)

    def must_not_be_called(name, dest):
        raise AssertionError("a valid cache must not be fetched again")
    assert_loaded(load_mnist(cache, sources=[must_not_be_called], checksums=sums), arrays)
    assert_loaded(load_mnist(cache, download=False, checksums=sums), arrays)


def test_download_through_file_url_keeps_gzip_in_cache(tmp_path):
    arrays, sums = fake_mnist(tmp_path / "mirror", compress=True)
    source = UrlSource((tmp_path / "mirror").as_uri() + "/", suffix=".gz")
    cache = tmp_path / "cache"
    assert_loaded(load_mnist(cache, sources=[source], checksums=sums), arrays)
    assert sorted(os.listdir(cache)) == sorted(n + ".gz" for n in MNIST_FILES)
    assert_loaded(load_mnist(cache, download=False, checksums=sums), arrays)


def test_default_table_rejects_fake_files(tmp_path):
    fake_mnist(tmp_path / "src")
    with pytest.raises(RuntimeError, match="SHA-256"):
        load_mnist(tmp_path / "cache", sources=[LocalFolderSource(tmp_path / "src")])
    assert os.listdir(tmp_path / "cache") == []


def test_corrupt_cached_file_is_reported_and_fetched_again(tmp_path):
    arrays, sums = fake_mnist(tmp_path / "src")
    cache = tmp_path / "cache"
    fake_mnist(cache)
    bad = cache / MNIST_FILES[0]
    data = bytearray(bad.read_bytes())
    data[100] ^= 0xFF  # still a well-formed IDX file, but not the right content
    bad.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=rf"{MNIST_FILES[0]}.*download=False(.|\n)*SHA-256"), \
            pytest.warns(RuntimeWarning, match="SHA-256"):
        load_mnist(cache, download=False, checksums=sums)
    with pytest.warns(RuntimeWarning, match=rf"{MNIST_FILES[0]}.*SHA-256.*fetching it again"):
        result = load_mnist(cache, sources=[LocalFolderSource(tmp_path / "src")], checksums=sums)
    assert_loaded(result, arrays)
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == sums[MNIST_FILES[0]]


def test_truncated_cached_gzip_is_fetched_again_and_replaced_by_raw(tmp_path):
    arrays, sums = fake_mnist(tmp_path / "src")
    cache = tmp_path / "cache"
    fake_mnist(cache, compress=True)
    cut = cache / (MNIST_FILES[2] + ".gz")
    cut.write_bytes(cut.read_bytes()[:50])
    with pytest.warns(RuntimeWarning, match="truncated"):
        result = load_mnist(cache, sources=[LocalFolderSource(tmp_path / "src")], checksums=sums)
    assert_loaded(result, arrays)
    assert not cut.exists() and (cache / MNIST_FILES[2]).exists()


def test_source_failing_midway_leaves_no_partial_file(tmp_path):
    arrays, sums = fake_mnist(tmp_path / "src")
    calls = []

    def dies_midway(name, dest):
        calls.append(name)
        with open(dest, "wb") as f:
            f.write(b"\0\0\x08\x03 partial")
        raise ConnectionResetError("connection reset after 12 bytes")

    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError):
        load_mnist(cache, sources=[dies_midway], checksums=sums)
    assert os.listdir(cache) == []
    # next to a good source: the failing one is tried once, then skipped for the other files
    calls.clear()
    result = load_mnist(cache, sources=[dies_midway, LocalFolderSource(tmp_path / "src")], checksums=sums)
    assert_loaded(result, arrays)
    assert calls == [MNIST_FILES[0]]
    assert sorted(os.listdir(cache)) == sorted(MNIST_FILES)


def test_wrong_bytes_from_first_source_fall_through_to_the_next(tmp_path):
    arrays, sums = fake_mnist(tmp_path / "good")
    fake_mnist(tmp_path / "other", seed=1)
    cache = tmp_path / "cache"
    sources = [LocalFolderSource(tmp_path / "other"), LocalFolderSource(tmp_path / "good")]
    assert_loaded(load_mnist(cache, sources=sources, checksums=sums), arrays)


def test_all_sources_fail_lists_every_source_and_where_to_put_files(tmp_path):
    _, sums = fake_mnist(tmp_path / "unused")
    (tmp_path / "empty").mkdir()

    def offline(name, dest):
        raise OSError("network unreachable")

    sources = [UrlSource((tmp_path / "nowhere").as_uri() + "/"), LocalFolderSource(tmp_path / "empty"), offline]
    with pytest.raises(RuntimeError) as info:
        load_mnist(tmp_path / "cache", sources=sources, checksums=sums)
    message = str(info.value)
    assert "nowhere" in message and "No such file or directory" in message
    assert f"the folder {tmp_path / 'empty'}: neither" in message
    assert "offline: network unreachable" in message
    assert f"put the file(s) {', '.join(MNIST_FILES)}" in message and str(tmp_path / "cache") in message


def test_missing_files_with_download_false_say_where_to_put_them(tmp_path):
    with pytest.raises(RuntimeError, match=rf"{MNIST_FILES[0]}(.|\n)*put the file\(s\)(.|\n)*{tmp_path.name}"):
        load_mnist(tmp_path, download=False)


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path / "d"))
    assert default_data_dir() == str(tmp_path / "d")
    monkeypatch.delenv("MINICNN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == os.path.join(str(tmp_path / "xdg"), "minicnn", "mnist")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_data_dir() == os.path.join(os.path.expanduser("~"), ".cache", "minicnn", "mnist")


def test_data_dir_from_env_is_used_and_created(monkeypatch, tmp_path):
    arrays, sums = fake_mnist(tmp_path / "src")
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path / "env" / "mnist"))
    assert_loaded(load_mnist(sources=[LocalFolderSource(tmp_path / "src")], checksums=sums), arrays)
    assert sorted(os.listdir(tmp_path / "env" / "mnist")) == sorted(MNIST_FILES)


# ---------------------------------------------------------------- committed subset

def test_committed_subset_loads_with_all_classes():
    (xt, yt), (xs, ys) = read_mnist_folder(SMALL)
    assert xt.shape == (4000, 28, 28) and yt.shape == (4000,)
    assert xs.shape == (1000, 28, 28) and ys.shape == (1000,)
    assert np.bincount(yt, minlength=10).tolist() == [400] * 10
    assert np.bincount(ys, minlength=10).tolist() == [100] * 10
    assert xt.dtype == np.uint8 and xt.max() == 255 and xt.min() == 0


def test_read_mnist_folder_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=MNIST_FILES[0]):
        read_mnist_folder(tmp_path)


# ---------------------------------------------------------------- batches

def test_iterate_batches_covers_everything_once():
    x = np.arange(23)
    y = x * 10
    batches = list(iterate_batches(x, y, 5, seed=3))
    assert [len(xb) for xb, _ in batches] == [5, 5, 5, 5, 3]
    for xb, yb in batches:
        np.testing.assert_array_equal(yb, xb * 10)
    seen = np.concatenate([xb for xb, _ in batches])
    assert sorted(seen.tolist()) == list(range(23)) and seen.tolist() != list(range(23))
    assert [len(xb) for xb, _ in iterate_batches(x, y, 5, drop_last=True, seed=3)] == [5, 5, 5, 5]
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in iterate_batches(x, None, 4, shuffle=False)]), x)


def test_iterate_batches_seeded_order_is_reproducible():
    x = np.arange(50)
    order = lambda seed: np.concatenate([xb for xb, _ in iterate_batches(x, x, 7, seed=seed)])  # noqa: E731
    np.testing.assert_array_equal(order(1), order(1))
    assert not np.array_equal(order(1), order(2))
    np.testing.assert_array_equal(order(np.random.default_rng(1)), order(1))


def test_iterate_batches_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_batches(np.zeros(3), np.zeros(3), 0))
    with pytest.raises(ValueError, match="3 and 4"):
        next(iterate_batches(np.zeros(3), np.zeros(4), 2))


def test_dataloader_epochs_depend_only_on_seed_and_epoch():
    x = np.arange(40)
    run = DataLoader(x, x, 8, seed=7)
    assert len(run) == 5 and len(DataLoader(x, x, 16, drop_last=True)) == 2
    epochs = []
    for _ in range(3):
        epochs.append([xb.copy() for xb, _ in run])
    assert run.epoch == 3
    assert not np.array_equal(np.concatenate(epochs[0]), np.concatenate(epochs[1]))
    # a "resumed" loader, started at epoch 2, yields exactly the batches of the uninterrupted run
    resumed = DataLoader(x, x, 8, seed=7)
    resumed.load_state_dict({"seed": 7, "epoch": 2})
    for a, b in zip(epochs[2], [xb for xb, _ in resumed]):
        np.testing.assert_array_equal(a, b)
    assert resumed.state_dict() == {"seed": 7, "epoch": 3}
    other = DataLoader(x, x, 8, seed=8)
    assert not np.array_equal(np.concatenate([xb for xb, _ in other]), np.concatenate(epochs[0]))


def test_to_float_images():
    x = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    f = to_float_images(x)
    assert f.shape == (1, 1, 2, 2) and f.dtype == np.float32
    np.testing.assert_allclose(f[0, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        to_float_images(f)


@pytest.mark.gpu
def test_gpu_batches_stay_on_the_gpu_and_are_seeded():
    from minicnn.backend import gpu_available, gpu_unavailable_reason
    if not gpu_available():
        pytest.skip(gpu_unavailable_reason())
    import cupy as cp
    x = cp.arange(30)
    first = [xb for xb, _ in iterate_batches(x, x * 2, 4, seed=5)]
    again = [xb for xb, _ in iterate_batches(x, x * 2, 4, seed=5)]
    assert all(isinstance(b, cp.ndarray) for b in first)
    seen = cp.asnumpy(cp.concatenate(first))
    assert sorted(seen.tolist()) == list(range(30))
    np.testing.assert_array_equal(seen, cp.asnumpy(cp.concatenate(again)))
    f = to_float_images(cp.zeros((2, 28, 28), dtype=cp.uint8))
    assert isinstance(f, cp.ndarray) and f.shape == (2, 1, 28, 28) and f.dtype == cp.float32

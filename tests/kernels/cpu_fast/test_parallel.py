"""kernels/cpu_fast/parallel.py: chunks cut by the batch alone (so sums are the same on any thread count), and
run_chunks running every chunk once, one run of chunks per thread."""
import numba
import numpy as np
import pytest
from numba import njit

from minicnn.kernels.cpu_fast import parallel
from minicnn.kernels.cpu_fast.parallel import SHARES, batch_chunks, chunk_size, images_per_chunk, run_chunks


@pytest.mark.parametrize("N, bytes_per_image", [(1, 100), (5, 10 ** 5), (128, 100), (128, 173_000),
                                                (1000, 3 * 10 ** 6)])
def test_chunks_depend_on_the_batch_not_on_the_thread_count(N, bytes_per_image, monkeypatch):
    """The same chunks whatever numba.get_num_threads() says: the weight gradients' partial sums, and so their
    bits, do not change with --threads."""
    seen = set()
    for threads in (1, 2, 3, 4, 16):
        monkeypatch.setattr(parallel.numba, "get_num_threads", lambda threads=threads: threads)
        seen.add((images_per_chunk(N, bytes_per_image), tuple(batch_chunks(N, bytes_per_image))))
    assert len(seen) == 1


@pytest.mark.parametrize("N, bytes_per_image, chunk_bytes", [(128, 100, 1 << 20), (128, 173_000, 1 << 20),
                                                            (64, 48_000, 4 << 20), (3, 100, 1 << 20)])
def test_chunks_hold_at_most_chunk_bytes_and_divide_the_batch_by_a_multiple_of_shares(N, bytes_per_image, chunk_bytes):
    """per = ceil(N / m) images a chunk for some multiple m of SHARES, at most chunk_bytes (or one image)."""
    per = chunk_size(N, bytes_per_image, chunk_bytes)
    assert per * bytes_per_image <= max(chunk_bytes, bytes_per_image)
    assert any(per == -(-N // m) for m in range(SHARES, SHARES * N + 1, SHARES))


@njit(cache=True, nogil=True)
def count_visits(k0, k1, args):
    """visits[k] += 1 for the chunks k0 .. k1-1; runs[k0] += 1 (which runs there were)."""
    visits, runs = args
    for k in range(k0, k1):
        visits[k] += 1
    runs[k0] += 1


@pytest.mark.parametrize("threads", [1, 2])
def test_run_chunks_runs_every_chunk_once_in_one_run_per_thread(threads):
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"Numba has {numba.config.NUMBA_NUM_THREADS} thread(s)")
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        visits, runs = np.zeros(37, np.int64), np.zeros(37, np.int64)
        run_chunks(count_visits, 37, (visits, runs))
        run_chunks(count_visits, 1, (np.zeros(1, np.int64), np.zeros(1, np.int64)))   # fewer chunks than threads
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(visits, np.ones(37, np.int64))
    assert runs.sum() == threads and runs[0] == 1


@njit(cache=True, nogil=True)
def fail_in_the_last_run(k0, k1, args):
    done, = args
    if k1 == done.shape[0]:
        raise ValueError("the last run fails")
    for k in range(k0, k1):
        done[k] = 1


def test_an_error_in_a_run_reaches_the_caller_after_every_run_ended():
    done = np.zeros(8, np.int64)
    with pytest.raises(ValueError, match="the last run fails"):
        run_chunks(fail_in_the_last_run, 8, (done,))
    assert done[:8 // max(1, min(8, numba.get_num_threads()))].all()

"""Batch parallelism on the CPU: split N images into cache-sized chunks and run the chunks on a pool of threads.

A convolution's column matrix for the whole batch is large (eip4's second layer: 144 x 73,728 floats,
42 MB), and every pass over it is paid in memory bandwidth. Cut the batch into chunks whose column
matrix fits in the cache (CACHE_BYTES), and im2col, the matrix product and col2im of one chunk
all run from the cache. The chunks are independent, so threads take them in parallel: the Numba
kernels release the GIL and BLAS runs single-threaded inside each of them (minicnn/__init__.py sets
OPENBLAS_NUM_THREADS=1 unless you set it), so the two kinds of threads never fight over the cores.
Results come back in chunk order, so sums over chunks are deterministic.

Handing a chunk to a Python thread costs tens of microseconds (65 us for two empty chunks on the reference
machine), and the Python between the kernel calls of each chunk holds the GIL: on small layers that ate
the second thread's gain. The direct convolution (conv_direct.py, conv_direct_grad.py, conv_lanes.py)
therefore runs its chunks inside one Numba call, on Numba's own threads (`prange` over chunks, 13 us to
start); `images_per_chunk` sizes those chunks. Numba caches such a chunk loop on disk with the tiles it
calls linked in, and checks only the timestamp of the loop's own file: the generated tile files
(conv_tile.py, conv_lanes_tile.py, conv_grad_tile.py) are written by generators that live in those same
files, so regenerating a tile goes with an edit there, which invalidates the cached loops. One loop links a tile
of another file: conv_direct_grad.py's `grads_chunks` calls conv_direct.py's tile (the image gradient); after
regenerating conv_tile.py, delete kernels/__pycache__ (or touch conv_direct_grad.py).
"""
from concurrent.futures import ThreadPoolExecutor

import numba

# 4 MB: about a core's share of this machine's last-level cache. Measured in one process on eip4's second
# layer (forward + backward, batch 128, 2 threads, 15 interleaved repeats): 1 MB chunks (2 images) 23.5 ms,
# 2 MB 19.5, 4 MB 18.3, 8 MB 18.8 (median); the other layers within 5% either way (benchmarks/README.md).
CACHE_BYTES = 4 << 20
# 1 MB: half a core's L2 cache on the reference machine (2 MB). A chunk of the direct convolution walks its
# images 3 to 4 times (gy laid out as rows, the tile, the copy back): eip4's second layer, one thread, per
# chunk of 2 / 4 / 8 / 16 / 32 / 64 images, image gradient 6.6 / 5.4 / 5.2 / 5.1 / 6.0 / 6.0 ms, weight
# gradient 5.6 / 4.3 / 4.0 / 4.0 / 5.0 / 5.1 ms (medians, interleaved; scratch measurement, session 9).
CHUNK_BYTES = 1 << 20
_pool = None


def batch_chunks(N, bytes_per_image):
    """[(n0, n1), ...] covering range(N): chunks of about CACHE_BYTES, and at least one per thread."""
    per_chunk = max(1, CACHE_BYTES // max(1, bytes_per_image))
    per_chunk = min(per_chunk, max(1, -(-N // numba.get_num_threads())))
    return chunks_of(N, per_chunk)


def images_per_chunk(N, bytes_per_image):
    """Images per chunk for a kernel whose chunks run on Numba's threads (prange): chunks of about CHUNK_BYTES,
    as many as a multiple of the thread count (prange gives every thread an equal share of the chunks)."""
    threads = numba.get_num_threads()
    per_cache = max(1, CHUNK_BYTES // max(1, bytes_per_image))
    chunks = threads * -(-N // (per_cache * threads))
    return max(1, -(-N // chunks))


def chunks_of(N, per_chunk):
    """[(0, per_chunk), (per_chunk, 2*per_chunk), ..., (.., N)]: range(N) cut into chunks of per_chunk images."""
    return [(n0, min(N, n0 + per_chunk)) for n0 in range(0, N, per_chunk)]


def whole_batch(N, bytes_per_image):
    """One chunk: the whole batch (the GPU backend and the plain-NumPy backend schedule this way)."""
    return [(0, N)]


def in_order(fn, chunks):
    """[fn(n0, n1) for each chunk], one after the other on the calling thread."""
    return [fn(n0, n1) for n0, n1 in chunks]


def map_chunks(fn, chunks):
    """[fn(n0, n1) for each chunk], computed by up to numba.get_num_threads() threads, in chunk order."""
    global _pool
    threads = numba.get_num_threads()
    if threads == 1 or len(chunks) == 1:
        return in_order(fn, chunks)
    if _pool is None or _pool._max_workers != threads:
        single_threaded_blas()
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="minicnn")
    return list(_pool.map(lambda c: fn(*c), chunks))


def sum_in_order(parts):
    """parts[0] + parts[1] + ... in chunk order (a list of arrays, or an array's first axis): the same result
    whatever thread finished first."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def single_threaded_blas():
    """Limit BLAS to one thread now, with threadpoolctl when it is installed (the dev extra has it).

    Without threadpoolctl only OPENBLAS_NUM_THREADS=1, set by minicnn/__init__.py before NumPy loads,
    does this; a NumPy imported earlier keeps its multi-threaded BLAS and convolutions run slower.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    threadpool_limits(1, user_api="blas")
    return True

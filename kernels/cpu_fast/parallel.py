"""Batch parallelism on the CPU: split N images into cache-sized chunks and run the chunks on threads.

A convolution's column matrix for the whole batch is large (eip4's second layer: 144 x 73,728 floats,
42 MB), and every pass over it is paid in memory bandwidth. Cut the batch into chunks whose column
matrix fits in the cache (CACHE_BYTES), and im2col, the matrix product and col2im of one chunk
all run from the cache. The chunks are independent, so threads take them in parallel: the Numba
kernels release the GIL and BLAS runs single-threaded inside each of them (minicnn/__init__.py sets
OPENBLAS_NUM_THREADS=1 unless you set it), so the two kinds of threads never fight over the cores.

The same numbers on any thread count. The weight and bias gradients are sums over the batch: each chunk
sums its images, then the chunks' parts are added in chunk order (`sum_in_order`). Floating-point
addition is not associative, so the bits depend on where the chunks are cut; the cuts therefore depend
only on the batch (N and the bytes per image), never on the thread count (`chunk_size`): a run on 1, 2
or 8 threads gives the same bits. The batch is cut for a multiple of SHARES = 8 chunks where it
allows, so 1, 2, 4 or 8 threads get equal shares; the small layers, which one chunk per thread would
cover, pay a few more chunk starts: an eip4 training step (batch 128) takes 37.4 against 37.9 ms with
chunks cut by the thread count on 2 threads, 51.5 against 51.4 ms on 1 (medians of 41 and 21 interleaved
steps, a 2-core AMD EPYC with AVX2).

Handing a chunk to a Python thread costs tens of microseconds, and the Python between the kernel calls of
each chunk holds the GIL: on small layers that ate the second thread's gain. The direct convolution
(direct.py, direct_grad.py, lanes.py) therefore gives each thread one run of consecutive chunks and one call
for it: `run_chunks(chunks, count, args)` cuts chunks 0 .. count-1 into numba.get_num_threads() runs and
calls the Numba kernel chunks(k0, k1, args) once per run, one run on the calling thread, the others on the
pool's (the kernels release the GIL). Starting the runs costs about as much as starting a `prange` loop on
Numba's own threads (two tiny chunks: 106 against 115 us; an eip4 training step: 40.5 against 40.1 ms,
medians of 31 interleaved, on a 2-core AMD EPYC), and a chunk kernel is compiled once: a
`prange` loop's body is compiled as a function of its own and then again inside the loop's, with every
kernel it calls linked in (eip4's backward chunk loop took 14 s to compile that way; its chunk kernel takes
2 s, one core). The tiles a chunk kernel runs travel by address (simd.KernelAddress), compiled once each;
the small helpers it calls (image_rows, unrows, grad_rows, run_tile, crop_add_bias) are inlined into it
(`inline='always'`), compiled there only. Numba caches a chunk kernel on disk and checks only its own
file, so after editing a helper in another file, delete that folder's __pycache__ (or NUMBA_CACHE_DIR).
"""
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from .simd import KernelAddress

# 4 MB: about a core's share of this machine's last-level cache. Measured in one process on eip4's second
# layer (forward + backward, batch 128, 2 threads, 15 interleaved repeats): 1 MB chunks (2 images) 23.5 ms,
# 2 MB 19.5, 4 MB 18.3, 8 MB 18.8 (median); the other layers within 5% either way (benchmarks/README.md).
CACHE_BYTES = 4 << 20
# 1 MB: half a core's L2 cache on the reference machine (2 MB). A chunk of the direct convolution walks its
# images 3 to 4 times (gy laid out as rows, the tile, the copy back): eip4's second layer, one thread, per
# chunk of 2 / 4 / 8 / 16 / 32 / 64 images, image gradient 6.6 / 5.4 / 5.2 / 5.1 / 6.0 / 6.0 ms, weight
# gradient 5.6 / 4.3 / 4.0 / 4.0 / 5.0 / 5.1 ms (medians, interleaved).
CHUNK_BYTES = 1 << 20
SHARES = 8   # the batch is cut for a multiple of SHARES chunks: equal shares for 1, 2, 4 or 8 threads


def chunk_size(N, bytes_per_image, chunk_bytes):
    """Images per chunk: ceil(N / m) for the smallest multiple m of SHARES that makes chunks of at most chunk_bytes
    (or of one image). A function of the batch alone, not of the thread count: the chunks' partial sums, and so
    the results, are the same on any."""
    per_cache = max(1, chunk_bytes // max(1, bytes_per_image))
    chunks = SHARES * -(-N // (per_cache * SHARES))
    return max(1, -(-N // chunks))


def images_per_chunk(N, bytes_per_image):
    """Images per chunk for a Numba chunk kernel (run_chunks): chunks of about CHUNK_BYTES."""
    return chunk_size(N, bytes_per_image, CHUNK_BYTES)


def batch_chunks(N, bytes_per_image):
    """[(n0, n1), ...] covering range(N): chunks of about CACHE_BYTES, for map_chunks."""
    return chunks_of(N, chunk_size(N, bytes_per_image, CACHE_BYTES))


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
    """[fn(n0, n1) for each chunk], computed by up to numba.get_num_threads() Python threads, in chunk order."""
    if numba.get_num_threads() == 1 or len(chunks) == 1:
        return in_order(fn, chunks)
    return list(thread_pool().map(lambda c: fn(*c), chunks))


_pool = None
_pool_lock = threading.Lock()


def thread_pool():
    """The pool of Python threads the chunks run on: as many as Numba may use (NUMBA_NUM_THREADS), made once."""
    global _pool
    with _pool_lock:
        if _pool is None:
            single_threaded_blas()
            _pool = ThreadPoolExecutor(max_workers=numba.config.NUMBA_NUM_THREADS, thread_name_prefix="minicnn")
    return _pool


_chunk_kernels = {}
_chunk_lock = threading.Lock()


def run_chunks(chunks, count, args):
    """Run the Numba kernel chunks(k0, k1, args), which computes chunks k0 .. k1-1, over the chunks 0 .. count-1:
    cut into one run of consecutive chunks per thread (numba.get_num_threads()), each run one call, the first on
    the calling thread and the others on the pool's. Returns when all are done.

    args is a tuple of arrays and numbers, the tiles (KernelAddress) last: Numba warns that first-class functions
    are experimental whenever it types a tuple that starts with one. The kernel is compiled (or loaded from
    Numba's cache) for the arguments' types on first use, and called through its compiled entry point, not its
    dispatcher: the dispatcher would type the tuple and its tiles in Python at every call (about 300 us; the
    entry point only unboxes them, about 35 us)."""
    run = _entry_point(chunks, args)
    threads = max(1, min(numba.get_num_threads(), count))
    bounds = [count * t // threads for t in range(threads + 1)]
    others = [thread_pool().submit(run, bounds[t], bounds[t + 1], args) for t in range(1, threads)]
    try:
        run(bounds[0], bounds[1], args)
    finally:
        for job in others:
            job.result()


def _entry_point(chunks, args):
    """The compiled chunks(k0, k1, args) for the types of args, compiled on first use."""
    key = (chunks,) + tuple(map(_kind, args))
    run = _chunk_kernels.get(key)
    if run is None:
        with _chunk_lock:
            if key not in _chunk_kernels:
                types = (numba.int64, numba.int64, numba.typeof(args))
                chunks.compile(types)
                _chunk_kernels[key] = chunks.overloads[types].entry_point
            run = _chunk_kernels[key]
    return run


def _kind(value):
    """What Numba's type of one of run_chunks' arguments depends on, found in a microsecond (numba.typeof takes 30):
    an array's dtype, dimensions, layout and flags; a tile itself (compile_once gives one object per tile); else
    the Python type."""
    if isinstance(value, np.ndarray):
        flags = value.flags
        return value.dtype, value.ndim, flags.c_contiguous, flags.f_contiguous, flags.writeable, flags.aligned
    return value if isinstance(value, KernelAddress) else type(value)


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

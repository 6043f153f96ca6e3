"""Speed: every CPU trick of minicnn, each a named helper with a one-line contract.

The lessons (``functional/conv.py``, ``pooling.py``, ``norm.py``) read like
their math. When a line there is slow on a 2-core CPU, it calls a helper from
this module instead, and the helper's first docstring line says what it
returns in plain NumPy ("returns the same as ``a @ b``"); ``tests/test_speed.py``
checks each of those contracts. Reading the lessons, you may take every
helper here as its contract:

====================================  ===========================================
helper                                returns the same as
====================================  ===========================================
``parallel_chunks(n, work)``          ``work(0, n)`` (work writes rows [lo, hi) only)
``parallel_copy(dst, src)``           ``np.copyto(dst, src)`` (one shape), returns dst
``rows_per_block(row_bytes)``         the most rows (at least 1) that fit ``BLOCK_BYTES``
``row_blocks(M, row_bytes, work)``    ``[work(0, M)]``, block by block
``row_block_sum(M, nbytes, work)``    ``sum(row_blocks(M, nbytes, work))``
``single_threaded_blas()``            a block where OpenBLAS runs one thread (as before after it)
``matmul(a, b)``                      ``a @ b``
``matmul_t(a, b)``                    ``a.T @ b`` (``a.swapaxes(-1, -2) @ b``)
``column_sums(a)``                    ``a.sum(axis=0)``
``column_mean_var(X)``                ``(X.mean(axis=0), X.var(axis=0))``
``column_dot_centred(G, X, mean)``    ``(G * (X - mean)).sum(axis=0)``
``affine_rows(A, a, B, b, c)``        ``A * a + B * b + c``
``positive_part(x)``                  ``np.maximum(x, 0)``
``assign_increasing(a, k, mask)``     ``a[mask] = k`` (when a >= 0, and a <= k where mask)
====================================  ===========================================

Three tricks need the window machinery of ``functional`` and so live next
to their op, with the same kind of contract and test:
``functional.conv.im2col_product(x, b)`` returns ``im2col(x) @ b``,
``functional.conv.im2col_t_product(x, g)`` returns ``im2col(x).T @ g`` and
``functional.conv.col2im_of_product(a, b)`` returns ``col2im(a @ b)``.

Threads, by default
-------------------
A CPU product in minicnn (:func:`matmul`, :func:`matmul_t`,
:func:`column_sums`) runs OpenBLAS single-threaded for its own duration
(:class:`single_threaded_blas`, restored afterwards) and splits its rows
over minicnn's own pool of threads (:func:`parallel_chunks`) instead: one
pool of threads per process, which waits by sleeping, never by spinning.
On a quiet machine the product still uses every core; between products the
same pool runs the copies and elementwise passes; and when two jobs share
the cores they take turns instead of fighting (OpenBLAS's own threads spin
while they wait for each other, which made two jobs on 2 cores 16x slower
instead of 2x, and a plain loop half as fast as ``minicnn train``).
``MINICNN_BLAS_THREADS=n`` (n > 1) leaves OpenBLAS at its own threads
instead (then :func:`matmul` is a plain ``a @ b``). None of this changes
the process outside minicnn's own calls, so ``import minicnn`` and a loop
written by hand get the same speed as ``minicnn train``.

The allocator: a step allocates and frees the same large activations
every step, and glibc hands freed memory back to the OS and faults fresh
pages in again (15% of a step). So minicnn's first CPU product (not the
import) asks glibc once to keep freed memory for reuse, see
:func:`keep_freed_memory` (``MINICNN_MALLOC_TUNING=0`` turns it off).

Process settings
----------------
The entry points that run long jobs (``minicnn train``, the ``Trainer``,
the benchmarks) call :func:`apply_process_settings`, which applies both
for the whole process from the start:

- glibc keeps freed memory for reuse (``mallopt``), see :func:`keep_freed_memory`;
- OpenBLAS runs single-threaded for every call of the process, not only
  minicnn's (a training job makes few others).

This module imports only the standard library and NumPy: it sits beside
``backend`` at the top of the layer order.
"""
import functools
import os
import sys
import threading

__all__ = [
    "apply_process_settings", "keep_freed_memory", "blas_threads", "set_blas_threads", "single_threaded_blas",
    "cpu_threads", "parallel_chunks", "parallel_copy", "rows_per_block", "row_blocks", "row_block_sum", "BLOCK_BYTES", "matmul", "matmul_t", "column_sums",
    "column_mean_var", "column_dot_centred", "affine_rows", "positive_part", "assign_increasing",
]


# --------------------------------------------------------------------------
# Process settings (applied by the entry points, never at import)
# --------------------------------------------------------------------------
_applied = None     # what apply_process_settings() did, once it ran


def apply_process_settings():
    """Apply the process-wide settings that make long CPU jobs fast; idempotent.

    Called by the training entry points (``minicnn train``, ``Trainer``,
    ``bench/*.py``), never by ``import minicnn``. It

    1. asks glibc to keep freed memory for reuse (:func:`keep_freed_memory`);
       ``MINICNN_MALLOC_TUNING=0`` turns this off;
    2. makes OpenBLAS single-threaded for the whole process
       (:func:`set_blas_threads`), as minicnn's own products already run it
       (:class:`single_threaded_blas`), so no stray BLAS call of the job
       wakes OpenBLAS's spinning threads; ``MINICNN_BLAS_THREADS=n`` keeps
       OpenBLAS at ``n`` threads instead;
    3. sets ``OPENBLAS_THREAD_TIMEOUT=4`` (unless set) for the child
       processes the job starts: OpenBLAS reads it when it loads, so idle
       OpenBLAS threads of a child sleep at once instead of spinning for
       ~0.1 s (in this process OpenBLAS is loaded already; step 2 is the cure).

    Returns a dict saying what was applied (the same dict on every call).
    """
    global _applied
    if _applied is None:
        want = int(os.environ.get("MINICNN_BLAS_THREADS", "1"))
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
        _applied = {
            "keep_freed_memory": keep_freed_memory(),
            "blas_threads": want if set_blas_threads(want) else None,
            "child_openblas_thread_timeout": os.environ["OPENBLAS_THREAD_TIMEOUT"],
        }
    return dict(_applied)


def keep_freed_memory():
    """Ask glibc to keep freed memory for reuse instead of handing it back to the OS.

    What it saves: by default glibc serves every allocation above a few MiB
    with its own ``mmap`` and returns it with ``munmap`` on free, and trims
    the top of its heap when a step frees its activations. A training
    step allocates and frees the same large activations (tens of MB at
    batch 128) every step, so each one comes back as fresh pages,
    and touching fresh pages page-faults: filling a new 75 MB array took
    16 ms against 4 ms for reused memory, 15-20% of a whole step.

    Why it is correct: ``mallopt`` only changes where freed memory goes
    (back onto glibc's heap, reused by the next allocation of a similar
    size); every array is still allocated and initialised exactly as before.
    The price is that the process keeps its peak heap until it exits, which
    is what a training run does anyway.

    Called by :func:`apply_process_settings` and, once, by minicnn's first
    CPU product (:class:`single_threaded_blas`); ``MINICNN_MALLOC_TUNING=0``
    turns it off. A no-op where the C library is not glibc. Returns True if applied.
    """
    import ctypes
    if os.environ.get("MINICNN_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    # Serve large blocks from the heap (no per-block mmap) and never trim its top.
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))  # C int max


# --------------------------------------------------------------------------
# OpenBLAS's thread count, through ctypes (what threadpoolctl does)
# --------------------------------------------------------------------------
_BLAS_SUFFIXES = ("", "64_", "_64")
_BLAS_PREFIXES = ("openblas", "scipy_openblas")


@functools.lru_cache(maxsize=None)
def _openblas():
    """(set_num_threads, get_num_threads) C functions of the OpenBLAS NumPy loaded, or None."""
    import ctypes
    import numpy  # noqa: F401  (loads NumPy's OpenBLAS, if it has one)
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                if "openblas" in os.path.basename(path).lower() and path not in paths:
                    paths.append(path)
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)    # already loaded: the same handle NumPy uses
        except OSError:
            continue
        for prefix in _BLAS_PREFIXES:
            for suffix in _BLAS_SUFFIXES:
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    setter.argtypes, setter.restype = [ctypes.c_int], None
                    getter.argtypes, getter.restype = [], ctypes.c_int
                    return setter, getter
    return None


def blas_threads():
    """How many threads OpenBLAS uses for one matrix product, or None when NumPy's BLAS is not OpenBLAS."""
    fns = _openblas()
    return None if fns is None else int(fns[1]())


def set_blas_threads(n):
    """Set OpenBLAS's thread count to ``n`` for this process; returns False when there is no OpenBLAS to set."""
    fns = _openblas()
    if fns is None:
        return False
    fns[0](int(n))
    return True


@functools.lru_cache(maxsize=None)
def _minicnn_splits_products():
    """Whether minicnn's own pool splits CPU products (the default), not OpenBLAS (``MINICNN_BLAS_THREADS=n``, n > 1; read once)."""
    return os.environ.get("MINICNN_BLAS_THREADS", "1").strip() in ("", "1")


class single_threaded_blas:
    """``with single_threaded_blas():`` runs OpenBLAS single-threaded inside the block and as before after it.

    Why: minicnn splits its products over its own pool (:func:`matmul`), so
    OpenBLAS's threads must stay asleep during them; outside minicnn's calls
    the process keeps whatever thread count it had (``import minicnn``
    changes nothing). Setting the count is one C call (about 1 us). Nested
    and concurrent blocks are counted: the first to enter sets one thread,
    the last to leave puts the old count back. A no-op without OpenBLAS or
    when ``MINICNN_BLAS_THREADS=n`` (n > 1) asks for OpenBLAS's own threads.

    The first block of the process (minicnn's first CPU product, so heavy
    CPU work has begun) also calls :func:`keep_freed_memory` once: that is
    the other half of a fast step (15% of it), and it must not wait for an
    entry point, or a loop written by hand would be slower than ``minicnn
    train``. ``MINICNN_MALLOC_TUNING=0`` turns it off.
    """
    _lock = threading.Lock()
    _depth = 0
    _saved = None
    _memory_kept = False

    def __enter__(self):
        cls = single_threaded_blas
        if not cls._memory_kept:      # minicnn's first CPU product: heavy CPU work has started
            cls._memory_kept = True
            keep_freed_memory()
        if not _minicnn_splits_products():
            return self
        with cls._lock:
            if cls._depth == 0:
                now = blas_threads()
                cls._saved = now if now is not None and now > 1 else None
                if cls._saved is not None:
                    set_blas_threads(1)
            cls._depth += 1
        return self

    def __exit__(self, *exc):
        cls = single_threaded_blas
        if not _minicnn_splits_products():
            return False
        with cls._lock:
            cls._depth = max(0, cls._depth - 1)
            if cls._depth == 0 and cls._saved is not None:
                set_blas_threads(cls._saved)
                cls._saved = None
        return False


# --------------------------------------------------------------------------
# minicnn's thread pool
# --------------------------------------------------------------------------
_POOL = None
_POOL_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def cpu_threads():
    """How many threads ``parallel_chunks`` splits CPU work into (the usable cores; asked once)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class _InChunk(threading.local):
    """Whether this thread is running a chunk of ``parallel_chunks`` (a pool thread, or the caller's own chunk)."""
    active = False


_IN_CHUNK = _InChunk()


def _in_pool_thread():
    return _IN_CHUNK.active or threading.current_thread().name.startswith("minicnn-cpu")


def parallel_chunks(n, work, arrays_on_gpu=False):
    """Same as ``work(0, n)``, when ``work(lo, hi)`` writes only rows [lo, hi): runs one chunk per core, in threads.

    Why: NumPy runs a copy or an elementwise op on one core, but it releases
    the GIL while doing so, so two threads writing disjoint halves of an
    array keep two cores busy (a 75 MB im2col copy: 9.0 ms -> 6.3 ms on two
    cores). Correct as long as the chunks write disjoint memory, which is
    the caller's promise. The calling thread runs the first chunk itself
    while the pool's threads run the others (handing a chunk to a sleeping
    thread and back costs about 0.1 ms, so one handoff fewer matters for
    the small arrays of a step). On the GPU (``arrays_on_gpu``), for small
    ``n``, or when called from inside another chunk's work (the pool's
    threads would wait on themselves) it is a plain call ``work(0, n)``.
    The pool's threads wait for work by sleeping (a queue), never spinning.
    """
    global _POOL
    k = min(cpu_threads(), n)
    if arrays_on_gpu or k < 2 or _in_pool_thread():
        work(0, n)
        return
    with _POOL_LOCK:            # two threads calling at once must not make two pools
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor
            _POOL = ThreadPoolExecutor(max_workers=cpu_threads(), thread_name_prefix="minicnn-cpu")
    bounds = [n * i // k for i in range(k + 1)]
    futures = [_POOL.submit(work, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    first_error = None
    _IN_CHUNK.active = True
    try:
        work(bounds[0], bounds[1])
    except BaseException as e:  # noqa: BLE001  (raised below, after the other chunks finished)
        first_error = e
    finally:
        _IN_CHUNK.active = False
    errors = [first_error] + [f.exception() for f in futures]      # waits for every chunk, even after one failed
    for e in errors:
        if e is not None:
            raise e


def parallel_copy(dst, src):
    """Same as ``np.copyto(dst, src)`` for two arrays of one shape, and returns ``dst``: split over the cores along axis 0.

    Why: a copy runs on one core in NumPy, which releases the GIL while
    copying, so each core copying its own rows (``parallel_chunks``) is
    faster (im2col's copy of every window: 9.0 ms -> 6.3 ms on two cores).
    """
    import numpy as np

    if dst.shape != src.shape:
        raise ValueError(f"parallel_copy: dst has shape {dst.shape} but src has {src.shape}")
    if dst.ndim == 0:
        np.copyto(dst, src)
    else:
        parallel_chunks(len(dst), lambda lo, hi: np.copyto(dst[lo:hi], src[lo:hi]))
    return dst


# Rows per block of ``row_blocks``: about 1 MiB of each array a block touches.
BLOCK_BYTES = 1024 * 1024


def rows_per_block(row_bytes):
    """How many rows of ``row_bytes`` bytes make one block of about ``BLOCK_BYTES`` (at least one)."""
    return max(1, BLOCK_BYTES // max(1, row_bytes))


def row_blocks(n_rows, row_bytes, work, arrays_on_gpu=False):
    """Same as ``[work(0, n_rows)]`` split into row blocks: returns ``[work(lo, hi) for each block]``, in order.

    Why: it lets a layer run a chain of NumPy calls (and reductions, each
    block returning its partial result, which the caller adds up with
    ``sum``) on both cores, as ``parallel_chunks`` does for one call, and a
    temporary made inside ``work`` is only block-sized. Blocks of about
    ``BLOCK_BYTES`` per row-array keep that temporary small and give each
    core many blocks.

    On the GPU (``arrays_on_gpu``) it is one call ``work(0, n_rows)``: the
    whole array is the block, and the GPU runs each call in parallel anyway.
    """
    if arrays_on_gpu:
        return [work(0, n_rows)]
    rows, starts = _block_starts(n_rows, row_bytes)
    results = [None] * len(starts)

    def run(first, last):       # blocks first..last-1, one after the other on one core
        for i in range(first, last):
            results[i] = work(starts[i], min(n_rows, starts[i] + rows))
    parallel_chunks(len(starts), run)
    return results


def row_block_sum(n_rows, row_bytes, work):
    """Returns the same as ``sum(row_blocks(n_rows, row_bytes, work))``, for ``n_rows >= 1``.

    Why: each core adds up the results of its own run of blocks as it goes,
    and the cores' sums are added in order: one partial sum per core, never
    one kept per block (for a convolution's weight gradient a block's
    result is megabytes).
    """
    rows, starts = _block_starts(n_rows, row_bytes)
    sums = {}

    def run(first, last):       # blocks first..last-1, one after the other on one core
        total = None
        for i in range(first, last):
            part = work(starts[i], min(n_rows, starts[i] + rows))
            total = part if total is None else total + part
        sums[first] = total
    parallel_chunks(len(starts), run)
    return functools.reduce(lambda a, b: a + b, (sums[first] for first in sorted(sums)))


def _block_starts(n_rows, row_bytes):
    """(rows per block, the first row of each block): the blocks of ``row_blocks`` and ``row_block_sum``."""
    rows = rows_per_block(row_bytes)
    return rows, list(range(0, n_rows, rows))


# --------------------------------------------------------------------------
# Matrix products
# --------------------------------------------------------------------------
# Below this many multiply-adds a product is not worth splitting over threads.
MATMUL_SPLIT_FLOPS = 4_000_000


def _split_ok(a, b, flops):
    """Whether a product is worth splitting over minicnn's pool (CPU, big, minicnn's pool in charge, not nested)."""
    import numpy as np
    return (_minicnn_splits_products()
            and type(a) is np.ndarray and type(b) is np.ndarray
            and cpu_threads() > 1 and a.shape[-2] >= 2 * cpu_threads()
            and flops >= MATMUL_SPLIT_FLOPS and not _in_pool_thread())


def matmul(a, b):
    """Returns the same as ``a @ b`` (2-D, or stacks of matrices with the rows on axis -2).

    Why: on the CPU a big product is split by rows of ``a`` over minicnn's
    pool, each thread one single-threaded OpenBLAS call on its rows
    (:class:`single_threaded_blas`, see "Threads, by default" above). On
    the GPU, or for a small product, it is exactly ``a @ b``.
    """
    import numpy as np
    if type(a) is not np.ndarray or type(b) is not np.ndarray:
        return a @ b
    M = a.shape[-2]
    with single_threaded_blas():
        if not _split_ok(a, b, M * a.shape[-1] * b.shape[-1]):
            return a @ b
        out = np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (M, b.shape[-1]),
                       dtype=np.result_type(a, b))
        parallel_chunks(M, lambda lo, hi: np.matmul(a[..., lo:hi, :], b, out=out[..., lo:hi, :]))
    return out


def matmul_t(a, b):
    """Returns the same as ``a.swapaxes(-1, -2) @ b`` (``a.T @ b`` for 2-D; a and b share the rows M, on axis -2).

    Why: the weight gradient of a convolution is such a product with M in
    the hundreds of thousands. It is computed as ``(b.T @ a).T``, the
    orientation OpenBLAS runs 20-30% faster for this long reduction; on the
    CPU the M rows are also split over minicnn's pool, each thread
    multiplying its rows (single-threaded OpenBLAS), and the partial
    products are added.
    """
    import numpy as np
    M = a.shape[-2]

    def product(lo, hi):
        return (b[..., lo:hi, :].swapaxes(-1, -2) @ a[..., lo:hi, :]).swapaxes(-1, -2)
    if type(a) is not np.ndarray or type(b) is not np.ndarray:
        return product(0, M)
    with single_threaded_blas():
        if not _split_ok(a, b, M * a.shape[-1] * b.shape[-1]):
            return product(0, M)
        return _sum_over_cores(M, product)


def column_sums(a):
    """Returns the same as ``a.sum(axis=0)`` for a 2-D array ``a``.

    Why: ``ones @ a`` runs in BLAS, while NumPy's ``a.sum(axis=0)`` walks the
    rows one by one (about 10x slower for (131072, 16)); on the CPU the
    rows are also split over the pool (single-threaded OpenBLAS).
    On the GPU it is ``a.sum(axis=0)``.
    """
    import numpy as np
    if type(a) is not np.ndarray or a.dtype.kind not in "fc":   # GPU: a fast kernel already; ints/bools:
        return a.sum(axis=0)                                     # sum widens them, a BLAS product cannot
    M = a.shape[0]

    def partial(lo, hi):
        return np.ones(hi - lo, dtype=a.dtype) @ a[lo:hi]
    with single_threaded_blas():
        if not _split_ok(a, a, M * a.shape[1] * 8):
            return partial(0, M)
        return _sum_over_cores(M, partial)


def _sum_over_cores(M, partial):
    """``partial(0, M)`` for a ``partial(lo, hi)`` that sums over rows lo..hi-1: one run of the rows per core, added in order."""
    k = cpu_threads()
    bounds = [M * i // k for i in range(k + 1)]
    parts = [None] * k

    def work(lo, hi):            # runs lo..hi-1 of the k runs of rows
        for i in range(lo, hi):
            parts[i] = partial(bounds[i], bounds[i + 1])
    parallel_chunks(k, work)
    return functools.reduce(lambda a, b: a + b, parts)



# --------------------------------------------------------------------------
# Per-channel passes over an (M, C) matrix (batch normalization)
# --------------------------------------------------------------------------
# The width, in values, of the wide rows of ``_wide_rows`` and ``positive_part``.
ROW_WIDTH = 8192


def column_mean_var(X):
    """Returns the same as ``(X.mean(axis=0), X.var(axis=0))`` for a 2-D ``X`` (biased variance).

    Why: one pass over X on every core (:func:`row_blocks`), in wide rows
    (:func:`_wide_rows`) whose sums are BLAS products, never a whole (M, C)
    copy. The pass sums d = X - K and d**2 for a shift K close to the mean
    (the mean of the first block), and then

        mean = K + sum(d) / M,    var = (sum(d**2) - sum(d)**2 / M) / M,

    exact in exact arithmetic for any K; with K near the mean, d is small
    and float32 keeps its accuracy (the textbook sum(X**2)/M - mean**2,
    K = 0, loses it all when the mean is 100x the spread).
    """
    import numpy as np
    M = X.shape[0]
    if M == 0:                           # no rows: NumPy's mean and var of nothing (NaN)
        mean = column_sums(X) / M
        return mean, mean.copy()
    (Xw,), tail, k = _wide_rows(X) if type(X) is np.ndarray else ((X[:0],), (X,), 1)
    if len(Xw) == 0:                     # the GPU, or fewer rows than one wide row: the two-pass formula
        shift = X.mean(axis=0)
        d = X - shift
        sum_d, sum_d2 = d.sum(axis=0), (d * d).sum(axis=0)
    else:
        first = rows_per_block(X[:1].nbytes)
        shift = column_sums(X[:first]) / min(first, M)
        minus_shift = np.tile(-shift, k)

        def deviations(lo, hi):          # sums of d and d**2 over wide rows lo..hi-1, d = X - shift
            d = Xw[lo:hi] + minus_shift
            ones = np.ones(hi - lo, dtype=d.dtype)
            sum_d = ones @ d
            d *= d
            return np.stack([sum_d, ones @ d])
        sums = _wide_row_sums(Xw, k, deviations)
        d = tail[0] - shift
        sum_d, sum_d2 = sums[0] + d.sum(axis=0), sums[1] + (d * d).sum(axis=0)
    return shift + sum_d / M, (sum_d2 - sum_d * sum_d / M) / M


def column_dot_centred(G, X, mean):
    """Returns the same as ``(G * (X - mean)).sum(axis=0)`` for 2-D ``G`` and ``X`` of one shape.

    Why: computed block by block on every core in wide rows
    (:func:`_wide_rows`), so ``X - mean`` exists only block by block,
    and summed as a BLAS product per block.
    """
    import numpy as np
    (Gw, Xw), tail, k = _wide_rows(G, X) if type(G) is np.ndarray else ((G[:0], X[:0]), (G, X), 1)
    if len(Gw) == 0:                     # the GPU, or fewer rows than one wide row: the formula
        return (G * (X - mean)).sum(axis=0)
    dtype = np.result_type(G, X, mean)
    minus_mean = np.tile(-np.asarray(mean, dtype=dtype), k)

    def part(lo, hi):
        d = np.add(Xw[lo:hi], minus_mean, dtype=dtype)
        d *= Gw[lo:hi]
        return np.ones(hi - lo, dtype=dtype) @ d
    return _wide_row_sums(Gw, k, part) + (tail[0] * (tail[1] - mean)).sum(axis=0)


def affine_rows(A, a, B=None, b=None, c=None):
    """Returns the same as ``A * a + B * b + c`` (A, B of shape (M, C); a, b, c of shape (C,); B/b and c optional).

    Why: one output array, written block by block on every core in wide
    rows (:func:`_wide_rows`), with at most one block-sized temporary
    (``B * b``), instead of a whole (M, C) array for every intermediate.
    """
    import numpy as np
    operands = [A, a] + ([] if B is None else [B, b]) + ([] if c is None else [c])
    dtype = np.result_type(*operands)
    on_gpu = type(A) is not np.ndarray
    out = (_module_of(A) if on_gpu else np).empty(A.shape, dtype=dtype)

    def formula(o, A, a, B, b, c):       # o = A * a + B * b + c, written into o
        o = (_module_of(A) if on_gpu else np).multiply(A, a, out=o)
        if B is not None:
            o += B * b
        if c is not None:
            o += c
    if on_gpu:
        formula(out, A, a, B, b, c)
        return out
    wide, tail, k = _wide_rows(out, A, A if B is None else B)
    a_w, b_w, c_w = (None if v is None else np.tile(np.broadcast_to(np.asarray(v, dtype=dtype), A.shape[1:]), k)
                     for v in (a, b, c))
    formula(tail[0], tail[1], a, None if B is None else tail[2], b, c)
    row_blocks(len(wide[0]), (2 if B is None else 4) * wide[0][:1].nbytes,   # 1 MiB in all: A, out (B, B * b)
               lambda lo, hi: formula(wide[0][lo:hi], wide[1][lo:hi], a_w, None if B is None else wide[2][lo:hi],
                                      b_w, c_w))
    return out


def _wide_rows(*arrays):
    """``(wide, tail, k)`` for (M, C) CPU arrays of one shape: each as (M // k, k*C) rows, and its last M % k rows.

    ``wide[i]`` is ``arrays[i][:M - M % k]`` with every k rows joined into
    one row of k*C values (a view when the array is C-contiguous, else a
    copy), and ``tail[i]`` is ``arrays[i][M - M % k:]``; k = ``ROW_WIDTH //
    C`` (at least 1). A (C,) vector tiled k times (``np.tile(v, k)``) meets
    a wide row as v meets each of its k rows.

    Why: NumPy applies a (C,) vector to (M, C) rows in an inner loop only
    C values long, which on a CPU runs about 3x slower than over rows of
    thousands of values (0.14 against 0.05 ms for 8192 x 32 float32).
    """
    M, C = arrays[0].shape
    k = max(1, ROW_WIDTH // max(1, C))
    m = M - M % k
    return tuple(a[:m].reshape(m // k, k * C) for a in arrays), tuple(a[m:] for a in arrays), k


def _wide_row_sums(W, k, part):
    """The sum of ``part(lo, hi)`` over the wide rows of ``W`` (``_wide_rows``), folded back to per-channel sums.

    ``part(lo, hi)`` sums wide rows lo..hi-1 into (..., k*C); the result is
    that total as (..., C), column c adding up the k copies of channel c.
    Blocks of about ``BLOCK_BYTES`` of W, on every core
    (:func:`row_block_sum`), OpenBLAS single-threaded meanwhile. W has at
    least one row.
    """
    with single_threaded_blas():
        total = row_block_sum(len(W), W[:1].nbytes, part)
    return total.reshape(total.shape[:-1] + (k, total.shape[-1] // k)).sum(axis=-2)


def _module_of(a):
    """The array module of a GPU array without importing it here: ``a.__array_namespace__`` or cupy's own."""
    return sys.modules[type(a).__module__.split(".")[0]]



# --------------------------------------------------------------------------
# Elementwise
# --------------------------------------------------------------------------
def positive_part(x):
    """Returns the same as ``np.maximum(x, 0)`` (ReLU's forward pass), any shape and memory layout.

    Why: NumPy's ``maximum`` against a scalar runs about 1.7x slower than
    against an array row (4.7 against 2.5-3.0 ms for 4M float32 on this
    CPU), so the values, in their memory order, are viewed as rows of
    ``ROW_WIDTH`` and compared with a row of zeros, each core its own rows
    (:func:`parallel_chunks`). A NaN stays NaN, as in ``np.maximum``. On the
    GPU, for an array whose values are not one dense run, a small one, or
    one that is not of ints or floats, it is ``maximum(x, 0)``.
    """
    import numpy as np
    if type(x) is not np.ndarray or x.dtype.kind not in "iuf" or x.size < 4 * ROW_WIDTH:
        return (np if type(x) is np.ndarray else _module_of(x)).maximum(x, 0)
    out = np.empty_like(x)                       # the same memory layout as x (order "K")
    flat_x, flat_out = _memory_run(x), _memory_run(out)
    if flat_x is None or flat_out is None:
        return np.maximum(x, 0, out=out)
    n_rows = x.size // ROW_WIDTH
    rows_x, rows_out = (a[:n_rows * ROW_WIDTH].reshape(n_rows, ROW_WIDTH) for a in (flat_x, flat_out))
    zeros = np.zeros(ROW_WIDTH, dtype=x.dtype)
    parallel_chunks(n_rows, lambda lo, hi: np.maximum(rows_x[lo:hi], zeros, out=rows_out[lo:hi]))
    np.maximum(flat_x[n_rows * ROW_WIDTH:], 0, out=flat_out[n_rows * ROW_WIDTH:])
    return out


def _memory_run(a):
    """A 1-D view of the values of ``a`` in memory order when they fill one dense run of memory, else None."""
    order = sorted(range(a.ndim), key=lambda axis: -abs(a.strides[axis]))
    view = a.transpose(order)
    return view.reshape(-1) if view.flags.c_contiguous else None


# --------------------------------------------------------------------------
# Masked assignment
# --------------------------------------------------------------------------
def assign_increasing(a, k, mask):
    """Same as ``a[mask] = k`` (in place), when ``a >= 0`` everywhere and ``a <= k`` where ``mask`` is True.

    Why: a masked assignment (or ``np.copyto(a, k, where=mask)``) is about
    50x slower than two plain passes; under that condition
    ``max(a, k * mask)`` sets exactly the masked entries to k and leaves the
    others. Max pooling's scan over a window's taps, whose offsets grow
    along the scan, uses it.
    """
    import numpy as np
    xp = np if type(a) is np.ndarray else _module_of(a)
    xp.maximum(a, mask * a.dtype.type(k), out=a)

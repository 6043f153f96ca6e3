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
    "column_mean_var", "column_dot_centred", "affine_rows", "assign_increasing",
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


def _in_pool_thread():
    return threading.current_thread().name.startswith("minicnn-cpu")


def parallel_chunks(n, work, arrays_on_gpu=False):
    """Same as ``work(0, n)``, when ``work(lo, hi)`` writes only rows [lo, hi): runs one chunk per core, in threads.

    Why: NumPy runs a copy or an elementwise op on one core, but it releases
    the GIL while doing so, so two threads writing disjoint halves of an
    array keep two cores busy (a 75 MB im2col copy: 9.0 ms -> 6.3 ms on two
    cores). Correct as long as the chunks write disjoint memory, which is
    the caller's promise. On the GPU (``arrays_on_gpu``), for small ``n``,
    or when called from inside another chunk's work (the pool's threads
    would wait on themselves) it is a plain call ``work(0, n)``.
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
    futures = [_POOL.submit(work, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
    errors = [f.exception() for f in futures]      # waits for every chunk, even after one failed
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
def column_mean_var(X):
    """Returns the same as ``(X.mean(axis=0), X.var(axis=0))`` for a 2-D ``X`` (biased variance).

    Why: ``X - mean`` is formed one block of rows at a time on every core
    (:func:`row_blocks`), never as a whole (M, C) copy, and float32 keeps
    its accuracy through the corrected two-pass formula: with d = X - mean,
    sum(d) is zero in exact arithmetic and in float32 the rounding error of
    the mean, which is added back to the mean and removed from the variance.
    """
    import numpy as np
    M, C = X.shape
    on_gpu = type(X) is not np.ndarray
    mean = column_sums(X) / M

    def deviations(lo, hi):              # sums of d and d**2, d = X - mean, over rows lo..hi-1
        d = X[lo:hi] - mean
        return (d.sum(axis=0), (d * d).sum(axis=0)) if on_gpu else (
            np.einsum("mc->c", d), np.einsum("mc,mc->c", d, d))
    parts = row_blocks(M, X[:1].nbytes, deviations, arrays_on_gpu=on_gpu)
    if not parts:                        # no rows: NumPy's mean and var of nothing (NaN)
        return mean, mean.copy()
    sum_d = functools.reduce(lambda a, b: a + b, (p[0] for p in parts))
    sum_d2 = functools.reduce(lambda a, b: a + b, (p[1] for p in parts))
    return mean + sum_d / M, (sum_d2 - sum_d * sum_d / M) / M


def column_dot_centred(G, X, mean):
    """Returns the same as ``(G * (X - mean)).sum(axis=0)`` for 2-D ``G`` and ``X`` of one shape.

    Why: computed block by block on every core, so ``X - mean`` exists only
    block by block, and summed as a dot product per column.
    """
    import numpy as np
    on_gpu = type(G) is not np.ndarray

    def part(lo, hi):
        if on_gpu:
            return (G[lo:hi] * (X[lo:hi] - mean)).sum(axis=0)
        return np.einsum("mc,mc->c", G[lo:hi], X[lo:hi] - mean)
    parts = row_blocks(G.shape[0], G[:1].nbytes, part, arrays_on_gpu=on_gpu)
    if not parts:                        # no rows: a sum of nothing
        return part(0, 0)
    return functools.reduce(lambda a, b: a + b, parts)


def affine_rows(A, a, B=None, b=None, c=None):
    """Returns the same as ``A * a + B * b + c`` (A, B of shape (M, C); a, b, c of shape (C,); B/b and c optional).

    Why: one output array, written block by block on every core, with at
    most one block-sized temporary (``B * b``), instead of a whole (M, C)
    array for every intermediate.
    """
    import numpy as np
    on_gpu = type(A) is not np.ndarray
    xp = np if not on_gpu else _module_of(A)
    operands = [A, a] + ([] if B is None else [B, b]) + ([] if c is None else [c])
    out = xp.empty(A.shape, dtype=np.result_type(*operands))

    def block(lo, hi):
        o = xp.multiply(A[lo:hi], a, out=out[lo:hi])
        if B is not None:
            o += B[lo:hi] * b
        if c is not None:
            o += c
    row_blocks(A.shape[0], A[:1].nbytes, block, arrays_on_gpu=on_gpu)
    return out


def _module_of(a):
    """The array module of a GPU array without importing it here: ``a.__array_namespace__`` or cupy's own."""
    return sys.modules[type(a).__module__.split(".")[0]]



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

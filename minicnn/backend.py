"""Backend dispatch: which array module (NumPy or CuPy) holds the data.

Every op in minicnn is written once against ``xp``, the array module of its
inputs::

    xp = get_array_module(x)      # numpy for CPU arrays, cupy for GPU arrays
    y = xp.maximum(x, 0)

This module is the only place that imports CuPy, and it does so lazily: the
first time something asks about the GPU. minicnn imports and runs with no
CuPy installed.

Devices are named ``'cpu'`` and ``'gpu'``. The default floating dtype is
float32 (``default_dtype()``); gradient checks use float64 explicitly.
"""
import functools
import os
import sys
import threading

# Before NumPy loads OpenBLAS: OpenBLAS keeps its idle threads spinning for
# 2**28 cycles (about 0.1 s) after every matrix product, so on a 2-core CPU
# the memory-bound work between two products (im2col copies, col2im adds,
# batchnorm blocks, which minicnn splits over the cores with
# ``parallel_chunks``) found its second core taken by a thread waiting for
# work. 2**4 cycles, the smallest value OpenBLAS accepts, sends idle threads
# to sleep at once; waking them for the next product costs microseconds.
# simple_cnn step: 13% faster (6 paired runs, 164 -> 143 ms median).
# OpenBLAS reads it once, when NumPy is first imported, so it applies when
# minicnn is imported before NumPy (as the ``minicnn`` command does);
# otherwise set OPENBLAS_THREAD_TIMEOUT=4 in the shell. A value already
# set in the environment is kept.
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402 (after the setting above)

__all__ = [
    "get_array_module", "is_gpu_available", "cupy_or_none", "device_of",
    "to_device", "as_array", "default_dtype", "set_default_dtype", "check_device", "scatter_add",
    "parallel_chunks", "row_blocks", "cpu_threads", "seed_global",
]

_DEFAULT_DTYPE = np.dtype(np.float32)
_cupy = None          # the cupy module once imported
_cupy_tried = False   # whether we already tried to import it


def cupy_or_none():
    """Return the ``cupy`` module if it imports and sees a GPU, else None.

    The import is attempted once per process and memoised.
    """
    global _cupy, _cupy_tried
    if not _cupy_tried:
        _cupy_tried = True
        try:
            import cupy  # noqa: the one place minicnn imports cupy
            if cupy.cuda.runtime.getDeviceCount() > 0:
                _cupy = cupy
        except Exception:  # ImportError, or CUDA driver missing / no device
            _cupy = None
    return _cupy


def is_gpu_available():
    """True when CuPy is installed and at least one CUDA device is visible."""
    return cupy_or_none() is not None


def _is_tensor(x):
    # Imported lazily to keep backend at the top of the layer stack.
    from .autograd import Tensor
    return isinstance(x, Tensor)


def _is_cupy_array(a):
    # Checking the type's module avoids importing cupy just to ask.
    return type(a).__module__.startswith("cupy")


def get_array_module(*xs):
    """Return ``cupy`` if any argument lives on a GPU, else ``numpy``.

    Accepts raw arrays, Tensors, scalars and None (ignored).
    """
    for x in xs:
        a = x.data if _is_tensor(x) else x
        if _is_cupy_array(a):
            return cupy_or_none() or _import_cupy_strict()
    return np


def _import_cupy_strict():
    import cupy
    return cupy


def device_of(x):
    """``'gpu'`` for CuPy arrays (or Tensors holding them), else ``'cpu'``."""
    a = x.data if _is_tensor(x) else x
    return "gpu" if _is_cupy_array(a) else "cpu"


def _check_device_name(device):
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")


def to_device(array, device):
    """Copy a raw array to ``device`` (``'cpu'`` or ``'gpu'``); no-op if already there."""
    _check_device_name(device)
    if device == "cpu":
        if _is_cupy_array(array):
            return array.get()
        return np.asarray(array)
    cp = cupy_or_none()
    if cp is None:
        raise RuntimeError(
            "device='gpu' requested but no GPU is available: install CuPy "
            "(pip install 'minicnn[gpu]') on a machine with a CUDA GPU, or use device='cpu'")
    return cp.asarray(array)


def as_array(data, dtype=None, device=None):
    """Turn Python numbers, lists, NumPy/CuPy arrays into a raw array.

    Python floats and lists of floats become the default dtype (float32);
    an existing array keeps its dtype unless ``dtype`` is given; integer
    data stays integer (class labels).
    """
    if _is_tensor(data):
        data = data.data
    if isinstance(data, np.ndarray) or _is_cupy_array(data):
        arr = data if dtype is None else data.astype(dtype, copy=False)
    elif isinstance(data, np.generic):
        arr = np.asarray(data, dtype=dtype)
    else:
        arr = np.asarray(data)
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        elif arr.dtype.kind == "f":
            arr = arr.astype(_DEFAULT_DTYPE, copy=False)
        elif arr.dtype.kind not in "biuf":
            raise TypeError(f"tensor(): cannot make a tensor from data of dtype {arr.dtype}")
    if device is not None:
        arr = to_device(arr, device)
    return arr


def keep_freed_memory():
    """Ask glibc to keep freed memory for reuse instead of handing it back to the OS.

    What it saves: by default glibc serves every allocation above a few MiB
    with its own ``mmap`` and returns it with ``munmap`` on free. A training
    step allocates and frees the same large activations (im2col buffers of
    ~75 MB at batch 128) every step, so each one comes back as fresh pages,
    and touching fresh pages page-faults: filling a new 75 MB array took
    16 ms against 4 ms for reused memory, 15-20% of a whole step.

    Why it is correct: ``mallopt`` only changes where freed memory goes
    (back onto glibc's heap, reused by the next allocation of a similar
    size); every array is still allocated and initialised exactly as before.
    The price is that the process keeps its peak heap until it exits, which
    is what a training run does anyway.

    Called once when minicnn is imported; ``MINICNN_MALLOC_TUNING=0`` turns it
    off. A no-op where the C library is not glibc. Returns True if applied.
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


def default_dtype():
    """The floating dtype used for new parameters and Python floats (float32)."""
    return _DEFAULT_DTYPE


def set_default_dtype(dtype):
    """Change the default floating dtype (e.g. ``np.float64`` for a gradient-check session)."""
    global _DEFAULT_DTYPE
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"default dtype must be floating, got {dtype}")
    _DEFAULT_DTYPE = dtype


def seed_global(seed):
    """Seed the global generators ops draw from when given none: NumPy's and, if in use, CuPy's."""
    np.random.seed(seed)
    if _cupy is not None:
        _cupy.random.seed(seed)


_POOL = None


@functools.lru_cache(maxsize=None)
def cpu_threads():
    """How many threads ``parallel_chunks`` splits CPU work into (the usable cores; asked once)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def parallel_chunks(n, work, arrays_on_gpu=False):
    """Run ``work(lo, hi)`` over [0, n) split into one chunk per core, in threads.

    Why: NumPy runs a copy or an elementwise op on one core, but it releases
    the GIL while doing so, so two threads writing disjoint halves of an
    array keep two cores busy (a 75 MB im2col copy: 9.0 ms -> 6.3 ms on two
    cores). Correct as long as the chunks write disjoint memory, which is
    the caller's promise. On the GPU (``arrays_on_gpu``), for small ``n``,
    or when called from inside another chunk's work (the pool's threads
    would wait on themselves) it is a plain call ``work(0, n)``.
    """
    global _POOL
    k = min(cpu_threads(), n)
    if arrays_on_gpu or k < 2 or threading.current_thread().name.startswith("minicnn-cpu"):
        work(0, n)
        return
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor
        _POOL = ThreadPoolExecutor(max_workers=cpu_threads(), thread_name_prefix="minicnn-cpu")
    bounds = [n * i // k for i in range(k + 1)]
    futures = [_POOL.submit(work, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
    errors = [f.exception() for f in futures]      # waits for every chunk, even after one failed
    for e in errors:
        if e is not None:
            raise e


# Rows per block of ``row_blocks``: about 1 MiB of each array a block touches.
BLOCK_BYTES = 1024 * 1024


def row_blocks(n_rows, row_bytes, work, arrays_on_gpu=False):
    """Call ``work(lo, hi)`` on consecutive blocks of rows covering [0, n_rows); return the results in order.

    Why: it lets a layer run a chain of NumPy calls (and reductions, each
    block returning its partial result, which the caller adds up with
    ``sum``) on both cores, as ``parallel_chunks`` does for one call, and a
    temporary made inside ``work`` is only block-sized: batchnorm forms
    X - mu this way without ever holding an activation-sized copy. Blocks
    of about ``BLOCK_BYTES`` per row-array keep that temporary small and
    give each core many blocks; the block size itself made no measurable
    difference between 256 KiB and 4 MiB on the development machine.

    On the GPU (``arrays_on_gpu``) it is one call ``work(0, n_rows)``: the
    whole array is the block, and the GPU runs each call in parallel anyway.
    """
    if arrays_on_gpu:
        return [work(0, n_rows)]
    rows = max(1, BLOCK_BYTES // max(1, row_bytes))
    starts = list(range(0, n_rows, rows))
    results = [None] * len(starts)

    def run(first, last):       # blocks first..last-1, one after the other on one core
        for i in range(first, last):
            results[i] = work(starts[i], min(n_rows, starts[i] + rows))
    parallel_chunks(len(starts), run)
    return results


def scatter_add(target, index, values):
    """``target[index] += values`` where ``index`` may repeat an element (each repeat adds).

    NumPy spells it ``np.add.at``; CuPy's equivalent is ``cupyx.scatter_add``.
    """
    if _is_cupy_array(target):
        import cupyx  # the GPU half of the backend, next to the lazy cupy import
        cupyx.scatter_add(target, index, values)
    else:
        np.add.at(target, index, values)


def check_device(op_name, arrays):
    """Raise if ``arrays`` mix CPU and GPU arrays, naming the op and the inputs.

    The common case (all NumPy) costs one type check per input.
    """
    if all(type(a) is np.ndarray for a in arrays):
        return
    devices = ["gpu" if _is_cupy_array(a) else "cpu" for a in arrays]
    if len(set(devices)) > 1:
        desc = ", ".join(f"input {i} on {d}" for i, d in enumerate(devices))
        raise RuntimeError(
            f"{op_name}: all inputs must be on the same device, got {desc}; "
            f"move them with .to('cpu') or .to('gpu')")

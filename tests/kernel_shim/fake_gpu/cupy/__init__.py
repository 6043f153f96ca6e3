"""A stand-in for CuPy on a CPU, to run minicnn's GPU code paths where there is no GPU.

Put ``tests/kernel_shim/fake_gpu`` first on ``PYTHONPATH`` and ``import cupy``
gives this module: its arrays are NumPy arrays of a subclass named
``cupy.ndarray``, so ``minicnn.backend`` treats them as GPU arrays and every
GPU branch runs (``Tensor.to('gpu')``, the DataLoader's device moves, the ops'
kernel dispatch, the launchers of ``minicnn.cuda``), with the raw kernels of
``kernels/*.cu`` compiled as C++ by ``tests/kernel_shim``. Like CuPy, it
refuses a ufunc or NumPy function that mixes its arrays with NumPy arrays
(a CPU array leaking into GPU code), but it cannot refuse everything CuPy
refuses (``numpy.asarray`` of a GPU array works here), and its arithmetic is
NumPy's. So a pass here says the GPU paths are wired right; only a real GPU
says CuPy runs them (``bench/gpu_checks.sh``).

    PYTHONPATH=tests/kernel_shim/fake_gpu python -m pytest -m "gpu and not slow" tests
"""
import os
import sys
import threading

import numpy as _np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))  # tests/
import kernel_shim as _shim  # noqa: E402

__version__ = "0.0-fake-gpu"
FAKE = True


class _State(threading.local):
    depth = 0                    # how deep inside a NumPy call on fake GPU arrays, per thread


_STATE = _State()


def _is_plain(a):
    return type(a) is _np.ndarray and a.ndim > 0


def _any_plain(obj):
    if isinstance(obj, (list, tuple)):
        return any(_any_plain(o) for o in obj)
    return _is_plain(obj)


def _to_gpu(r):
    """Results of an op on GPU arrays: arrays, and NumPy scalars (CuPy gives 0-d arrays), on the 'GPU'."""
    if isinstance(r, _np.generic):
        return _np.asarray(r).view(ndarray)
    if isinstance(r, _np.ndarray) and not isinstance(r, ndarray):
        return r.view(ndarray)
    if isinstance(r, tuple):
        return tuple(_to_gpu(x) for x in r)
    if isinstance(r, list):
        return [_to_gpu(x) for x in r]
    return r


def _base(a):
    return a.view(_np.ndarray) if isinstance(a, ndarray) else a


class ndarray(_np.ndarray):
    """A NumPy array that minicnn takes for a GPU array."""

    # The mixing checks apply to the call minicnn makes, not to NumPy's calls inside it.
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out", ())
        if _STATE.depth == 0 and (_any_plain(inputs) or _any_plain(out)):
            raise TypeError(f"fake cupy: {ufunc.__name__} mixes a GPU array with a NumPy array "
                            "(CuPy raises here: move the NumPy array to the GPU first)")
        inputs = tuple(_base(i) for i in inputs)
        if out:
            kwargs["out"] = tuple(_base(o) for o in out)
        _STATE.depth += 1
        try:
            return _to_gpu(getattr(ufunc, method)(*inputs, **kwargs))
        finally:
            _STATE.depth -= 1

    def __array_function__(self, func, types, args, kwargs):
        if _STATE.depth == 0 and (_any_plain(args) or _any_plain(tuple(kwargs.values()))):
            raise TypeError(f"fake cupy: numpy.{func.__name__} mixes a GPU array with a NumPy array "
                            "(CuPy raises here)")
        _STATE.depth += 1
        try:
            return _to_gpu(super().__array_function__(func, (_np.ndarray,), args, kwargs))
        finally:
            _STATE.depth -= 1

    def get(self, stream=None):
        """The data as a NumPy array (CuPy's device-to-host copy)."""
        return _np.array(self.view(_np.ndarray))


ndarray.__module__ = "cupy"


def _wrap(f):
    def g(*args, **kwargs):
        return _to_gpu(f(*args, **kwargs))
    g.__name__ = getattr(f, "__name__", "f")
    return g


def __getattr__(name):
    """Any other name is NumPy's, its results moved to the 'GPU' (``cupy.zeros``, ``cupy.float32``...)."""
    obj = getattr(_np, name)
    return obj if isinstance(obj, type) or not callable(obj) else _wrap(obj)


def asarray(a, dtype=None, order=None, **unused):
    """To the 'GPU' (no copy when it is there already with that dtype)."""
    if isinstance(a, ndarray) and (dtype is None or a.dtype == _np.dtype(dtype)):
        return a
    return _np.array(_base(a), dtype=dtype, order=order or "K").view(ndarray)


def asnumpy(a, stream=None, **unused):
    return _np.array(_base(a))


RawModule = _shim.RawModule


class _Namespace:
    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        obj = getattr(self._module, name)
        return _wrap(obj) if callable(obj) and not isinstance(obj, type) else obj


random = _Namespace(_np.random)


class lib:
    class stride_tricks:
        @staticmethod
        def as_strided(x, shape=None, strides=None, **kwargs):
            return _np.lib.stride_tricks.as_strided(_base(x), shape, strides, **kwargs).view(ndarray)


class _MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


_POOL = _MemoryPool()


def get_default_memory_pool():
    return _POOL


class cuda:
    class runtime:
        @staticmethod
        def getDeviceCount():
            return 1

        @staticmethod
        def getDeviceProperties(device):
            return {"name": b"fake GPU (NumPy on the CPU)"}

        @staticmethod
        def runtimeGetVersion():
            return 0

    class Device:
        mem_info = (16 * 2**30, 16 * 2**30)

        def __init__(self, device=0):
            self.id = device

        def synchronize(self):
            pass

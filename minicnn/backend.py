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
import numpy as np

__all__ = [
    "get_array_module", "is_gpu_available", "cupy_or_none", "device_of",
    "to_device", "as_array", "default_dtype", "set_default_dtype", "check_device", "scatter_add",
    "seed_global", "is_tensor", "raw",
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


def is_tensor(x):
    """True for a ``minicnn.Tensor``, recognised by its class attribute ``is_minicnn_tensor``.

    Duck typing, so that backend, at the top of the layer order, never
    imports ``autograd`` (the layer below it) to ask.
    """
    return getattr(type(x), "is_minicnn_tensor", False)


def raw(x):
    """The raw array of a Tensor (``x.data``); anything else unchanged."""
    return x.data if getattr(type(x), "is_minicnn_tensor", False) else x


def _is_cupy_array(a):
    # Checking the type's module avoids importing cupy just to ask.
    return type(a).__module__.startswith("cupy")


def get_array_module(*xs):
    """Return ``cupy`` if any argument lives on a GPU, else ``numpy``.

    Accepts raw arrays, Tensors, scalars and None (ignored).
    """
    for x in xs:
        a = raw(x)
        if _is_cupy_array(a):
            return cupy_or_none() or _import_cupy_strict()
    return np


def _import_cupy_strict():
    import cupy
    return cupy


def device_of(x):
    """``'gpu'`` for CuPy arrays (or Tensors holding them), else ``'cpu'``."""
    a = raw(x)
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
    data = raw(data)
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
    """Raise if ``arrays`` mix CPU and GPU arrays, naming the op and the inputs (None entries: absent inputs).

    The common case (all NumPy) costs one type check per input.
    """
    if all(type(a) is np.ndarray or a is None for a in arrays):
        return
    devices = ["gpu" if _is_cupy_array(a) else "cpu" for a in arrays if a is not None]
    if len(set(devices)) > 1:
        desc = ", ".join(f"input {i} on {d}" for i, d in enumerate(devices))
        raise RuntimeError(
            f"{op_name}: all inputs must be on the same device, got {desc}; "
            f"move them with .to('cpu') or .to('gpu')")

"""The raw CUDA kernels of ``kernels/*.cu`` and their Python launchers.

On the GPU, convolution and pooling move their data with hand-written
kernels instead of the strided-view tricks the NumPy path uses. Each kernel
has a NumPy twin that it must match element by element:

=============================  ==========================  ====================================
launcher (this module)         kernel (``kernels/``)        NumPy twin
=============================  ==========================  ====================================
``im2col_gpu``                 ``im2col.cu: im2col_*``      ``functional.conv.im2col``
``col2im_gpu``                 ``im2col.cu: col2im_*``      ``functional.conv.col2im``
``max_pool2d_forward_gpu``     ``pooling.cu``               ``functional.pooling.max_pool2d``
``max_pool2d_backward_gpu``    ``pooling.cu``               its backward
``avg_pool2d_forward_gpu``     ``pooling.cu``               ``functional.pooling.avg_pool2d``
``avg_pool2d_backward_gpu``    ``pooling.cu``               its backward
=============================  ==========================  ====================================

How a launch works, in three hops:

1. ``load_module('im2col.cu')`` reads the source and hands it to
   ``cupy.RawModule`` with the *name expressions* of its kernels, one per
   element type: ``im2col<float>``, ``im2col<double>``, ``col2im<float>``...
   Each kernel is a C++ template written once; NVRTC instantiates it for
   every name expression when it compiles the file (on first use, then
   cached by CuPy on disk). This happens once per process
   (``functools.lru_cache``).
2. ``get_kernel('im2col', dtype)`` returns the instance for the dtype:
   ``module.get_function('im2col<float>')`` (or ``<double>``).
3. ``_launch`` starts ``ceil(total / 256)`` blocks of 256 threads (capped:
   every kernel has a grid-stride loop, so fewer blocks still cover all
   elements) and passes the arrays, then the integer geometry in exactly the
   order of the C signature. ``KERNELS`` below spells out that order once;
   a CPU test checks it against the ``.cu`` sources.

The tests also compile the same ``.cu`` sources as C++ for the CPU (a small
shim in ``tests/kernel_shim/`` stands in for CUDA) and run these launchers
on them, so every index computation is checked on every CI run; what only a
GPU run checks is CuPy itself (NVRTC, the name expressions, the launch).

CuPy is reached only through ``minicnn.backend.cupy_or_none()``; this module
imports without CuPy, and the plain helpers (argument normalisation, output
sizes, grid sizes, source lookup) work and are tested on any machine.
"""
import functools
import os
from typing import NamedTuple

import numpy as np

from . import backend
from .reference import output_size
from .utils import pair

__all__ = [
    "kernel_source_dir", "kernel_files", "load_module", "get_kernel", "KERNELS", "C_TYPES",
    "name_expression", "name_expressions",
    "pair", "pool_geometry", "conv_geometry", "launch_config",
    "im2col_gpu", "col2im_gpu",
    "max_pool2d_forward_gpu", "max_pool2d_backward_gpu",
    "avg_pool2d_forward_gpu", "avg_pool2d_backward_gpu",
]

BLOCK_SIZE = 256      # threads per block for every launch
MAX_BLOCKS = 65536    # grid cap; the grid-stride loops cover the rest
_INT32_MAX = 2**31 - 1

# dtype -> the C type a kernel template is instantiated with ("im2col<float>")
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


# ---------------------------------------------------------------------------
# Finding and loading the sources
# ---------------------------------------------------------------------------

def _candidate_dirs():
    here = os.path.dirname(os.path.abspath(__file__))
    return [
        os.path.join(here, "kernels"),                   # installed wheel: minicnn/kernels/
        os.path.join(os.path.dirname(here), "kernels"),  # editable checkout: <repo>/kernels/
    ]


def kernel_source_dir():
    """The folder holding the ``.cu`` sources.

    An installed package carries them as package data in ``minicnn/kernels/``
    (``setup.py`` copies them there); an editable checkout has them in the
    repository's top-level ``kernels/``. The first folder with ``.cu`` files wins.
    """
    candidates = _candidate_dirs()
    for folder in candidates:
        if os.path.isdir(folder) and any(n.endswith(".cu") for n in os.listdir(folder)):
            return folder
    raise FileNotFoundError(
        "minicnn.cuda: no CUDA kernel sources (*.cu) found; looked in "
        + " and ".join(repr(c) for c in candidates)
        + ". Reinstall minicnn (pip install .) or run from a full checkout.")


def kernel_files():
    """Full paths of every ``.cu`` source, sorted by name."""
    folder = kernel_source_dir()
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(".cu")]


def _require_cupy(what):
    cp = backend.cupy_or_none()
    if cp is None:
        raise RuntimeError(
            f"{what}: the CUDA kernels need CuPy and a CUDA GPU, and none is available; "
            "install minicnn[gpu] on a machine with a GPU, or use the CPU (NumPy) ops")
    return cp


def name_expression(name, dtype):
    """The C++ name of kernel ``name`` instantiated for ``dtype``: ``'im2col<float>'``."""
    return f"{name}<{C_TYPES[np.dtype(dtype)]}>"


def name_expressions(filename):
    """Every kernel instance that ``kernels/<filename>`` is compiled with."""
    return [name_expression(name, dtype) for name, spec in KERNELS.items() if spec.filename == filename
            for dtype in C_TYPES]


@functools.lru_cache(maxsize=None)
def load_module(filename):
    """``cupy.RawModule`` for ``kernels/<filename>``, built once per process,
    with its kernel templates instantiated for float and double."""
    cp = _require_cupy(f"load_module({filename!r})")
    path = os.path.join(kernel_source_dir(), filename)
    with open(path, encoding="utf-8") as f:
        source = f.read()
    return cp.RawModule(code=source, name_expressions=name_expressions(filename))


class KernelSpec(NamedTuple):
    """Where a kernel lives and the names of its parameters, in C order."""
    filename: str
    arrays: tuple      # pointer parameters, first
    ints: tuple        # then the int parameters


_CONV_INTS = ("N", "H", "W", "C", "KH", "KW", "SH", "SW", "PH", "PW", "DH", "DW", "OH", "OW")
_MAX_INTS = ("N", "C", "H", "W", "KH", "KW", "SH", "SW", "PH", "PW", "DH", "DW", "OH", "OW")
_AVG_INTS = ("N", "C", "H", "W", "KH", "KW", "SH", "SW", "PH", "PW", "count_include_pad", "OH", "OW")

#: Every kernel template and its C signature (T is the element type;
#: ``indices`` is ``long long*``, every other array ``T*``).
KERNELS = {
    "im2col": KernelSpec("im2col.cu", ("x", "cols"), _CONV_INTS),
    "col2im": KernelSpec("im2col.cu", ("cols", "dx"), _CONV_INTS),
    "max_pool2d_forward": KernelSpec("pooling.cu", ("x", "y", "indices"), _MAX_INTS),
    "max_pool2d_backward": KernelSpec("pooling.cu", ("grad_out", "indices", "dx"), _MAX_INTS),
    "avg_pool2d_forward": KernelSpec("pooling.cu", ("x", "y"), _AVG_INTS),
    "avg_pool2d_backward": KernelSpec("pooling.cu", ("grad_out", "dx"), _AVG_INTS),
}


def _float_dtype(fn, argname, dtype):
    dtype = np.dtype(dtype)
    if dtype not in C_TYPES:
        raise TypeError(f"{fn}: {argname} must be float32 or float64, got {dtype}")
    return dtype


@functools.lru_cache(maxsize=None)
def _kernel_cached(name, dtype):
    return load_module(KERNELS[name].filename).get_function(name_expression(name, dtype))


def get_kernel(name, dtype):
    """The compiled kernel ``<name><float>`` or ``<name><double>`` for ``dtype``."""
    if name not in KERNELS:
        raise ValueError(f"get_kernel: unknown kernel {name!r}; known: {sorted(KERNELS)}")
    return _kernel_cached(name, _float_dtype("get_kernel", "dtype", dtype))


# ---------------------------------------------------------------------------
# Plain helpers: argument handling, output sizes, grid sizes (no GPU needed)
# ---------------------------------------------------------------------------

class Geometry(NamedTuple):
    """Sizes of one 2-D sliding-window op (conv or pooling)."""
    N: int
    C: int
    H: int
    W: int
    KH: int
    KW: int
    SH: int
    SW: int
    PH: int
    PW: int
    DH: int
    DW: int
    OH: int
    OW: int


def conv_geometry(fn, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """Normalise the arguments and compute the output size (``reference.output_size``):

    ``OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1`` (likewise OW).
    Raises ValueError when the (dilated) kernel is larger than the padded input.
    """
    if len(tuple(x_shape)) != 4:
        raise ValueError(f"{fn}: input must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    N, C, H, W = (int(s) for s in x_shape)
    KH, KW = pair(kernel_size, "kernel_size", fn, 1)
    SH, SW = pair(stride, "stride", fn, 1)
    PH, PW = pair(padding, "padding", fn, 0)
    DH, DW = pair(dilation, "dilation", fn, 1)
    OH, OW = output_size(H, KH, SH, PH, DH), output_size(W, KW, SW, PW, DW)
    if OH <= 0 or OW <= 0:
        raise ValueError(
            f"{fn}: output size would be {OH}x{OW} for input {H}x{W} with kernel {KH}x{KW}, "
            f"stride {(SH, SW)}, padding {(PH, PW)}, dilation {(DH, DW)}; "
            "use a smaller kernel or dilation, or more padding")
    g = Geometry(N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW)
    if max(g) > _INT32_MAX:
        raise ValueError(f"{fn}: a size exceeds the int32 range of the kernel arguments: {g}")
    return g


def pool_geometry(fn, x_shape, kernel_size, stride=None, padding=0, dilation=1):
    """As ``conv_geometry``; ``stride=None`` means ``stride = kernel_size``."""
    return conv_geometry(fn, x_shape, kernel_size,
                         kernel_size if stride is None else stride, padding, dilation)


def launch_config(total, block=BLOCK_SIZE, max_blocks=MAX_BLOCKS):
    """``(grid, block)`` for ``total`` threads of work: enough blocks of
    ``block`` threads to give each element a thread, at most ``max_blocks``
    (the kernels' grid-stride loops handle the rest). ``total`` must be > 0."""
    if total <= 0:
        raise ValueError(f"launch_config: total must be positive, got {total}")
    grid = min((total + block - 1) // block, max_blocks)
    return (grid,), (block,)


# ---------------------------------------------------------------------------
# Launching
# ---------------------------------------------------------------------------

def _check_float(fn, argname, a):
    """An array of float32 or float64, or a clear TypeError."""
    dtype = getattr(a, "dtype", None)
    if dtype is None:
        raise TypeError(f"{fn}: {argname} must be a float32 or float64 array, got {type(a).__name__}")
    _float_dtype(fn, argname, dtype)


def _check_on_gpu(fn, argname, a):
    if not type(a).__module__.startswith("cupy"):
        raise TypeError(
            f"{fn}: {argname} must be a CuPy array on the GPU, got {type(a).__module__}."
            f"{type(a).__name__}; use the NumPy ops in minicnn.functional for CPU arrays")


def _check_shape(fn, argname, a, expected):
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{fn}: {argname} must have shape {tuple(expected)}, got {tuple(a.shape)}")


def _launch(name, dtype, total, arrays, values):
    """Run ``<name><float|double>`` with one thread per element of ``total``.

    ``arrays`` are passed first, then the ints named in ``KERNELS[name].ints``
    looked up in ``values`` (a dict), in that (= the C signature's) order.
    """
    spec = KERNELS[name]
    if len(arrays) != len(spec.arrays):
        raise RuntimeError(f"_launch({name}): expected {len(spec.arrays)} arrays, got {len(arrays)}")
    if total == 0:
        return                                   # empty tensor: nothing to do
    ints = tuple(np.int32(values[k]) for k in spec.ints)
    grid, block = launch_config(total)
    get_kernel(name, dtype)(grid, block, tuple(arrays) + ints)


def _empty(cp, shape, dtype):
    return cp.empty(tuple(int(s) for s in shape), dtype=dtype)


# ---------------------------------------------------------------------------
# im2col / col2im
# ---------------------------------------------------------------------------

def im2col_gpu(x, kernel_size, stride=1, padding=0, dilation=1):
    """GPU twin of ``functional.conv.im2col``.

    x: (N, C, H, W) float32/float64 CuPy array. Returns cols of shape
    ``(N*OH*OW, KH*KW*C)``, row ``(n*OH + oh)*OW + ow``, column
    ``(kh*KW + kw)*C + c``, value ``x[n, c, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW]``
    (0 in the padding). The kernel reads x channels-last (NHWC); when x is
    already channels-last in memory no copy is made.
    """
    fn = "im2col_gpu"
    _check_float(fn, "x", x)
    g = conv_geometry(fn, x.shape, kernel_size, stride, padding, dilation)
    _check_on_gpu(fn, "x", x)
    cp = _require_cupy(fn)
    x_nhwc = cp.ascontiguousarray(x.transpose(0, 2, 3, 1))
    cols = _empty(cp, (g.N * g.OH * g.OW, g.KH * g.KW * g.C), x.dtype)
    _launch("im2col", x.dtype, cols.size, (x_nhwc, cols), g._asdict())
    return cols


def col2im_gpu(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """GPU twin of ``functional.conv.col2im`` (the adjoint of im2col).

    cols: ``(N*OH*OW, KH*KW*C)``. Returns dx with ``x_shape`` (N, C, H, W):
    each pixel the sum of every cols entry that im2col read from it. The
    result is an (N, C, H, W) view of a channels-last (NHWC) buffer.
    """
    fn = "col2im_gpu"
    _check_float(fn, "cols", cols)
    g = conv_geometry(fn, x_shape, kernel_size, stride, padding, dilation)
    _check_shape(fn, "cols", cols, (g.N * g.OH * g.OW, g.KH * g.KW * g.C))
    _check_on_gpu(fn, "cols", cols)
    cp = _require_cupy(fn)
    cols = cp.ascontiguousarray(cols)
    dx_nhwc = _empty(cp, (g.N, g.H, g.W, g.C), cols.dtype)
    _launch("col2im", cols.dtype, dx_nhwc.size, (cols, dx_nhwc), g._asdict())
    return dx_nhwc.transpose(0, 3, 1, 2)


# ---------------------------------------------------------------------------
# Max pooling
# ---------------------------------------------------------------------------

def max_pool2d_forward_gpu(x, kernel_size, stride=None, padding=0, dilation=1):
    """GPU twin of ``functional.pooling.max_pool2d(..., return_indices=True)``.

    Returns ``(y, indices)``, both (N, C, OH, OW); indices int64, the flat
    position ``h*W + w`` of each window's maximum in the unpadded input plane
    (ties: first in scan order kh, kw). Padding acts as -inf.
    """
    fn = "max_pool2d_forward_gpu"
    _check_float(fn, "x", x)
    g = pool_geometry(fn, x.shape, kernel_size, stride, padding, dilation)
    _check_on_gpu(fn, "x", x)
    cp = _require_cupy(fn)
    x = cp.ascontiguousarray(x)
    y = _empty(cp, (g.N, g.C, g.OH, g.OW), x.dtype)
    indices = _empty(cp, y.shape, np.int64)
    _launch("max_pool2d_forward", x.dtype, y.size, (x, y, indices), g._asdict())
    return y, indices


def max_pool2d_backward_gpu(grad_out, indices, x_shape, kernel_size, stride=None,
                            padding=0, dilation=1):
    """Gradient of max pooling: ``dx[n, c, h, w]`` = sum of ``grad_out`` over
    the windows whose stored argmax is ``(h, w)``. Returns (N, C, H, W)."""
    fn = "max_pool2d_backward_gpu"
    _check_float(fn, "grad_out", grad_out)
    g = pool_geometry(fn, x_shape, kernel_size, stride, padding, dilation)
    out_shape = (g.N, g.C, g.OH, g.OW)
    _check_shape(fn, "grad_out", grad_out, out_shape)
    _check_shape(fn, "indices", indices, out_shape)
    if np.dtype(indices.dtype).kind not in "iu":
        raise TypeError(f"{fn}: indices must be an integer array, got {indices.dtype}")
    _check_on_gpu(fn, "grad_out", grad_out)
    _check_on_gpu(fn, "indices", indices)
    cp = _require_cupy(fn)
    grad_out = cp.ascontiguousarray(grad_out)
    indices = cp.ascontiguousarray(indices, dtype=np.int64)
    dx = _empty(cp, (g.N, g.C, g.H, g.W), grad_out.dtype)
    _launch("max_pool2d_backward", grad_out.dtype, dx.size, (grad_out, indices, dx), g._asdict())
    return dx


# ---------------------------------------------------------------------------
# Average pooling
# ---------------------------------------------------------------------------

def _avg_values(g, count_include_pad):
    values = g._asdict()
    values["count_include_pad"] = 1 if count_include_pad else 0
    return values


def avg_pool2d_forward_gpu(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """GPU twin of ``functional.pooling.avg_pool2d``: the window sum (padding
    counts as 0) divided by KH*KW (``count_include_pad=True``) or by the
    number of real, non-padding taps (False). Returns (N, C, OH, OW)."""
    fn = "avg_pool2d_forward_gpu"
    _check_float(fn, "x", x)
    g = pool_geometry(fn, x.shape, kernel_size, stride, padding)
    _check_on_gpu(fn, "x", x)
    cp = _require_cupy(fn)
    x = cp.ascontiguousarray(x)
    y = _empty(cp, (g.N, g.C, g.OH, g.OW), x.dtype)
    _launch("avg_pool2d_forward", x.dtype, y.size, (x, y), _avg_values(g, count_include_pad))
    return y


def avg_pool2d_backward_gpu(grad_out, x_shape, kernel_size, stride=None, padding=0,
                            count_include_pad=True):
    """Gradient of average pooling: ``dx[n, c, h, w]`` = sum over the windows
    covering ``(h, w)`` of ``grad_out / divisor``. Returns (N, C, H, W)."""
    fn = "avg_pool2d_backward_gpu"
    _check_float(fn, "grad_out", grad_out)
    g = pool_geometry(fn, x_shape, kernel_size, stride, padding)
    _check_shape(fn, "grad_out", grad_out, (g.N, g.C, g.OH, g.OW))
    _check_on_gpu(fn, "grad_out", grad_out)
    cp = _require_cupy(fn)
    grad_out = cp.ascontiguousarray(grad_out)
    dx = _empty(cp, (g.N, g.C, g.H, g.W), grad_out.dtype)
    _launch("avg_pool2d_backward", grad_out.dtype, dx.size, (grad_out, dx),
            _avg_values(g, count_include_pad))
    return dx

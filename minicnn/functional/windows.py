"""Sliding windows: the geometry and the strided views that convolution and pooling share.

A convolution or a pooling layer looks at windows of its input: window
(oh, ow) tap (kh, kw) reads input pixel

    (oh*sh - ph + kh*dh,  ow*sw - pw + kw*dw)        s: stride, p: padding, d: dilation

This module holds that geometry once (output sizes, argument checks), the
strided *view* of all windows (no copy), and the way back: adding one
value per window and tap onto the pixel it read (``add_tap``). ``conv.py``
builds im2col and col2im from these, ``pooling.py`` builds max and average
pooling. These helpers are public within the package (no underscore), so
sibling modules import them from here and nowhere else.

Channels-last (the one layout idea)
-----------------------------------
Tensors are NCHW in *shape* everywhere (the API, the tests, PyTorch), but
the conv and pooling ops compute on *channels-last* (N, H, W, C) arrays and
return their results as a free NCHW-shaped view of channels-last memory.
Why: a GEMM produces (pixel, channel) rows, which is channels-last memory,
and windows over channels-last memory copy runs of KW*C contiguous floats
rather than single floats. ``channels_last(x)`` is the only way in (free
when x already has that memory, one copy otherwise) and
``from_channels_last(y)`` the only way out (always a free view).
Correctness never depends on the layout: everything indexes through the
array's own strides.
"""
import numpy as np

from ..backend import get_array_module
from ..reference import output_size as conv_output_size   # floor((in + 2p - d(k-1) - 1) / s) + 1, written once
from ..speed import parallel_chunks
from ..utils import pair

__all__ = ["conv_output_size"]


def check_4d(x, fn, name="input"):
    """Raise a ValueError naming ``fn`` and ``name`` unless ``x`` is 4-D (N, C, H, W)."""
    if x.ndim != 4:
        raise ValueError(f"{fn}: {name} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")


def window_args(fn, kernel_size, stride, padding, dilation):
    """(kernel, stride, padding, dilation) as (height, width) pairs, checked (``utils.pair``), errors naming ``fn``."""
    return (pair(kernel_size, "kernel_size", fn), pair(stride, "stride", fn),
            pair(padding, "padding", fn, minimum=0), pair(dilation, "dilation", fn))


def gpu_kernels():
    """The raw CUDA kernels' wrappers (``minicnn.cuda``), imported only once data is on the GPU."""
    from .. import cuda
    return cuda


def output_hw(fn, x_shape, kernel, stride, padding, dilation):
    """(OH, OW) of a window op on an (N, C, H, W) input, or a clear error when the window does not fit."""
    H, W = x_shape[2], x_shape[3]
    OH = conv_output_size(H, kernel[0], stride[0], padding[0], dilation[0])
    OW = conv_output_size(W, kernel[1], stride[1], padding[1], dilation[1])
    if OH <= 0 or OW <= 0:
        eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        raise ValueError(
            f"{fn}: the kernel {kernel[0]}x{kernel[1]} (dilation {dilation}, effective {eff[0]}x{eff[1]}) "
            f"is larger than the padded input {H + 2 * padding[0]}x{W + 2 * padding[1]} "
            f"(input {H}x{W}, padding {padding}), so the output size would be {OH}x{OW}; "
            f"use a smaller kernel or dilation, or more padding")
    return OH, OW


def channels_last(x):
    """x (N, C, *spatial) as a C-contiguous (N, *spatial, C) array; free when x has channels-last memory."""
    if x.ndim == 2:
        return x
    perm = (0,) + tuple(range(2, x.ndim)) + (1,)
    return get_array_module(x).ascontiguousarray(x.transpose(perm))


def from_channels_last(y):
    """y (N, *spatial, C) as an (N, C, *spatial) view of the same memory (no copy)."""
    if y.ndim == 2:
        return y
    return y.transpose((0, y.ndim - 1) + tuple(range(1, y.ndim - 1)))


def padded_channels_last(x, padding, value=0.0):
    """x (N, C, H, W) as an (N, H + 2ph, W + 2pw, C) array, the border filled with ``value``.

    Without padding this is the free view ``x.transpose(0, 2, 3, 1)``. With
    padding, one buffer is allocated, filled with ``value`` and the interior
    assigned (cheaper than ``xp.pad``, which copies through several steps).
    """
    xp = get_array_module(x)
    xh = x.transpose(0, 2, 3, 1)
    ph, pw = padding
    if ph == 0 and pw == 0:
        return xh
    N, H, W, C = xh.shape
    buf = xp.full((N, H + 2 * ph, W + 2 * pw, C), value, dtype=x.dtype)
    buf[:, ph:ph + H, pw:pw + W, :] = xh
    return buf


def window_view(xh, kernel, out_hw, stride, dilation):
    """All windows of xh (N, Hp, Wp, C) as a (N, OH, OW, KH, KW, C) view (no copy).

    ``view[n, oh, ow, kh, kw, c] = xh[n, oh*sh + kh*dh, ow*sw + kw*dw, c]``: moving
    one step along oh moves ``stride`` rows in memory, one step along kh moves
    ``dilation`` rows, so both are just strides of the same memory.
    Windows overlap in memory: treat the view as read-only.
    """
    xp = get_array_module(xh)
    N, _, _, C = xh.shape
    sN, sH, sW, sC = xh.strides
    (KH, KW), (OH, OW) = kernel, out_hw
    return xp.lib.stride_tricks.as_strided(
        xh, shape=(N, OH, OW, KH, KW, C),
        strides=(sN, sH * stride[0], sW * stride[1], sH * dilation[0], sW * dilation[1], sC))


def valid_span(k, out_len, in_len, stride, pad, dil):
    """Which outputs' tap ``k`` lands inside the (unpadded) input along one axis.

    Output o reads input position ``o*stride - pad + k*dil``. Returns
    ``(o_start, o_stop, i_start)``: outputs o_start..o_stop-1 land inside,
    the first of them on input position i_start (empty when o_start >= o_stop).
    """
    offset = k * dil - pad
    o_start = max(0, -(offset // stride))          # ceil(-offset / stride)
    o_stop = min(out_len, (in_len - 1 - offset) // stride + 1)
    return o_start, o_stop, o_start * stride + offset


def add_tap(dx, values, tap, stride, padding, dilation):
    """dx[pixels read by kernel tap (kh, kw)] += values, skipping taps that fell in the padding.

    dx is (N, H, W, C); values is (N, OH, OW, C), one entry per window. Tap
    (kh, kw) of window (oh, ow) read pixel ``(oh*sh - ph + kh*dh, ow*sw - pw + kw*dw)``:
    over all windows a regular grid of pixels, so this is one strided
    slice-add (windows never read a pixel twice through the same tap).
    The images are split over the cores (``speed.parallel_chunks``).
    """
    N, H, W, C = dx.shape
    OH, OW = values.shape[1:3]
    oh0, oh1, h0 = valid_span(tap[0], OH, H, stride[0], padding[0], dilation[0])
    ow0, ow1, w0 = valid_span(tap[1], OW, W, stride[1], padding[1], dilation[1])
    if oh0 >= oh1 or ow0 >= ow1:
        return
    rows = slice(h0, h0 + (oh1 - oh0 - 1) * stride[0] + 1, stride[0])
    cols = slice(w0, w0 + (ow1 - ow0 - 1) * stride[1] + 1, stride[1])
    target, source = dx[:, rows, cols, :], values[:, oh0:oh1, ow0:ow1, :]

    def add(lo, hi):        # images lo..hi-1; the threads write disjoint images
        chunk = target[lo:hi]
        chunk += source[lo:hi]
    parallel_chunks(N, add, arrays_on_gpu=get_array_module(dx) is not np)


def sum_windows(windows6, in_hw, stride, padding, dilation):
    """The adjoint of ``window_view``: add windows6 (N, OH, OW, KH, KW, C) onto an (N, H, W, C) image.

    One strided slice-add per kernel tap (KH*KW of them, no loop over
    pixels), see ``add_tap``. Entries that fell in the padding are dropped.
    """
    xp = get_array_module(windows6)
    N, OH, OW, KH, KW, C = windows6.shape
    dx = xp.zeros((N, in_hw[0], in_hw[1], C), dtype=windows6.dtype)
    for kh in range(KH):
        for kw in range(KW):
            add_tap(dx, windows6[:, :, :, kh, kw, :], (kh, kw), stride, padding, dilation)
    return dx

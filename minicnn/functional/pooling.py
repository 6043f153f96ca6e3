"""Pooling: ``max_pool2d`` (argmax stored), ``avg_pool2d``, ``adaptive_avg_pool2d``.

A pooling layer reduces each window of its input to one number. The window
geometry and the strided views are ``windows.py``'s (the same as a
convolution's): a window op here is a loop over the KH*KW kernel taps,
each tap a strided (N, OH, OW, C) view of the (padded, channels-last)
input. The loop definitions are ``minicnn.reference.max_pool2d`` and
``minicnn.reference.avg_pool2d``.
"""
import functools

import numpy as np

from ..autograd import Function
from ..backend import get_array_module
from ..speed import assign_increasing, row_blocks
from ..utils import pair
from .implementations import replacement
from .windows import (add_tap, channels_last, check_4d, from_channels_last, gpu_kernels, output_hw,
                      padded_channels_last, sum_windows, valid_span, window_view)

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]


def pool_args(fn, x, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    """Validated (kernel, stride, padding, dilation, (OH, OW)); stride defaults to the kernel size."""
    check_4d(x, fn)
    if x.dtype.kind != "f":
        raise TypeError(f"{fn}: input must be floating (float32/float64), got dtype {x.dtype}; "
                        f"convert images with ToFloat() or .astype(np.float32) first")
    kernel = pair(kernel_size, "kernel_size", fn)
    stride = kernel if stride is None else pair(stride, "stride", fn)
    padding = pair(padding, "padding", fn, minimum=0)
    dilation = pair(dilation, "dilation", fn)
    if ceil_mode:
        raise ValueError(f"{fn}: ceil_mode=True is not supported; the output size is always rounded down")
    for p, k in zip(padding, kernel):
        if p > k // 2:   # PyTorch's rule: else a window could lie entirely in the padding
            raise ValueError(f"{fn}: padding {padding} must be at most half the kernel size {kernel} "
                             f"(padding <= kernel_size // 2 in each dimension)")
    out_hw = output_hw(fn, x.shape, kernel, stride, padding, dilation)
    return kernel, stride, padding, dilation, out_hw


# --------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------
class MaxPool2d(Function):
    """y[n, c, i, j] = max over the window of x[n, c, i*sh - ph + kh*dh, j*sw - pw + kw*dw] (padding = -inf).

    Forward keeps ``indices``: for each window, the flat position h*W + w of
    its maximum in the (unpadded) input plane, the first one in scan order
    (kh, kw) on ties. That is PyTorch's ``return_indices`` and what the CUDA
    kernel (kernels/pooling.cu) stores: one representation on both devices.
    Backward routes each gradient to exactly that input:

        dx[n, c, h, w] = sum of g[n, c, i, j] over the windows (i, j) whose index is h*W + w

    (a sum only where windows overlap, stride < kernel). Ties are not
    split: one input gets the whole gradient, like PyTorch.

    Special windows, as in PyTorch: a window holding a NaN outputs NaN and
    its index is its last NaN; a window whose real inputs are all -inf
    outputs -inf and its index is its first real input (padding is never
    chosen); a window wholly in the padding gets index -1 and no gradient.
    The loop definition is ``minicnn.reference.max_pool2d``.
    """

    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), dilation=(1, 1), out_hw=None,
                return_indices=False):
        xp = get_array_module(x)
        self.geometry = (x.shape, kernel, stride, padding, dilation)
        if xp is not np:    # on the GPU: kernels/pooling.cu, one thread per output, same indices
            y, self.indices = gpu_kernels().max_pool2d_forward_gpu(xp.ascontiguousarray(x), kernel, stride,
                                                          padding, dilation)
            return (y, self.indices) if return_indices else y
        taps = window_taps(x, self.geometry, out_hw)       # taps[k]: tap k of every window, (N, OH, OW, C)
        origin, offsets = index_grid(self.geometry, out_hw)  # tap k of window (i, j) reads origin[i, j] + offsets[k]
        y = np.empty(taps[0].shape, dtype=x.dtype)        # running max over the taps, in scan order
        at = np.zeros(y.shape, dtype=np.int8 if offsets[-1] < 128 else offsets.dtype)   # offsets[k] of y's tap

        def images(lo, hi):                                # images lo..hi-1, while they are in the cache
            y_, at_ = y[lo:hi], at[lo:hi]
            y_[...] = taps[0][lo:hi]
            for k in range(1, len(taps)):
                assign_increasing(at_, offsets[k], taps[k][lo:hi] > y_)   # at[tap k > y] = offsets[k]: ties keep the first
                np.maximum(y_, taps[k][lo:hi], out=y_)     # (a NaN propagates into y, not into at)
        row_blocks(y.shape[0], x[:1].nbytes, images)       # blocks of images, split over the cores
        special = not np.isfinite(y.min(initial=0.0))     # some window holds a NaN or is all -inf
        if special:                                        # a window with a NaN: its last NaN wins
            has_nan = np.isnan(y)
            for k, tap in enumerate(taps):
                np.copyto(at, offsets[k], where=has_nan & np.isnan(tap))
        idx = origin + at                                  # flat index h*W + w of the maximum
        if special:                                        # all real inputs -inf: the first real one
            np.copyto(idx, first_real_input(self.geometry, out_hw), where=y == -np.inf)
        self.indices = from_channels_last(idx)             # (N, C, OH, OW), as on the GPU
        y = from_channels_last(y)
        return (y, self.indices.astype(np.int64)) if return_indices else y

    def backward(self, g, g_indices=None):
        xp = get_array_module(g)
        (N, C, H, W), kernel, stride, padding, dilation = self.geometry
        if xp is not np:    # the GPU kernel: one thread per input pixel gathers its gradients
            return gpu_kernels().max_pool2d_backward_gpu(xp.ascontiguousarray(g), self.indices, (N, C, H, W),
                                                kernel, stride, padding, dilation)
        g, idx = channels_last(g), channels_last(self.indices)      # (N, OH, OW, C)
        origin, offsets = index_grid(self.geometry, g.shape[1:3])
        if windows_are_disjoint(self.geometry):     # each pixel in one window at most: written once, not added
            (OH, OW), (KH, KW) = g.shape[1:3], kernel
            dx = np.empty((N, H, W, C), dtype=g.dtype)

            def images(lo, hi):                           # images lo..hi-1, while their dx is in the cache
                dx[lo:hi, OH * KH:] = 0                   # the last rows and columns no window reaches
                dx[lo:hi, :, OW * KW:] = 0                # (none when the windows tile the input)
                for k in range(KH * KW):                  # tap (a, b) of every window: a strided view of dx
                    a, b = divmod(k, KW)
                    np.multiply(g[lo:hi], idx[lo:hi] == origin + offsets[k],
                                out=dx[lo:hi, a:OH * KH:KH, b:OW * KW:KW, :])
            row_blocks(N, dx[:1].nbytes, images)          # blocks of images, split over the cores
            return from_channels_last(dx)
        dx = np.zeros((N, H, W, C), dtype=g.dtype)          # tap k sends g where the max is tap k's pixel
        for k in range(kernel[0] * kernel[1]):
            add_tap(dx, g * (idx == origin + offsets[k]), divmod(k, kernel[1]), stride, padding, dilation)
        return from_channels_last(dx)


def windows_are_disjoint(geometry):
    """Whether no two windows share a pixel: stride = kernel, no padding, no dilation (2x2 stride 2, the classic)."""
    _, kernel, stride, padding, dilation = geometry
    return kernel == stride and padding == (0, 0) and dilation == (1, 1)


def window_taps(x, geometry, out_hw):
    """taps[k]: the (N, OH, OW, C) view of tap k = kh*KW + kw of every window of x (padding reads -inf)."""
    _, (KH, KW), stride, padding, dilation = geometry
    windows = window_view(padded_channels_last(x, padding, value=-np.inf), (KH, KW), out_hw, stride, dilation)
    return [windows[:, :, :, kh, kw, :] for kh in range(KH) for kw in range(KW)]


@functools.lru_cache(maxsize=64)
def index_grid(geometry, out_hw):
    """Flat input index of tap k of window (i, j) = origin[i, j] + offsets[k]; returns (origin, offsets).

    origin = (i*sh - ph)*W + (j*sw - pw), an (1, OH, OW, C) array; offsets[k]
    = kh*dh*W + kw*dw >= 0. (Meaningless for a tap in the padding, which is
    never a window's maximum.) Along the scan order the offsets of a
    window's real taps grow (their pixels are read row by row, left to
    right), which is what max pooling's scan relies on. The dtype is the
    smallest that holds every index (int16 for CIFAR): the indices are the
    largest array max pooling keeps (int64 when returned). Memoised per
    geometry: treat as read-only.
    """
    (N, C, H, W), (KH, KW), stride, padding, dilation = geometry
    reach = (H + padding[0] + KH * dilation[0]) * (W + padding[1] + KW * dilation[1])   # > every |index|
    dtype = np.int16 if reach < 2 ** 15 else np.int32 if reach < 2 ** 31 else np.int64
    rows = np.arange(out_hw[0]).reshape(-1, 1, 1) * stride[0] - padding[0]
    cols = np.arange(out_hw[1]).reshape(1, -1, 1) * stride[1] - padding[1]
    origin = np.broadcast_to(rows * W + cols, (*out_hw, C)).astype(dtype)[None]
    offsets = np.array([kh * dilation[0] * W + kw * dilation[1] for kh in range(KH) for kw in range(KW)], dtype)
    return origin, offsets


def first_real_input(geometry, out_hw):
    """(1, OH, OW, 1) flat index h*W + w of each window's first tap inside the input (-1: none)."""
    (N, C, H, W), kernel, stride, padding, dilation = geometry
    first = []                                   # per axis: the first real row (column) of each window
    for o, size, k, s, p, d in zip(out_hw, (H, W), kernel, stride, padding, dilation):
        start = np.arange(o) * s - p             # the window's first tap, maybe in the padding
        skip = np.maximum(0, -(start // d))      # taps to skip to get inside: ceil(-start / d)
        first.append(np.where((skip < k) & (start + skip * d < size), start + skip * d, -1))
    h, w = first[0].reshape(-1, 1), first[1].reshape(1, -1)
    return np.where((h >= 0) & (w >= 0), h * W + w, -1).reshape(1, *out_hw, 1)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max pooling over (KH, KW) windows of x (N, C, H, W), as ``torch.nn.functional.max_pool2d``.

    ``stride`` defaults to ``kernel_size``; padding (at most half the kernel)
    reads as -inf. Returns y (N, C, OH, OW), or (y, indices) with
    ``return_indices=True`` (int64 flat indices h*W + w into each input
    plane, no gradient). ``ceil_mode`` must stay False. See ``MaxPool2d``.
    """
    if (replaced := replacement("max_pool2d")) is not None:
        return replaced(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
    kernel, stride, padding, dilation, out_hw = pool_args(
        "max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)
    return MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                           out_hw=out_hw, return_indices=bool(return_indices))


# --------------------------------------------------------------------------
# average pooling
# --------------------------------------------------------------------------
def _window_counts(xp, in_hw, kernel, stride, padding, out_hw):
    """How many taps of each window lie inside the unpadded input, shape (1, OH, OW, 1)."""
    counts = []
    for axis in (0, 1):
        per_out = np.zeros(out_hw[axis], dtype=np.int64)
        for k in range(kernel[axis]):
            o0, o1, _ = valid_span(k, out_hw[axis], in_hw[axis], stride[axis], padding[axis], 1)
            per_out[o0:o1] += 1
        counts.append(per_out)
    return xp.asarray(np.outer(counts[0], counts[1]).reshape(1, out_hw[0], out_hw[1], 1))


class AvgPool2d(Function):
    """y[n, c, i, j] = (1/d) * sum over the window of x (padding = 0).

    d = KH*KW (``count_include_pad=True``), or the number of window taps
    inside the unpadded input (``False``), or ``divisor_override``.
    Each input in a window contributed 1/d of it, so

        dx[n, c, h, w] = sum over the windows (i, j) containing (h, w) of g[n, c, i, j] / d[i, j]

    which is col2im applied to g / d repeated for every tap (a broadcast view,
    nothing copied). The loop definition is ``minicnn.reference.avg_pool2d``.
    """

    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), out_hw=None, count_include_pad=True,
                divisor_override=None):
        xp = get_array_module(x)
        H, W = x.shape[2:]
        self.x_shape, self.kernel, self.stride, self.padding = x.shape, kernel, stride, padding
        self.count_include_pad = count_include_pad
        self.gpu_kernel = xp is not np and divisor_override is None
        if self.gpu_kernel:    # the GPU kernel in kernels/pooling.cu
            return gpu_kernels().avg_pool2d_forward_gpu(xp.ascontiguousarray(x), kernel, stride, padding,
                                                  count_include_pad)
        windows = window_view(padded_channels_last(x, padding), kernel, out_hw, stride, (1, 1))
        y = xp.array(windows[:, :, :, 0, 0, :], copy=True)
        for a in range(kernel[0]):
            for b in range(kernel[1]):
                if a or b:
                    y += windows[:, :, :, a, b, :]
        if divisor_override is not None:
            divisor = divisor_override
        elif count_include_pad or padding == (0, 0):
            divisor = kernel[0] * kernel[1]
        else:
            divisor = _window_counts(xp, (H, W), kernel, stride, padding, out_hw).astype(x.dtype)
        y /= divisor
        self.divisor, self.geometry = divisor, ((H, W), kernel, stride, padding)
        return from_channels_last(y)

    def backward(self, g):
        xp = get_array_module(g)
        if self.gpu_kernel:
            return gpu_kernels().avg_pool2d_backward_gpu(xp.ascontiguousarray(g), self.x_shape, self.kernel,
                                                   self.stride, self.padding, self.count_include_pad)
        in_hw, kernel, stride, padding = self.geometry
        g_share = channels_last(g) / self.divisor                     # (N, OH, OW, C)
        N, OH, OW, C = g_share.shape
        cols6 = xp.broadcast_to(g_share[:, :, :, None, None, :], (N, OH, OW, kernel[0], kernel[1], C))
        return from_channels_last(sum_windows(cols6, in_hw, stride, padding, (1, 1)))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Average pooling over (KH, KW) windows of x (N, C, H, W), as ``torch.nn.functional.avg_pool2d``.

    ``stride`` defaults to ``kernel_size``; padding (at most half the kernel)
    counts as zeros, and also in the divisor unless ``count_include_pad=False``.
    ``ceil_mode`` must stay False. See ``AvgPool2d``.
    """
    if (replaced := replacement("avg_pool2d")) is not None:
        return replaced(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    kernel, stride, padding, _, out_hw = pool_args("avg_pool2d", x, kernel_size, stride, padding,
                                                     ceil_mode=ceil_mode)
    if divisor_override is not None and (isinstance(divisor_override, bool) or divisor_override <= 0):
        raise ValueError(f"avg_pool2d: divisor_override must be a positive number, got {divisor_override!r}")
    return AvgPool2d.apply(x, kernel=kernel, stride=stride, padding=padding, out_hw=out_hw,
                           count_include_pad=bool(count_include_pad), divisor_override=divisor_override)


class GlobalAvgPool2d(Function):
    """y[n, c, 0, 0] = mean of x[n, c] over H and W.   dL/dx = g / (H*W), the same for every pixel."""

    def forward(self, x):
        self.shape = x.shape
        return x.mean(axis=(2, 3), keepdims=True)

    def backward(self, g):
        xp = get_array_module(g)
        H, W = self.shape[2:]
        return xp.broadcast_to(g / (H * W), self.shape)


def adaptive_avg_pool2d(x, output_size):
    """Average-pool x (N, C, H, W) to ``output_size`` (an int or (OH, OW); None keeps that size).

    ``output_size`` 1 is global average pooling (the head of a ResNet). Other
    sizes must divide the input size, and then equal ``avg_pool2d`` with
    kernel = stride = (H // OH, W // OW); PyTorch's uneven windows for sizes
    that do not divide are not supported (a clear error says so).
    """
    check_4d(x, "adaptive_avg_pool2d")
    H, W = x.shape[2:]
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(sizes) != 2:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got {output_size!r}")
    sizes = (H if sizes[0] is None else sizes[0], W if sizes[1] is None else sizes[1])
    oh, ow = pair(sizes, "output_size", "adaptive_avg_pool2d")
    if (oh, ow) == (1, 1):
        return GlobalAvgPool2d.apply(x)
    if H % oh or W % ow:
        raise ValueError(
            f"adaptive_avg_pool2d: output_size ({oh}, {ow}) must divide the input size ({H}, {W}); "
            f"uneven adaptive windows are not supported")
    return avg_pool2d(x, (H // oh, W // ow))

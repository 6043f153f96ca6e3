"""Pooling: ``max_pool2d`` (argmax stored), ``avg_pool2d``, ``adaptive_avg_pool2d``.

All three reuse the strided-window machinery of ``conv``: a window op is a
loop over the KH*KW kernel taps, each tap a strided (N, OH, OW, C) view of
the (padded, channels-last) input. As in ``conv``, results are NCHW in
shape with channels-last memory (see the note at the top of ``conv.py``).
"""
import numpy as np

from ..autograd import Function
from ..backend import get_array_module
from .conv import _add_tap, _check_4d, _cuda, _col2im_nhwc, _nhwc_padded, _output_hw, _pair, _valid_span, _window_view

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]


def _pool_args(fn, x, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    """Validated (kernel, stride, padding, dilation, (OH, OW)); stride defaults to the kernel size."""
    _check_4d(x, fn)
    if x.dtype.kind != "f":
        raise TypeError(f"{fn}: input must be floating (float32/float64), got dtype {x.dtype}; "
                        f"convert images with ToFloat() or .astype(np.float32) first")
    kernel = _pair(kernel_size, "kernel_size", fn)
    stride = kernel if stride is None else _pair(stride, "stride", fn)
    padding = _pair(padding, "padding", fn, minimum=0)
    dilation = _pair(dilation, "dilation", fn)
    if ceil_mode:
        raise ValueError(f"{fn}: ceil_mode=True is not supported; the output size is always rounded down")
    for p, k in zip(padding, kernel):
        if p > k // 2:   # PyTorch's rule: else a window could lie entirely in the padding
            raise ValueError(f"{fn}: padding {padding} must be at most half the kernel size {kernel} "
                             f"(padding <= kernel_size // 2 in each dimension)")
    out_hw = _output_hw(fn, x.shape, kernel, stride, padding, dilation)
    return kernel, stride, padding, dilation, out_hw


def _nhwc(x):
    """x (N, C, H, W) as a C-contiguous (N, H, W, C) array: free for channels-last memory."""
    return get_array_module(x).ascontiguousarray(x.transpose(0, 2, 3, 1))


# --------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------
class MaxPool2d(Function):
    """y[n, c, i, j] = max over the window of x[n, c, i*sh - ph + kh*dh, j*sw - pw + kw*dw] (padding = -inf).

    Forward keeps ``arg``, the tap k = kh*KW + kw of each window's maximum
    (the first one in scan order on ties). Backward routes each gradient to
    exactly that input:

        dx[n, c, h, w] = sum of g[n, c, i, j] over the windows (i, j) whose argmax is (h, w)

    (the sum only matters when windows overlap, stride < kernel). Ties are
    not split: one input gets the whole gradient, like PyTorch.

    Fast path (kernel 2, stride 2, no padding/dilation, even H and W, the
    classic CNN downsampling): windows do not overlap, so on channels-last
    memory x is free to ``reshape`` to (N, H/2, 2, W/2, 2, C) and the
    backward writes each tap's slice once, with no zero-fill and no adding.

    NaN, as in PyTorch: a window holding a NaN outputs NaN and its argmax is
    its last NaN in scan order (the CUDA kernel does the same). Fixed up
    after the scan, and only when the output holds a NaN at all, so the
    usual case pays one ``min`` over y.

    (A window that lies wholly in the padding, possible only with dilation,
    gives -inf and passes no gradient. A window whose real inputs are all
    -inf may keep a padding tap as its argmax, where PyTorch and the kernel
    pick the first real one; either way its gradient is 0 * g.)

    With ``return_indices`` the op also returns, like PyTorch, the int64
    flat index h*W + w of each maximum in its (unpadded) input plane,
    shape (N, C, OH, OW).
    """

    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), dilation=(1, 1), out_hw=None,
                return_indices=False):
        xp = get_array_module(x)
        N, C, H, W = x.shape
        (KH, KW), (OH, OW) = kernel, out_hw
        self.geometry = (x.shape, kernel, stride, padding, dilation)
        if xp is not np:
            # On the GPU: kernels/pooling.cu, one thread per output, argmax kept as
            # the flat index h*W + w (what return_indices gives anyway).
            y, self.indices = _cuda().max_pool2d_forward_gpu(xp.ascontiguousarray(x), kernel, stride,
                                                             padding, dilation)
            return (y, self.indices) if return_indices else y
        self.fast = (kernel == (2, 2) and stride == (2, 2) and padding == (0, 0)
                     and dilation == (1, 1) and H % 2 == 0 and W % 2 == 0)
        if self.fast:
            x6 = _nhwc(x).reshape(N, OH, 2, OW, 2, C)
            taps = [x6[:, :, a, :, b, :] for a in (0, 1) for b in (0, 1)]
        else:
            windows = _window_view(_nhwc_padded(x, padding, value=-np.inf), kernel, out_hw, stride, dilation)
            taps = [windows[:, :, :, a, b, :] for a in range(KH) for b in range(KW)]

        # Running max over the taps in scan order; a later tap takes over only if
        # strictly greater, so on ties the first one keeps the argmax.
        y = xp.array(taps[0], copy=True)
        arg = xp.zeros(y.shape, dtype=np.int8 if len(taps) <= 127 else np.int32)
        for k in range(1, len(taps)):
            better = taps[k] > y
            # arg[better] = k, written branch-free (a masked assignment is ~50x slower here):
            # k exceeds every index stored so far, so max(arg, k * better) sets exactly those.
            xp.maximum(arg, better * arg.dtype.type(k), out=arg)
            xp.maximum(y, taps[k], out=y)          # (a NaN propagates into y, not into arg)
        if y.size and xp.isnan(y.min()):           # some window holds a NaN: its last NaN is the argmax
            has_nan = xp.isnan(y)
            for k, tap in enumerate(taps):
                arg[has_nan & xp.isnan(tap)] = k
        self.arg = arg
        y = y.transpose(0, 3, 1, 2)
        if not return_indices:
            return y
        # Flat index h*W + w of the max in the unpadded input plane (PyTorch's convention).
        kh, kw = xp.divmod(arg.astype(np.int64), KW)
        h = xp.arange(OH, dtype=np.int64).reshape(1, OH, 1, 1) * stride[0] - padding[0] + kh * dilation[0]
        w = xp.arange(OW, dtype=np.int64).reshape(1, 1, OW, 1) * stride[1] - padding[1] + kw * dilation[1]
        return y, (h * W + w).transpose(0, 3, 1, 2)

    def backward(self, g, g_indices=None):
        xp = get_array_module(g)
        (N, C, H, W), (KH, KW), stride, padding, dilation = self.geometry
        if xp is not np:    # the GPU kernel: one thread per input pixel gathers its gradients
            return _cuda().max_pool2d_backward_gpu(xp.ascontiguousarray(g), self.indices, (N, C, H, W),
                                                   (KH, KW), stride, padding, dilation)
        gh = _nhwc(g)                       # (N, OH, OW, C)
        arg = self.arg
        if self.fast:
            OH, OW = H // 2, W // 2
            dx6 = xp.empty((N, OH, 2, OW, 2, C), dtype=g.dtype)
            for k, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
                xp.multiply(gh, arg == k, out=dx6[:, :, a, :, b, :])
            return dx6.reshape(N, H, W, C).transpose(0, 3, 1, 2)
        # General path: tap k of window (i, j) sends g * [arg == k] to the pixel it read,
        # one strided slice-add per tap, as in col2im.
        dx = xp.zeros((N, H, W, C), dtype=g.dtype)
        for a in range(KH):
            for b in range(KW):
                _add_tap(dx, gh * (arg == a * KW + b), (a, b), stride, padding, dilation)
        return dx.transpose(0, 3, 1, 2)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max pooling over (KH, KW) windows of x (N, C, H, W), as ``torch.nn.functional.max_pool2d``.

    ``stride`` defaults to ``kernel_size``; padding (at most half the kernel)
    reads as -inf. Returns y (N, C, OH, OW), or (y, indices) with
    ``return_indices=True`` (int64 flat indices h*W + w into each input
    plane, no gradient). ``ceil_mode`` must stay False. See ``MaxPool2d``.
    """
    kernel, stride, padding, dilation, out_hw = _pool_args(
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
            o0, o1, _ = _valid_span(k, out_hw[axis], in_hw[axis], stride[axis], padding[axis], 1)
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
    nothing copied).
    """

    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), out_hw=None, count_include_pad=True,
                divisor_override=None):
        xp = get_array_module(x)
        H, W = x.shape[2:]
        self.x_shape, self.kernel, self.stride, self.padding = x.shape, kernel, stride, padding
        self.count_include_pad = count_include_pad
        self.gpu_kernel = xp is not np and divisor_override is None
        if self.gpu_kernel:    # the GPU kernel in kernels/pooling.cu
            return _cuda().avg_pool2d_forward_gpu(xp.ascontiguousarray(x), kernel, stride, padding,
                                                  count_include_pad)
        windows = _window_view(_nhwc_padded(x, padding), kernel, out_hw, stride, (1, 1))
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
        return y.transpose(0, 3, 1, 2)

    def backward(self, g):
        xp = get_array_module(g)
        if self.gpu_kernel:
            return _cuda().avg_pool2d_backward_gpu(xp.ascontiguousarray(g), self.x_shape, self.kernel,
                                                   self.stride, self.padding, self.count_include_pad)
        in_hw, kernel, stride, padding = self.geometry
        g_share = _nhwc(g) / self.divisor                     # (N, OH, OW, C)
        N, OH, OW, C = g_share.shape
        cols6 = xp.broadcast_to(g_share[:, :, :, None, None, :], (N, OH, OW, kernel[0], kernel[1], C))
        return _col2im_nhwc(cols6, in_hw, stride, padding, (1, 1)).transpose(0, 3, 1, 2)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Average pooling over (KH, KW) windows of x (N, C, H, W), as ``torch.nn.functional.avg_pool2d``.

    ``stride`` defaults to ``kernel_size``; padding (at most half the kernel)
    counts as zeros, and also in the divisor unless ``count_include_pad=False``.
    ``ceil_mode`` must stay False. See ``AvgPool2d``.
    """
    kernel, stride, padding, _, out_hw = _pool_args("avg_pool2d", x, kernel_size, stride, padding,
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
    _check_4d(x, "adaptive_avg_pool2d")
    H, W = x.shape[2:]
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(sizes) != 2:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got {output_size!r}")
    sizes = (H if sizes[0] is None else sizes[0], W if sizes[1] is None else sizes[1])
    oh, ow = _pair(sizes, "output_size", "adaptive_avg_pool2d")
    if (oh, ow) == (1, 1):
        return GlobalAvgPool2d.apply(x)
    if H % oh or W % ow:
        raise ValueError(
            f"adaptive_avg_pool2d: output_size ({oh}, {ow}) must divide the input size ({H}, {W}); "
            f"uneven adaptive windows are not supported")
    return avg_pool2d(x, (H // oh, W // ow))
